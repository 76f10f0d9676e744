"""The stages of a prune job: the search (by accuracy or by a baseline metric) and the held-out evaluation.

Each stage reports through ``emit`` (:class:`layershear.pipeline.run.PruneEvent`) and returns plain
results; :func:`layershear.pipeline.prune.prune_model` runs them in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layershear.data.benchmarks import MCItem
from layershear.data.calibration import CalibrationSet
from layershear.engine.config import ENGINES, EngineConfig
from layershear.errors import LayershearError
from layershear.export.record import accuracy_dict, calibration_dict, eval_dict, run_record, search_cost_dict, search_dict
from layershear.pipeline.run import EngineProgress, EventFn, HeldOut, PruneEvent
from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.evaluation import TaskResult, evaluate_suite
from layershear.scoring.scorer import Scorer
from layershear.search.astar import ASTAR, AStarSettings
from layershear.search.baseline import MetricRemoval, remove_by_metric
from layershear.search.budget import NO_BUDGET, SearchBudget
from layershear.search.evolve import EVOLVE, EvolveSettings
from layershear.search.greedy import GreedyPruner
from layershear.search.journal import SearchJournal
from layershear.search.result import SearchResult, SearchStep


@dataclass(frozen=True)
class Found:
    """What a search stage found, and the sections of ``layershear.json`` it contributes."""

    removed: tuple[int, ...]
    strategy: str
    full: ModelAccuracy
    final: ModelAccuracy
    scorer: Scorer
    search: SearchResult | None = None
    baseline: MetricRemoval | None = None
    compiled: bool = False

    def record(self, calibration: CalibrationSet, *, source: str, settings: dict[str, Any], seconds: float,
               held_out: HeldOut | None, command: str) -> dict[str, Any]:
        """The whole ``layershear.json`` of the run."""
        scorer = self.scorer
        measures = scorer.measures_by_task()
        sections: dict[str, Any] = {
            "model": {"source": source, "num_blocks": scorer.num_blocks},
            "calibration": calibration_dict(calibration, measures=measures, num_tokens=scorer.engine.num_tokens),
        }
        if self.search is not None:
            sections["search"] = search_dict(self.search)
            sections["cost"] = {"seconds": round(seconds, 2), "compiled": self.compiled, **scorer.cost(),
                                "search": search_cost_dict(self.search)}
        else:
            sections["search"] = {**self.baseline.to_dict(), "full": accuracy_dict(self.full),
                                  "final": accuracy_dict(self.final)}
            sections["cost"] = {"seconds": round(seconds, 2)}
        if held_out is not None:
            sections["eval"] = {"suite": held_out.suite, "base": eval_dict(held_out.base),
                                "pruned": eval_dict(held_out.pruned)}
        return run_record(command=command, settings=settings, **sections)


def build_scorer(model, tokenizer, items, *, race=None, **kwargs):
    """A :class:`layershear.scoring.generative.GenerativeScorer` for a generative calibration set (GSM8K),
    else a :class:`Scorer` (``kwargs``: its arguments; the log-likelihood ones are ignored for generation).

    Raises:
        ScoringError: the set mixes generative and multiple-choice documents.
        LayershearError: ``race`` with a generative set.
    """
    from layershear.scoring.generative import GenerativeScorer, is_generative

    if not is_generative(items):
        return Scorer(model, tokenizer, items, race=race, **kwargs)
    if race is not None:
        raise LayershearError("--race applies to multiple-choice calibration sets, not generative ones (gsm8k)")
    if kwargs.get("weights") is not None:
        raise LayershearError("a generative calibration set (gsm8k) needs the model in memory; use --placement replica "
                              "or split")
    for key in ("acc_norm", "engine", "cache_plan", "slices", "weights", "stream_plan"):       # log-likelihood settings
        kwargs.pop(key, None)
    return GenerativeScorer(model, tokenizer, items, **kwargs)


def _step_line(depth: int, total: int, step: SearchStep) -> str:
    return (f"step {depth}/{total}: best removal set so far {sorted(step.after.removed)}, last removed block "
            f"{step.chosen.block_idx} (relevance {step.chosen.relevance:+.4f}, calibration acc "
            f"{100 * step.after.accuracy:.2f}%)")


def search_by_accuracy(model, tokenizer, calibration: CalibrationSet, num_remove: int, *, width: int,
                       acc_norm: bool | None, engine: str | EngineConfig, race, compile_blocks: bool, emit: EventFn,
                       journal: SearchJournal | None = None, search: str | None = None,
                       budget: SearchBudget = NO_BUDGET, astar: AStarSettings = ASTAR,
                       evolve: EvolveSettings = EVOLVE, **opts) -> Found:
    """Search by accuracy-based relevance (greedy, beam of ``width``, A*-style or evolutionary, see
    :class:`GreedyPruner`), recorded in ``journal`` (and resumed from it) if given; ``opts``:
    batch_size, max_length, add_bos."""
    if compile_blocks:
        from layershear.engine.compile import compile_blocks as compile_parts

        emit(PruneEvent("info", f"compiling {len(compile_parts(model))} decoder-block modules (at their first forward)"))
    staged = {"slices": evolve.slices} if search == "evolve" else {}
    scorer = build_scorer(model, tokenizer, calibration.items, acc_norm=acc_norm, engine=engine, race=race,
                          on_progress=EngineProgress(emit), **staged, **opts)
    if search == "evolve" and not isinstance(scorer, Scorer):
        raise LayershearError("--search evolve scores sets on slices of a log-likelihood calibration set; it does not "
                              "apply to generative ones (gsm8k): use greedy, beam or astar")

    def on_generation(generation: int, best: ModelAccuracy, improved: bool) -> None:
        emit(PruneEvent("info", f"generation {generation}: {'improved' if improved else 'no better offspring'}; best "
                                f"set {sorted(best.removed)}, calibration acc {100 * best.accuracy:.2f}%"))

    pruner = GreedyPruner(scorer, search=search, beam_width=width, journal=journal, budget=budget, astar=astar,
                          evolve=evolve, on_generation=on_generation,
                          on_step=lambda d, n, step: emit(PruneEvent("info", _step_line(d, n, step))))
    total = scorer.expect(pruner.plan(num_remove))
    for line in scorer.describe(steps=num_remove):
        emit(PruneEvent("info", line))
    if journal is not None and journal.resumed:
        recorded = len(journal.models) + sum(len(c) for c in journal.parents.values())
        emit(PruneEvent("info", f"resuming from {journal.path}: {journal.steps_recorded} of {num_remove} steps and "
                                f"{recorded} models recorded, not scored again"))
        total = max(total - (recorded + len(journal.parents)) * len(scorer.engine.batches), 0)
    emit(PruneEvent("stage", "scoring", total=total))
    result = pruner.prune(num_remove)
    return Found(result.removed, result.strategy, result.full, result.final, scorer, search=result,
                 compiled=compile_blocks)


def search_by_baseline(model, tokenizer, calibration: CalibrationSet, num_remove: int, *, num_blocks: int, metric: str,
                       iterative: bool, acc_norm: bool | None, emit: EventFn, **opts) -> Found:
    """Remove by a baseline metric (one-shot or iterative), then score the full and the pruned model
    on the calibration set (two passes: no block-input cache)."""
    from layershear.scoring.baselines import calibration_texts

    def on_step(step: int, total: int, block: int, scores: dict[int, float]) -> None:
        emit(PruneEvent("info", f"step {step}/{total}: remove block {block} ({metric} {scores[block]:.4g})"))

    emit(PruneEvent("stage", f"{metric} scores ({'iterative' if iterative else 'one-shot'})"))
    texts = calibration_texts(calibration.items)
    removal = remove_by_metric(metric, model, tokenizer, texts, num_remove=num_remove,
                               num_blocks=num_blocks, iterative=iterative,
                               batch_size=opts["batch_size"], max_length=opts["max_length"] or 2048, on_step=on_step)
    # two accuracies only: no block-input cache (it pays off across the candidates of a greedy step)
    scorer = build_scorer(model, tokenizer, calibration.items, acc_norm=acc_norm,
                          engine=dataclasses.replace(ENGINES["fast"], skip_prefix=False), **opts)
    full, final = scorer.accuracy(), scorer.accuracy(removal.removed)
    emit(PruneEvent("info", f"calibration accuracy {100 * full.accuracy:.2f}% -> {100 * final.accuracy:.2f}% "
                            f"(random {100 * full.random:.2f}%)"))
    return Found(removal.removed, "iterative" if iterative else "one-shot", full, final, scorer, baseline=removal)


def evaluate_removed(model, tokenizer, tasks: Mapping[str, Sequence[MCItem]], removed: Sequence[int], *, name: str,
                     emit: EventFn, **opts) -> tuple[TaskResult, ...]:
    """Held-out acc / acc_norm of the model without ``removed``, a progress stage per task."""
    current: dict[str, Any] = {"task": None}

    def on_progress(task: str, done: int, total: int) -> None:
        if task != current["task"]:
            current["task"] = task
            emit(PruneEvent("stage", f"eval {name}: {task}", total=total))
        emit(PruneEvent("progress", task, count=1))

    return tuple(evaluate_suite(model, tokenizer, tasks, removed=removed, on_progress=on_progress, **opts))


def before_after(model, tokenizer, tasks: Mapping[str, Sequence[MCItem]], removed: Sequence[int], *, emit: EventFn,
                 **opts) -> tuple[tuple[TaskResult, ...], tuple[TaskResult, ...]]:
    """Held-out results of the full model and of the model without ``removed``."""
    base = evaluate_removed(model, tokenizer, tasks, (), name="base", emit=emit, **opts)
    return base, evaluate_removed(model, tokenizer, tasks, removed, name="pruned", emit=emit, **opts)


__all__ = ["Found", "before_after", "build_scorer", "evaluate_removed", "search_by_accuracy", "search_by_baseline"]
