"""Search over drop sets: greedy (paper) and beam (backtracking)."""

from layershear.search.beam import beam_search, rank_key
from layershear.search.greedy import GreedyPruner, check_ratio, num_blocks_to_drop
from layershear.search.result import SearchResult, SearchStep

__all__ = ["GreedyPruner", "SearchResult", "SearchStep", "beam_search", "check_ratio", "num_blocks_to_drop", "rank_key"]
