"""Search stage: which blocks to remove. Greedy and beam over the Scorer's accuracies, or ranking by a
baseline metric."""

from layershear.search.beam import beam_plan, beam_search, rank_key
from layershear.search.count import check_count, check_request, num_to_remove
from layershear.search.greedy import GreedyPruner
from layershear.search.result import SearchResult, SearchStep

__all__ = ["GreedyPruner", "SearchResult", "SearchStep", "beam_plan", "beam_search", "check_count", "check_request",
           "num_to_remove", "rank_key"]
