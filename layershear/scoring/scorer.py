"""Scorer: accuracy of a model with any set of decoder blocks removed, and per-block relevance.

The Scorer turns the log-likelihood engine's numbers (:mod:`layershear.engine.loglikelihood`) into
lm-eval's acc / acc_norm per document, the accuracy of each candidate model on the calibration set
D, and the paper's AccBasedRelevance of each block. Searches talk to it through :class:`SearchPlan`
(what they will ask for) and :meth:`Scorer.accuracy` / :meth:`Scorer.children`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from layershear.data.benchmarks import MCItem
from layershear.engine.config import EngineConfig
from layershear.engine.loglikelihood import LoglikelihoodEngine, ProgressFn, RankFn
from layershear.engine.prefix_cache import CachePlan
from layershear.engine.requests import requests_by_item, requests_of
from layershear.engine.streamed import StreamedEngine, StreamPlan
from layershear.errors import ScoringError
from layershear.model.streaming import WeightSource
from layershear.scoring.accuracy import ModelAccuracy, measure_of, model_accuracy
from layershear.scoring.racing import RaceSettings, better_than, eliminated, item_slices, per_test_delta
from layershear.scoring.relevance import BlockScore, block_score, check_defined
from layershear.scoring.text import CHUNK_TOKENS, expand_text, output_vocab_size

LOG = logging.getLogger(__name__)

__all__ = ["ProgressFn", "Scorer", "SearchPlan"]


@dataclass(frozen=True)
class SearchPlan:
    """What a search will ask of a :class:`Scorer`, told before it starts (:meth:`Scorer.expect`).

    Attributes:
        width: children per depth the search expands further (its beam width; 1 = greedy). Step
            reuse stores states for that many best children, racing keeps that many candidates.
        depth: blocks the search removes; states are stored only for children at depths below it.
        parents: models whose children the search scores (greedy: ``depth``; beam: up to
            ``width x depth``), each costing one block-input caching pass with ``skip_prefix``.
        models: model accuracies the search asks for at most, the full model included (progress totals).
    """

    width: int = 1
    depth: int = 0
    parents: int = 0
    models: int = 0


class Scorer:
    """Accuracy-based relevance of decoder blocks on a calibration set.

    Each candidate model (the model with some blocks removed, in memory) is scored by the
    log-likelihood engine on every (context, continuation) request of the calibration set; its
    accuracy is lm-eval's acc or acc_norm per document. Results are memoised by the set of removed
    blocks, so greedy and beam search never score a model twice.

    Args:
        model: a loaded causal LM (any architecture :mod:`layershear.model.arch` supports), in eval mode.
        tokenizer: its tokenizer.
        items: the calibration set D.
        acc_norm: score every task by acc_norm (True) or acc (False); None = lm-eval's choice per
            task (:func:`layershear.scoring.accuracy.measure_of`).
        race: race the candidates of each step on growing random slices of D and stop scoring those
            that cannot be removed this step (:mod:`layershear.scoring.racing`); None = exact mode.
        slices: lay D out in this many random slices even without racing, so that a search can score
            sets on part of D first (the evolutionary search's staged selection, :meth:`select`);
            racing's own ``slices`` win. None = one slice (unless racing).
        chunk_tokens: text documents of D (:class:`layershear.data.benchmarks.text.TextDoc`) are cut
            into chunks of this many tokens and every token is scored as one item, by next-token
            accuracy (:mod:`layershear.scoring.text`).
        weights: the decoder blocks' weights, to be streamed to the device one block at a time
            (the model's blocks are ``meta``; :class:`layershear.engine.streamed.StreamedEngine`);
            None = the blocks are in memory.
        stream_plan: with ``weights``, where hidden states wait and how many models share a sweep
            (None: chosen by measured free memory).
        batch_size, max_length, add_bos, engine, on_progress, cache_plan: as
            :class:`layershear.engine.loglikelihood.LoglikelihoodEngine`.

    Raises:
        ScoringError: empty calibration set, unknown engine.

    Example:
        >>> scorer = Scorer(model, tokenizer, items)
        >>> full = scorer.accuracy()                 # Acc(f, D)
        >>> scores = scorer.score_blocks()           # relevance of every block
    """

    def __init__(self, model, tokenizer, items: Sequence[MCItem], *, batch_size: int = 16,
                 max_length: int | None = None, acc_norm: bool | None = None, add_bos: bool = False,
                 engine: str | EngineConfig = "fast", on_progress: ProgressFn | None = None,
                 cache_plan: CachePlan | None = None, race: RaceSettings | None = None,
                 chunk_tokens: int = CHUNK_TOKENS, slices: int | None = None, weights: WeightSource | None = None,
                 stream_plan: StreamPlan | None = None) -> None:
        if not items:
            raise ScoringError("The calibration set is empty; check the recipe's tasks and fractions")
        self.items = expand_text(items, tokenizer, vocab_size=output_vocab_size(model), chunk_tokens=chunk_tokens)
        self.measures = [measure_of(item.task, acc_norm) for item in self.items]
        requests = requests_of(self.items)
        self.item_requests = requests_by_item(requests, len(self.items))
        self.race = race
        layout = race or (RaceSettings(slices=slices) if slices else None)
        self.item_slice = item_slices(len(self.items), layout) if layout else [0] * len(self.items)
        common = dict(batch_size=batch_size, max_length=max_length, add_bos=add_bos, engine=engine, on_progress=on_progress,
                      slices=[self.item_slice[r.item] for r in requests] if layout else None, racing=race is not None)
        if weights is None:
            self.engine = LoglikelihoodEngine(model, tokenizer, requests, cache_plan=cache_plan, **common)
        else:
            self.engine = StreamedEngine(model, tokenizer, requests, weights=weights, stream_plan=stream_plan, **common)
        self.num_blocks = self.engine.num_blocks
        self._memo: dict[frozenset[int], ModelAccuracy] = {}
        self._raced: dict[frozenset[int], ModelAccuracy] = {}   # racing estimates of eliminated candidates

    @property
    def models_scored(self) -> int:
        """Distinct candidate models scored exactly so far."""
        return self.engine.models_scored

    def expect(self, plan: SearchPlan) -> int:
        """Take a search's plan before it starts.

        Returns:
            Forward passes the search will cost at most, counted per candidate and batch (the
            unit of ``on_progress``): a progress bar's total.
        """
        self.engine.expect(width=plan.width, depth=plan.depth)
        if self.race is not None:
            self.race = dataclasses.replace(self.race, keep=plan.width)
        captures = plan.parents if self.engine.config.skip_prefix else 0
        return (plan.models + captures) * len(self.engine.batches)

    def measures_by_task(self) -> dict[str, str]:
        """task -> the measure (acc or acc_norm) its documents are scored by."""
        return dict(sorted({item.task: m for item, m in zip(self.items, self.measures)}.items()))

    def describe(self, *, steps: int = 1) -> list[str]:
        """The engine's plan (:meth:`LoglikelihoodEngine.describe`) and a line on racing, if on."""
        lines = self.engine.describe(steps=steps)
        if self.race is not None:
            lines.append(f"racing: {self.race.description}; delta {self.race.delta} per step, {self.race.slices} "
                         f"slices, keep {self.race.keep}")
        return lines

    def cost(self) -> dict:
        """The engine's work and plan (:meth:`LoglikelihoodEngine.cost`) and the racing settings."""
        race = {"bound_description": self.race.description, **dataclasses.asdict(self.race)} if self.race else None
        return {**self.engine.cost(), "race": race, "evaluations": self.evaluations,
                "documents_scored": self.documents_scored}

    @property
    def evaluations(self) -> int:
        """Distinct models scored so far, exactly or on part of D (racing, staged selection)."""
        return len(self._memo) + len(self._raced)

    @property
    def documents_scored(self) -> int:
        """Calibration documents scored so far, summed over the models (a racing estimate counts the
        documents it saw): the unit racing saves."""
        return sum(len(a.correct) for a in self._memo.values()) + sum(len(a.correct) for a in self._raced.values())

    def estimate(self, removed: Iterable[int]) -> ModelAccuracy | None:
        """The exact accuracy of the model without ``removed`` if scored, else its racing or staged
        estimate if it has one, else None (nothing is scored)."""
        key = frozenset(removed)
        return self._memo.get(key) or self._raced.get(key)

    def anchor(self, removed: Iterable[int]) -> None:
        """Cache the block inputs of the model without ``removed``: the sets scored next that share a
        prefix of it start there (:meth:`LoglikelihoodEngine.anchor`)."""
        self.engine.anchor(removed)

    def _result(self, removed: frozenset[int], lls: torch.Tensor, items: Sequence[int] | None = None) -> ModelAccuracy:
        """Accuracy from per-request ``lls``; on the item indices ``items`` only (a racing estimate) if given."""
        return model_accuracy(removed, self.items, self.measures, self.item_requests, lls, items)

    def _memoised(self, removed: frozenset[int], lls: torch.Tensor) -> ModelAccuracy:
        if removed not in self._memo:
            self._memo[removed] = self._result(removed, lls)
        return self._memo[removed]

    def accuracy(self, removed: Iterable[int] = ()) -> ModelAccuracy:
        """Acc(f_-removed, D): calibration accuracy with the blocks in ``removed`` taken out (memoised)."""
        key = frozenset(removed)
        return self._memo.get(key) or self._memoised(key, self.engine.loglikelihood(key))

    def _rank(self, parent: frozenset[int]) -> RankFn:
        return lambda b, lls: self._memoised(parent | {b}, lls).rank_key

    def children(self, parent: Iterable[int], blocks: Iterable[int]) -> dict[int, ModelAccuracy]:
        """Acc(f_-b, D) for each block b still in f = the model without ``parent`` (memoised).

        With the ``fast`` engine one forward of f captures every block's input, and candidate b runs
        only the blocks after b (:mod:`layershear.engine.prefix_cache`); with racing, candidates
        eliminated early get an estimate (``exact=False``).

        Returns:
            block index -> accuracy of f without that block, in the order of ``blocks``.
        """
        parent, blocks = frozenset(parent), list(blocks)
        todo = [b for b in blocks if parent | {b} not in self._raced]
        missing = [b for b in todo if not self.engine.is_scored(parent | {b})]
        if missing and self.race is not None and len(missing) > self.race.keep:
            self._race_children(parent, missing)
        elif missing:
            self.engine.children(parent, todo, rank=self._rank(parent))
        return {b: self._raced.get(parent | {b}) or self.accuracy(parent | {b}) for b in blocks}

    def _race_children(self, parent: frozenset[int], missing: list[int]) -> None:
        """Score ``missing`` slice by slice; after each slice eliminate the candidates that
        ``race.keep`` others beat with confidence (see :mod:`layershear.scoring.racing`); the rest
        are scored on all of D."""
        delta = per_test_delta(self.race, len(missing))
        seen: list[int] = []

        def eliminate(sl: int, lls: dict[int, torch.Tensor]) -> set[int]:
            seen.extend(i for i, x in enumerate(self.item_slice) if x == sl)
            partial = {b: self._result(parent | {b}, ll, seen) for b, ll in lls.items()}
            out = eliminated({b: torch.tensor(r.correct) for b, r in partial.items()}, total=len(self.items),
                             delta=delta, keep=self.race.keep, bound=self.race.bound)
            for b in out:
                self._raced[parent | {b}] = partial[b]
            return out

        self.engine.race(parent, missing, eliminate)

    def select(self, candidates: Sequence[Iterable[int]], *, stages: Sequence[tuple[int, int]],
               reference: ModelAccuracy | None = None) -> dict[frozenset[int], ModelAccuracy]:
        """Staged selection over arbitrary removal sets (EvoPress, arXiv 2410.14649): score every
        candidate on the first slices of D, keep only the best few for the next slices, and score the
        survivors of the last stage on all of D.

        Args:
            candidates: removal sets (each scored from its deepest shared cached block input).
            stages: ``(slices seen, candidates kept)`` pairs, e.g. ``((1, 4), (2, 2), (4, 1))``: after
                the first slice keep the best 4 (by calibration accuracy on the documents seen,
                then gold probability), after two slices the best 2, after four the best one, which
                is then scored on every slice. D must be laid out in slices (``slices`` or racing).
            reference: with racing on, a candidate is also dropped as soon as the paired bound shows
                that ``reference`` (the search's current best, scored exactly) is better on D
                (:func:`layershear.scoring.racing.better_than`, delta split over candidates x looks).

        Returns:
            set -> accuracy: exact for the survivors, an estimate on the documents seen (``exact``
            False) for the others.

        Raises:
            ScoringError: D is not laid out in slices.
        """
        sets = list(dict.fromkeys(frozenset(c) for c in candidates))
        done = {r: self._memo[r] for r in sets if r in self._memo}
        todo = [r for r in sets if r not in done and r not in self._raced]
        if todo and len(self.engine.slice_batches) < 2:
            raise ScoringError("staged selection needs the calibration set in slices; build the Scorer with slices=8")
        keep_after = {n: k for n, k in stages}
        delta = self.race.delta / max(1, len(todo) * len(self.engine.slice_batches)) if self.race else 0.0
        seen: list[int] = []

        def eliminate(sl: int, lls: dict[frozenset[int], torch.Tensor]) -> set[frozenset[int]]:
            seen.extend(i for i, x in enumerate(self.item_slice) if x == sl)
            partial = {r: self._result(r, ll, seen) for r, ll in lls.items()}
            out: set[frozenset[int]] = set()
            if self.race is not None and reference is not None:
                correct = {r: torch.tensor(a.correct) for r, a in partial.items()}
                ref = torch.tensor([reference.correct[i] for i in seen])
                for r in partial:
                    if None in better_than({None: ref, r: correct[r]}, total=len(self.items), delta=delta,
                                           bound=self.race.bound)[r]:
                        out.add(r)
            if sl + 1 in keep_after:
                ranked = sorted((r for r in partial if r not in out), key=lambda r: partial[r].rank_key)
                out |= set(ranked[keep_after[sl + 1]:])
            for r in out:
                self._raced[r] = partial[r]
            return out

        if todo:
            for r, ll in self.engine.race_sets(todo, eliminate).items():
                self._memoised(r, ll)
        return {r: self._memo.get(r) or self._raced[r] for r in sets}

    def score_blocks(self, removed: Iterable[int] = ()) -> list[BlockScore]:
        """Relevance of every block still present in f = the model without ``removed``.

        Returns:
            One :class:`BlockScore` per remaining block, in block order.

        Raises:
            ScoringError: f is not above random on the calibration set (relevance undefined).
        """
        parent = check_defined(self.accuracy(removed))
        children = self.children(parent.removed, [b for b in range(self.num_blocks) if b not in parent.removed])
        return [block_score(parent, acc, b) for b, acc in children.items()]
