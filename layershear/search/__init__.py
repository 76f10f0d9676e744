"""Search stage: which blocks to remove. Greedy, beam, A*-style best-first and evolutionary search over
the Scorer's accuracies, or ranking by a baseline metric."""

from layershear.search.astar import AStarSettings, astar_search
from layershear.search.beam import beam_plan, beam_search, rank_key
from layershear.search.budget import SearchBudget, Spent, parse_budget
from layershear.search.count import check_count, check_request, num_to_remove
from layershear.search.evolve import EvolveSettings, evolve
from layershear.search.greedy import SEARCHES, GreedyPruner
from layershear.search.objective import Objective
from layershear.search.result import SearchCost, SearchResult, SearchStep, Swap

__all__ = ["SEARCHES", "AStarSettings", "EvolveSettings", "GreedyPruner", "Objective", "SearchBudget", "SearchCost",
           "SearchResult", "SearchStep", "Spent", "Swap", "astar_search", "beam_plan", "beam_search", "check_count",
           "check_request", "evolve", "num_to_remove", "parse_budget", "rank_key"]
