"""A*-style and evolutionary search on synthetic evaluators where greedy is sub-optimal: optimality,
budgets, determinism; and the search budget parser."""

from __future__ import annotations

import itertools
import random

import pytest

from layershear.errors import LayershearError
from layershear.scoring.accuracy import ModelAccuracy
from layershear.search import AStarSettings, EvolveSettings, Objective, SearchBudget, Spent, astar_search, beam_search, evolve, parse_budget

R = 0.25          # random accuracy of the synthetic calibration set
DOCS = 400        # documents of the synthetic calibration set (correctness vectors)


def _acc(removed: frozenset[int], acc: float, docs: int = DOCS, exact: bool = True) -> ModelAccuracy:
    hits = round(acc * docs)
    return ModelAccuracy(removed=removed, accuracy=hits / docs, random=R, gold_prob=hits / docs,
                         accuracy_by_task={"t": hits / docs}, random_by_task={"t": R},
                         correct=tuple(i < hits for i in range(docs)), exact=exact)


class Synthetic:
    """An objective from ``value(removed) -> accuracy``, counting evaluations. ``select`` (staged
    selection) scores every candidate exactly and returns the best ``stages[-1][1]`` as exact, the
    others as estimates, as :meth:`layershear.scoring.scorer.Scorer.select` does."""

    def __init__(self, num_blocks: int, value):
        self.num_blocks, self.value = num_blocks, value
        self.memo: dict[frozenset[int], ModelAccuracy] = {}
        self.estimates: dict[frozenset[int], ModelAccuracy] = {}
        self.anchored: list[frozenset[int]] = []

    def accuracy(self, removed) -> ModelAccuracy:
        key = frozenset(removed)
        if key not in self.memo:
            self.memo[key] = _acc(key, self.value(key))
        return self.memo[key]

    def select(self, candidates, *, stages, reference=None):
        scored = {frozenset(c): _acc(frozenset(c), self.value(frozenset(c))) for c in candidates}
        best = sorted(scored, key=lambda r: scored[r].rank_key)[: stages[-1][1]]
        out = {}
        for r, acc in scored.items():
            if r in best:
                out[r] = self.accuracy(r)
            else:
                out[r] = self.estimates[r] = _acc(r, acc.accuracy, exact=False)
        return out

    def objective(self) -> Objective:
        return Objective(num_blocks=self.num_blocks, accuracy=self.accuracy,
                         children=lambda parent, blocks: {b: self.accuracy(parent | {b}) for b in blocks},
                         spent=lambda: Spent(len(self.memo) + len(self.estimates), 0), select=self.select,
                         anchor=self.anchored.append, estimate=lambda r: self.memo.get(r) or self.estimates.get(r))


def redundant_pair(removed: frozenset[int]) -> float:
    """Blocks 1 and 2 stand in for each other: removing both costs almost nothing more than one, while
    block 0 is the cheapest single removal; greedy takes 0 first and never recovers."""
    single = {0: 0.10, 1: 0.15, 2: 0.15, 3: 0.40, 4: 0.45, 5: 0.50}
    loss = sum(single[b] for b in removed)
    if {1, 2} <= removed:
        loss -= 0.14
    if 0 in removed and len(removed) > 1:
        loss += 0.10
    return 0.95 - loss


def brute_force(num_blocks: int, k: int, value) -> float:
    return max(value(frozenset(c)) for c in itertools.combinations(range(num_blocks), k))


def test_greedy_is_suboptimal_and_astar_and_evolve_find_the_optimum():
    best = brute_force(6, 2, redundant_pair)
    greedy = beam_search(Synthetic(6, redundant_pair).accuracy, num_blocks=6, num_remove=2)
    assert greedy.removed[0] == 0 and greedy.final.accuracy < best - 0.05
    found = astar_search(Synthetic(6, redundant_pair).objective(), num_remove=2)
    assert set(found.removed) == {1, 2} and found.final.accuracy == pytest.approx(best, abs=1 / DOCS)
    assert found.strategy == "astar" and [s.chosen.block_idx for s in found.steps] == list(found.removed)
    syn = Synthetic(6, redundant_pair)
    start = beam_search(syn.accuracy, num_blocks=6, num_remove=2)
    refined = evolve(syn.objective(), start, settings=EvolveSettings(offspring=8, seed=0))
    assert set(refined.removed) == {1, 2} and refined.final.accuracy == pytest.approx(best, abs=1 / DOCS)
    assert refined.strategy == "evolve" and refined.steps == start.steps and refined.refinements
    move = refined.refinements[0]
    assert move.before.removed == start.final.removed and move.after.accuracy > move.before.accuracy
    assert syn.anchored[0] == start.final.removed          # offspring start from the current best set's inputs


def _supermodular(seed: int, n: int):
    """Accuracy = 0.95 - sum of block costs - positive pair interactions: removal never helps and drops
    never shrink, the assumptions under which the clipped (admissible) estimate is an upper bound."""
    rng = random.Random(seed)
    cost = [rng.uniform(0.0, 0.05) for _ in range(n)]
    pair = {frozenset(p): rng.choice([0.0, rng.uniform(0, 0.08)]) for p in itertools.combinations(range(n), 2)}

    def value(removed: frozenset[int]) -> float:
        return 0.95 - sum(cost[b] for b in removed) - sum(v for p, v in pair.items() if p <= removed)
    return value


def test_admissible_astar_is_optimal_on_many_instances_where_greedy_is_not():
    n, k, worse = 7, 3, 0
    for seed in range(40):
        value = _supermodular(seed, n)
        best = brute_force(n, k, value)
        greedy = beam_search(Synthetic(n, value).accuracy, num_blocks=n, num_remove=k)
        worse += greedy.final.accuracy < best - 1.5 / DOCS
        found = astar_search(Synthetic(n, value).objective(), num_remove=k, settings=AStarSettings(admissible=True))
        assert found.final.accuracy == pytest.approx(best, abs=1.01 / DOCS), seed   # correctness vectors round
        assert len(found.removed) == k and not found.completed
    assert worse >= 5        # the instances do defeat greedy


def test_budgets_are_respected_and_results_are_deterministic():
    n, k = 8, 3
    value = _supermodular(3, n)
    runs = []
    for _ in range(2):
        syn = Synthetic(n, value)
        result = astar_search(syn.objective(), num_remove=k, budget=SearchBudget(evaluations=25),
                              settings=AStarSettings(admissible=True))
        # checked before each expansion: at most one expansion (n children) past the cap, plus the completion
        assert len(syn.memo) <= 25 + n + 1
        assert len(result.removed) == k
        runs.append((result.removed, result.final.accuracy, result.notes))
    assert runs[0] == runs[1]
    syn = Synthetic(n, value)
    unlimited = astar_search(syn.objective(), num_remove=k, settings=AStarSettings(admissible=True))
    assert len(syn.memo) > 25 + n + 1        # the budget did bind

    def refine(seed: int, budget: SearchBudget):
        syn = Synthetic(n, value)
        start = beam_search(syn.accuracy, num_blocks=n, num_remove=k)
        # the budget covers greedy's evaluations too, as GreedyPruner counts it
        return evolve(syn.objective(), start, budget=budget, budget_start=Spent(),
                      settings=EvolveSettings(offspring=6, seed=seed, patience=20)), syn
    a, b = refine(5, SearchBudget()), refine(5, SearchBudget())
    assert (a[0].removed, a[0].refinements) == (b[0].removed, b[0].refinements)
    capped, syn = refine(5, SearchBudget(evaluations=40))
    assert len(syn.memo) + len(syn.estimates) <= 40 + 6 and any("budget" in note for note in capped.notes)
    assert unlimited.final.accuracy >= capped.final.accuracy - 1e-12       # the optimum bounds every search


def test_greedy_with_a_budget_completes_from_the_last_relevances():
    value = _supermodular(1, 8)
    syn = Synthetic(8, value)
    result = beam_search(syn.accuracy, num_blocks=8, num_remove=4, budget=SearchBudget(evaluations=9),
                         spent=lambda: Spent(len(syn.memo)))
    assert len(result.steps) == 1 and len(result.completed) == 3 and len(result.removed) == 4
    ranked = sorted(result.steps[0].candidates, key=lambda s: (s.relevance, s.block_idx))
    assert list(result.completed) == [s.block_idx for s in ranked if s.block_idx not in result.removed[:1]][:3]
    assert result.final.removed == frozenset(result.removed) and "budget" in result.notes[0]


def test_evolve_needs_staged_selection():
    syn = Synthetic(4, redundant_pair)
    start = beam_search(syn.accuracy, num_blocks=4, num_remove=1)
    with pytest.raises(Exception, match="scores sets in stages"):
        evolve(Objective(4, syn.accuracy, lambda p, b: {}), start)
    with pytest.raises(Exception, match="slices seen must be in 1..7"):
        EvolveSettings(stages=((8, 1),))


@pytest.mark.parametrize(("text", "want"), [
    ("400", SearchBudget(evaluations=400)), ("400evals", SearchBudget(evaluations=400)),
    ("2e9tokens", SearchBudget(block_tokens=2_000_000_000)), ("300, 1e8 block-tokens", SearchBudget(300, 100_000_000)),
    ("", SearchBudget()), (None, SearchBudget()),
])
def test_parse_budget(text, want):
    assert parse_budget(text) == want


@pytest.mark.parametrize("text", ["abc", "0", "1.5", "-3", "10 minutes"])
def test_parse_budget_refuses_bad_input(text):
    with pytest.raises(LayershearError, match="--search-budget"):
        parse_budget(text)


def test_astar_starts_from_greedys_path_and_never_returns_a_worse_set():
    for seed in range(20):
        value = _supermodular(seed, 8)
        greedy = beam_search(Synthetic(8, value).accuracy, num_blocks=8, num_remove=4)
        for budget in (SearchBudget(), SearchBudget(evaluations=40), SearchBudget(evaluations=60)):
            found = astar_search(Synthetic(8, value).objective(), num_remove=4, budget=budget)
            assert found.final.rank_key <= greedy.final.rank_key, (seed, budget)
    # a budget below greedy's cost: greedy's path, finished from its last relevances
    syn = Synthetic(8, _supermodular(2, 8))
    short = astar_search(syn.objective(), num_remove=4, budget=SearchBudget(evaluations=12))
    greedy = beam_search(Synthetic(8, _supermodular(2, 8)).accuracy, num_blocks=8, num_remove=4)
    assert short.removed[:len(short.steps)] == greedy.removed[:len(short.steps)] and short.completed


def test_the_steps_table_shows_swaps_and_budget_completions():
    from rich.console import Console

    from layershear.cli.render import steps_table

    syn = Synthetic(6, redundant_pair)
    refined = evolve(syn.objective(), beam_search(syn.accuracy, num_blocks=6, num_remove=2),
                     settings=EvolveSettings(offspring=8, seed=0))
    console = Console(record=True, width=120)
    console.print(steps_table(refined))
    text = console.export_text()
    move = refined.refinements[0]
    assert "(evolve)" in text and f"swap {move.generation}" in text
    assert f"+{','.join(map(str, move.removed))} -{','.join(map(str, move.put_back))}" in text
    syn = Synthetic(8, _supermodular(1, 8))
    short = beam_search(syn.accuracy, num_blocks=8, num_remove=4, budget=SearchBudget(evaluations=9),
                        spent=lambda: Spent(len(syn.memo)))
    console = Console(record=True, width=120)
    console.print(steps_table(short))
    assert "budget" in console.export_text()
