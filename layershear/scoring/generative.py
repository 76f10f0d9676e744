"""Generative scoring (lm-eval ``output_type: generate_until``, GSM8K): filters, exact_match, evaluation, a Scorer.

lm-evaluation-harness 0.4.13 scores a GSM8K answer in three steps (``lm_eval/tasks/gsm8k/gsm8k.yaml``):

1. generate greedily until a stop string (:mod:`layershear.engine.generate`);
2. reduce the text with each filter of the YAML's ``filter_list`` (``lm_eval/filters/extraction.py``
   ``RegexFilter``, then ``take_first``): ``strict-match`` takes the first ``#### <number>``,
   ``flexible-extract`` the last number-like string; no match gives ``"[invalid]"``;
3. compare it with the gold ``answer`` by ``exact_match`` (``lm_eval/api/metrics.py``
   ``exact_match_hf_evaluate``): the YAML's ``regexes_to_ignore`` are removed from both strings, then
   both are lower-cased (``ignore_case: true``).

Results are named as lm-eval names them: ``exact_match,strict-match`` and ``exact_match,flexible-extract``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from layershear.data.benchmarks.gsm8k import GenItem
from layershear.engine.generate import MAX_GEN_TOKS, GenerationEngine, GenerationStats, ProgressFn
from layershear.errors import ScoringError
from layershear.scoring.accuracy import ModelAccuracy, stderr
from layershear.scoring.evaluation import TaskResult
from layershear.scoring.relevance import BlockScore, block_score, check_defined
from layershear.scoring.scorer import SearchPlan

LOG = logging.getLogger(__name__)

FALLBACK = "[invalid]"
"""lm-eval ``RegexFilter``'s ``fallback``: the filtered answer when the regex finds nothing."""
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
"""``strict-match`` regex of ``gsm8k.yaml`` (``group_select: 0``, the first match)."""
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
"""``flexible-extract`` regex of ``gsm8k.yaml`` (``group_select: -1``, the last match)."""
IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
"""``regexes_to_ignore`` of ``gsm8k.yaml``'s ``exact_match``, applied in this order."""
FILTERS = ("strict-match", "flexible-extract")
OBJECTIVE = "strict-match"
"""The filter a search maximises by default: strict-match needs the ``#### N`` format the few-shot
examples teach, so it measures whether the pruned model still follows them as well as whether it
gets the number right (flexible-extract also credits a right number anywhere in the text)."""


def regex_filter(text: str, pattern: re.Pattern[str], *, group_select: int = 0, fallback: str = FALLBACK) -> str:
    """lm-eval ``RegexFilter.apply`` on one response, followed by ``take_first``.

    ``pattern.findall(text)``; take match ``group_select`` (negative counts from the end); a match of
    several groups (a tuple) becomes its first non-empty group (``fallback`` if all are empty); the
    result is ``strip()``-ed. No match gives ``fallback``. Source: ``lm_eval/filters/extraction.py``.
    """
    matches = pattern.findall(text)
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
        groups = [m for m in match if m]
        match = groups[0] if groups else fallback
    return match.strip()


def strict_match(text: str) -> str:
    """The ``strict-match`` answer: the number after the first ``#### ``, e.g. ``"#### 72"`` -> ``"72"``."""
    return regex_filter(text, STRICT, group_select=0)


def flexible_extract(text: str) -> str:
    """The ``flexible-extract`` answer: the last number-like string, e.g. ``"The answer is $1,234."`` -> ``"$1,234."``
    (exact_match then ignores ``$``, ``,`` and the final ``.``)."""
    return regex_filter(text, FLEXIBLE, group_select=-1)


FILTER_FNS = {"strict-match": strict_match, "flexible-extract": flexible_extract}


def normalize(text: str) -> str:
    """``text`` as ``exact_match`` compares it: each of :data:`IGNORE` removed (``re.sub`` to ``""``,
    in order), then lower-cased (``ignore_case: true``; ``ignore_punctuation: false``)."""
    for regex in IGNORE:
        text = re.sub(regex, "", text)
    return text.lower()


def exact_match(prediction: str, reference: str) -> bool:
    """lm-eval ``exact_match_hf_evaluate`` with ``gsm8k.yaml``'s arguments on one pair.

    Example:
        >>> exact_match(flexible_extract("The answer is $1,234."), "so...\\n#### 1234")
        True
    """
    return normalize(prediction) == normalize(reference)


def score_text(text: str, target: str) -> dict[str, bool]:
    """Filter name -> whether that filter's answer from ``text`` exact-matches ``target``."""
    return {name: exact_match(FILTER_FNS[name](text), target) for name in FILTERS}


def metric_name(filter_name: str) -> str:
    """lm-eval's result key, e.g. ``exact_match,strict-match``."""
    return f"exact_match,{filter_name}"


def is_generative(items: Sequence[object]) -> bool:
    """True when every item is a :class:`GenItem`, False when none is.

    Raises:
        ScoringError: the set mixes generative and multiple-choice documents.
    """
    kinds = {isinstance(item, GenItem) for item in items}
    if len(kinds) > 1:
        gen = sorted({item.task for item in items if isinstance(item, GenItem)})
        raise ScoringError(f"the calibration set mixes generative tasks ({', '.join(gen)}) with multiple-choice "
                           "ones; calibrate on one kind only (e.g. --calib gsm8k:32 or --calib arc_easy:32)")
    return kinds == {True}


def _check_items(items: Sequence[GenItem]) -> tuple[str, ...]:
    if not items:
        raise ScoringError("generative scoring needs at least one document")
    stops = {item.until for item in items}
    if len(stops) > 1 or not all(isinstance(item, GenItem) for item in items):
        raise ScoringError("generative documents must all be GenItems with the same stop strings (one task kind)")
    return items[0].until


@dataclass(frozen=True)
class Generations:
    """What one candidate model wrote for every document, and what each filter made of it."""

    removed: frozenset[int]
    texts: tuple[str, ...]
    answers: dict[str, tuple[str, ...]]      # filter -> filtered answer per document
    correct: dict[str, tuple[bool, ...]]     # filter -> exact_match per document
    stats: GenerationStats


def judge(removed: Iterable[int], items: Sequence[GenItem], texts: Sequence[str], stats: GenerationStats) -> Generations:
    """Apply both filters and ``exact_match`` to ``texts`` (one per item)."""
    answers = {f: tuple(FILTER_FNS[f](t) for t in texts) for f in FILTERS}
    correct = {f: tuple(exact_match(a, it.target) for a, it in zip(answers[f], items)) for f in FILTERS}
    return Generations(frozenset(removed), tuple(texts), answers, correct, stats)


def evaluate_generative(model, tokenizer, items: Sequence[GenItem], *, removed: Iterable[int] = (),
                        batch_size: int = 16, max_length: int | None = None, add_bos: bool = False,
                        max_gen_toks: int = MAX_GEN_TOKS, on_progress: ProgressFn | None = None,
                        engine: object = None) -> TaskResult:
    """Both exact_match values of one generative task (the model without ``removed``), lm-eval style.

    Args:
        items: the task's documents, prompts already few-shot (:class:`GenItem`).
        removed: original indices of blocks taken out in memory.
        batch_size, max_length, add_bos, max_gen_toks: as :class:`layershear.engine.generate.GenerationEngine`.
        on_progress: ``on_progress(task, batches_done, batches_total)`` after every batch.
        engine: ignored (the log-likelihood engine setting, passed by :func:`evaluate_suite`).

    Returns:
        ``TaskResult`` with ``values``/``stderrs`` keyed ``exact_match,strict-match`` and
        ``exact_match,flexible-extract`` (fractions in [0, 1]; stderr as lm-eval's ``mean_stderr``)
        and ``random`` 0.0.

    Raises:
        ScoringError: no documents, documents with different stop strings, or as ``GenerationEngine``.
    """
    until = _check_items(items)
    task = items[0].task
    gen = GenerationEngine(model, tokenizer, [it.context for it in items], until=until, max_gen_toks=max_gen_toks,
                           max_length=max_length, batch_size=batch_size, add_bos=add_bos, on_progress=on_progress,
                           label=task)
    out = judge(removed, items, *gen.run(removed))
    values = {metric_name(f): sum(out.correct[f]) / len(items) for f in FILTERS}
    errs = {metric_name(f): stderr([float(c) for c in out.correct[f]]) for f in FILTERS}
    return TaskResult(task, len(items), values, errs, 0.0)


class GenerativeScorer:
    """The :class:`layershear.scoring.scorer.Scorer` of generative calibration sets (GSM8K).

    Every candidate model (the model without some blocks, in memory) generates an answer to every
    document; its accuracy is the fraction whose ``objective`` filter's answer exact-matches the
    gold one. Results are memoised by the set of removed blocks. r(D) is 0: a random guess never
    writes the right number. The prompt is recomputed for each candidate (nothing is shared).

    :class:`ModelAccuracy` fields: ``correct`` is the per-document exact_match of ``objective``;
    ``gold_prob``, the search's tie-breaker (the mean gold-choice probability for multiple choice),
    is here the accuracy under the *other* filter (flexible-extract for strict-match), in [0, 1] and
    never NaN; ``loglikelihoods`` is None.

    Args:
        model, tokenizer: the causal LM (eval mode) and its tokenizer.
        items: the calibration set D, all :class:`GenItem` with the same stop strings.
        objective: ``strict-match`` (default, see :data:`OBJECTIVE`) or ``flexible-extract``.
        batch_size, max_length, add_bos, max_gen_toks, on_progress: as
            :class:`layershear.engine.generate.GenerationEngine`.

    Raises:
        ScoringError: empty or mixed calibration set, unknown objective.
    """

    def __init__(self, model, tokenizer, items: Sequence[GenItem], *, objective: str = OBJECTIVE,
                 batch_size: int = 16, max_length: int | None = None, add_bos: bool = False,
                 max_gen_toks: int = MAX_GEN_TOKS, on_progress: ProgressFn | None = None) -> None:
        if objective not in FILTERS:
            raise ScoringError(f"Unknown objective {objective!r}; choose one of: {', '.join(FILTERS)}")
        until = _check_items(items)
        self.items, self.objective = list(items), objective
        self.tiebreak = next(f for f in FILTERS if f != objective)
        self.engine = GenerationEngine(model, tokenizer, [it.context for it in self.items], until=until,
                                       max_gen_toks=max_gen_toks, max_length=max_length, batch_size=batch_size,
                                       add_bos=add_bos, on_progress=on_progress, label="generate")
        self.num_blocks = self.engine.num_blocks
        self.generations: dict[frozenset[int], Generations] = {}
        self._memo: dict[frozenset[int], ModelAccuracy] = {}

    @property
    def models_scored(self) -> int:
        """Distinct candidate models scored so far."""
        return len(self._memo)

    @property
    def evaluations(self) -> int:
        """Distinct candidate models scored so far (the unit of a search budget)."""
        return len(self._memo)

    @property
    def documents_scored(self) -> int:
        """Documents generated for so far, summed over the models."""
        return len(self._memo) * len(self.items)

    def expect(self, plan: SearchPlan) -> int:
        """Generate batches the search costs at most (``plan.models`` x batches): a progress bar's total."""
        return plan.models * len(self.engine.batches)

    def measures_by_task(self) -> dict[str, str]:
        """task -> the result the search maximises, e.g. ``exact_match,strict-match``."""
        return {task: metric_name(self.objective) for task in sorted({it.task for it in self.items})}

    def describe(self, *, steps: int = 1) -> list[str]:
        """The plan in a few lines (what one candidate costs, what is maximised)."""
        e = self.engine
        return [f"generative scoring: {len(self.items)} docs in {len(e.batches)} batches, {e.num_tokens} prompt "
                f"tokens and up to {e.max_gen_toks} new tokens per doc per candidate (greedy, KV cache)",
                f"objective: {metric_name(self.objective)} (ties broken by {metric_name(self.tiebreak)}); "
                "the prompt is recomputed for every candidate"]

    def cost(self) -> dict:
        """Work done so far: totals, and per candidate (removed blocks, seconds, prompt and generated
        tokens, forward passes, tokens/s), in the order the candidates were scored."""
        total = sum((g.stats for g in self.generations.values()), GenerationStats())
        return {"kind": "generate_until", "objective": metric_name(self.objective),
                "models_scored": self.models_scored, "batches_per_model": len(self.engine.batches),
                "prompt_tokens_per_model": self.engine.num_tokens, "max_gen_toks": self.engine.max_gen_toks,
                "total": total.to_dict(),
                "per_candidate": [{"removed": sorted(r), **g.stats.to_dict()} for r, g in self.generations.items()]}

    def _accuracy_of(self, gen: Generations) -> ModelAccuracy:
        ok, alt = gen.correct[self.objective], gen.correct[self.tiebreak]
        by_task: dict[str, list[int]] = {}
        for k, item in enumerate(self.items):
            by_task.setdefault(item.task, []).append(k)
        return ModelAccuracy(
            removed=gen.removed, accuracy=sum(ok) / len(ok), random=0.0, gold_prob=sum(alt) / len(alt),
            accuracy_by_task={t: sum(ok[k] for k in ks) / len(ks) for t, ks in sorted(by_task.items())},
            random_by_task={t: 0.0 for t in sorted(by_task)}, correct=ok, sequences=len(ok))

    def accuracy(self, removed: Iterable[int] = ()) -> ModelAccuracy:
        """Acc(f_-removed, D): the fraction of D answered right with ``removed`` taken out (memoised)."""
        key = frozenset(removed)
        if key not in self._memo:
            self.generations[key] = judge(key, self.items, *self.engine.run(key))
            self._memo[key] = self._accuracy_of(self.generations[key])
        return self._memo[key]

    def children(self, parent: Iterable[int], blocks: Iterable[int]) -> dict[int, ModelAccuracy]:
        """Acc(f_-b, D) for each block b still in f = the model without ``parent`` (memoised), in the order of ``blocks``."""
        parent = frozenset(parent)
        return {b: self.accuracy(parent | {b}) for b in blocks}

    def score_blocks(self, removed: Iterable[int] = ()) -> list[BlockScore]:
        """Relevance of every block still in the model without ``removed``, in block order.

        Raises:
            ScoringError: that model answers no document right (r(D) = 0; relevance undefined).
        """
        parent = check_defined(self.accuracy(removed))
        children = self.children(parent.removed, [b for b in range(self.num_blocks) if b not in parent.removed])
        return [block_score(parent, acc, b) for b, acc in children.items()]


__all__ = ["FILTERS", "OBJECTIVE", "Generations", "GenerativeScorer", "evaluate_generative", "exact_match",
           "flexible_extract", "is_generative", "regex_filter", "strict_match"]
