"""The whole prune job as one library call: :func:`prune_model` -> :class:`PruneRun`.

Draw the calibration set, load the model, score and search (accuracy-based relevance with greedy or
beam search, or a baseline metric), evaluate before and after on held-out documents, and keep what
``layershear.json`` records. :meth:`PruneRun.save_pretrained` then streams the pruned checkpoint
from the source shards (:class:`layershear.export.exporter.Exporter`), and
:meth:`PruneRun.push_to_hub` uploads it. The CLI's ``prune`` is a thin layer over these calls.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from layershear.data.calibration import CalibrationSet
from layershear.data.recipes import CalibrationRecipe, EvalSuite
from layershear.engine.config import EngineConfig
from layershear.errors import LayershearError
from layershear.inputs import DataSource, eval_documents
from layershear.pipeline.run import EventFn, HeldOut, PruneEvent, PruneRun, draw_calibration, place_for_job
from layershear.scoring.metric_names import ITERATIVE_BY_DEFAULT, METRICS
from layershear.scoring.racing import RaceSettings
from layershear.search.astar import ASTAR, AStarSettings
from layershear.search.budget import NO_BUDGET, SearchBudget
from layershear.search.evolve import EVOLVE, EvolveSettings
from layershear.search.greedy import SEARCHES


def check_settings(metric: str, search: str, beam_width: int, iterative: bool | None, race: Any,
                   compile_blocks: bool) -> bool:
    """The resolved ``iterative``; raises LayershearError on a combination that does not apply."""
    if metric not in METRICS:
        raise LayershearError(f"Unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    if search not in SEARCHES:
        raise LayershearError(f"Unknown search {search!r}; choose one of: {', '.join(SEARCHES)}")
    if beam_width < 1 or (search != "beam" and beam_width != 1):
        raise LayershearError(f"beam width {beam_width} applies to search='beam' (--search beam --beam W); "
                              f"{search} has none")
    iterative = metric in ITERATIVE_BY_DEFAULT if iterative is None else iterative
    if metric == "accuracy" and not iterative:
        raise LayershearError("--one-shot is for the baseline metrics; accuracy relevance is scored greedily (drop --one-shot)")
    if metric != "accuracy" and (race is not None or search != "greedy" or compile_blocks):
        raise LayershearError(f"--race, --search, --beam and --compile apply to --metric accuracy, not {metric}")
    return iterative


def prune_model(model, tokenizer=None, *, calib: str | CalibrationRecipe | CalibrationSet = "mix10",
                ratio: float | None = None, num_remove: int | None = None, metric: str = "accuracy",
                search: str = "greedy", beam_width: int = 1, search_budget: SearchBudget = NO_BUDGET,
                astar: AStarSettings = ASTAR, evolve: EvolveSettings = EVOLVE,
                iterative: bool | None = None,
                acc_norm: bool | None = None, engine: str | EngineConfig = "fast", race: RaceSettings | None = None,
                compile_blocks: bool = False, eval: str | EvalSuite | None = None, batch_size: int = 16,
                max_length: int | None = None, add_bos: bool = False, dtype: str = "auto", device: str = "auto",
                revision: str | None = None, trust_remote_code: bool = False, data: DataSource | None = None, command: str | None = None,
                placement: str = "auto", journal: str | os.PathLike | None = None, on_event: EventFn | None = None) -> PruneRun:
    """Remove ``ratio`` (or ``num_remove``) of ``model``'s decoder blocks, chosen on a calibration set.

    Args:
        model: a Hub id, a local folder, or a loaded ``PreTrainedModel`` (then its checkpoint is
            ``model.name_or_path``; the export checks that it holds the weights that were scored).
        tokenizer: the model's tokenizer (default: loaded with the model).
        calib: the calibration set D: a recipe name (``mix10``: the paper's 10% of eight benchmarks'
            training splits), a YAML path, inline ``task:amount,...``, a recipe or a drawn set.
        ratio: fraction of the blocks to remove, in (0, 1), rounded half up; or ``num_remove``.
        metric: ``accuracy`` (the paper's AccBasedRelevance) or a baseline: ``cosine``, ``angular``,
            ``perplexity``, ``taylor`` (:mod:`layershear.scoring.baselines`).
        search: ``greedy`` (the paper), ``beam`` (``beam_width`` partial removal sets per depth),
            ``astar`` (A*-style best-first over partial sets) or ``evolve`` (greedy, then swap
            mutations with staged selection); all maximise the calibration accuracy of the pruned
            model (:class:`layershear.search.greedy.GreedyPruner`).
        search_budget: evaluations / block-tokens the search may spend (:mod:`layershear.search.budget`).
        astar, evolve: settings of those searches (:mod:`layershear.search.astar`, :mod:`layershear.search.evolve`).
        iterative: rescore after every removal (baselines; None = the metric's default).
        acc_norm: score every task by acc_norm / acc (None = lm-eval's choice per task).
        engine: ``fast`` or ``reference`` (lm-eval's computation), or an ``EngineConfig``.
        race: :class:`layershear.scoring.racing.RaceSettings` to race candidates, None = exact.
        compile_blocks: ``torch.compile`` the blocks' parts (long CUDA jobs).
        eval: an eval suite scored before and after on held-out documents (none by default).
        batch_size, max_length, add_bos: as :class:`layershear.scoring.scorer.Scorer`.
        dtype, device, revision: how to load ``model`` when it is an id or folder.
        placement: where its weights live (:mod:`layershear.model.placement`): ``replica`` (all on
            one device), ``split`` (over the GPUs this process sees), ``streamed`` (blocks streamed
            from the shards one at a time) or ``auto`` (the first that fits the measured memory);
            a model passed in memory is used as it is.
        data: where benchmark documents come from (default: local copies when found, else the Hub).
        command: the command line recorded in ``layershear.json`` and the card (default: this call).
        trust_remote_code: let transformers run the checkpoint's own code (``auto_map``); False
            refuses such a checkpoint.
        journal: a file recording every scored model and search step (``metric="accuracy"``); when
            it holds an interrupted run with the same settings, model and calibration documents,
            that run is resumed: its models are not scored again and the result is the same as
            an uninterrupted run's (:mod:`layershear.search.journal`).
        on_event: progress and plan reporting, see :class:`PruneEvent`.

    Returns:
        The :class:`PruneRun`; ``save_pretrained`` writes the pruned model.

    Raises:
        LayershearError: bad settings (before any model is loaded), unknown recipe or task,
            unsupported model; CheckpointError for a corrupt, incomplete, pickle-only or code-running
            checkpoint or NaN/Inf weights; ScoringError when relevance is undefined (the model is
            not above chance on the calibration set) or a log-likelihood is not finite; JournalError
            for a journal written with other settings.

    Example:
        >>> run = prune_model("HuggingFaceTB/SmolLM2-135M", calib="mix10", ratio=0.25)
        >>> run.save_pretrained("smollm2-pruned")
    """
    from layershear.export.exporter import fingerprint
    from layershear.model.arch import decoder_blocks
    from layershear.pipeline.stages import before_after, search_by_accuracy, search_by_baseline
    from layershear.search.count import check_request, num_to_remove

    emit = on_event or (lambda _e: None)
    check_request(ratio, num_remove)
    iterative = check_settings(metric, search, beam_width, iterative, race, compile_blocks)
    calibration = draw_calibration(calib, data, emit)
    held_out = eval_documents(eval, data, exclude=calibration.used()) if eval is not None else None
    hf_model, tokenizer, source, weights, _ = place_for_job(model, tokenizer, emit, placement=placement, dtype=dtype,
                                                            device=device, revision=revision,
                                                            trust_remote_code=trust_remote_code)
    if weights is not None and (metric != "accuracy" or held_out is not None):
        raise LayershearError("streamed blocks score by accuracy only: --metric baselines and --eval need the model in "
                              "memory (--placement replica or split); evaluate the export with `layershear eval`")
    num_blocks = len(decoder_blocks(hf_model))
    k = num_to_remove(num_blocks, ratio=ratio, num=num_remove)
    emit(PruneEvent("info", f"removing {k} of {num_blocks} blocks"))
    opts = dict(batch_size=batch_size, max_length=max_length, add_bos=add_bos)
    log = None
    if journal is not None and metric == "accuracy":
        depends = {"num_remove": k, "search": search, "beam_width": beam_width, "acc_norm": acc_norm,
                   "search_budget": dataclasses.asdict(search_budget),
                   **({"astar": dataclasses.asdict(astar)} if search == "astar" else {}),
                   **({"evolve": dataclasses.asdict(evolve)} if search == "evolve" else {}),
                    "engine": engine if isinstance(engine, str) else repr(engine), "compile": compile_blocks,
                    "race": dataclasses.asdict(race) if race else None, **opts}
        log = open_journal(journal, hf_model, source, revision, calibration, depends)
    started = time.perf_counter()
    found = (search_by_accuracy(hf_model, tokenizer, calibration, k, search=search, width=beam_width,
                                budget=search_budget, astar=astar, evolve=evolve, acc_norm=acc_norm, engine=engine,
                                race=race, compile_blocks=compile_blocks, emit=emit, journal=log, weights=weights, **opts)
             if metric == "accuracy"
             else search_by_baseline(hf_model, tokenizer, calibration, k, num_blocks=num_blocks, metric=metric, iterative=iterative,
                                     acc_norm=acc_norm, emit=emit, **opts))
    seconds = time.perf_counter() - started
    evaluation = (HeldOut(held_out[0], *before_after(hf_model, tokenizer, held_out[1], found.removed, emit=emit, **opts))
                  if held_out is not None else None)
    settings = {"ratio": ratio, "num_remove": k, "metric": metric, "strategy": found.strategy, "iterative": iterative,
                "acc_norm": acc_norm, "engine": engine if isinstance(engine, str) else "custom", "dtype": dtype,
                "device": device, "placement": placement, "search": search, "beam_width": beam_width,
                "search_budget": dataclasses.asdict(search_budget), "eval": held_out[0] if held_out else None}
    record = found.record(calibration, source=source, settings=settings, seconds=seconds, held_out=evaluation,
                          command=command or _call(source, calibration, ratio, num_remove, metric, search, beam_width))
    if log is not None:
        record["cost"]["journal"] = {"path": str(log.path), "models_replayed": log.replayed}
    return PruneRun(source=source, revision=revision, num_blocks=num_blocks, removed=found.removed, metric=metric,
                    strategy=found.strategy, full=found.full, final=found.final, record=record,
                    calibration=calibration.recipe, search=found.search, baseline=found.baseline, held_out=evaluation,
                    fingerprint=None if isinstance(model, str | os.PathLike) else fingerprint(hf_model),
                    trust_remote_code=trust_remote_code)


def open_journal(path, model, source: str, revision: str | None, calibration: CalibrationSet,
                 settings: dict[str, Any]):
    """The :class:`layershear.search.journal.SearchJournal` at ``path`` for this job; its head holds the
    layershear version, the settings, the model's identity (source, revision, weights hash, dtype and
    device) and a hash of the calibration documents. Only rank 0 of a distributed run writes it.

    Raises:
        JournalError: an existing journal with another head.
    """
    import hashlib
    import json

    from layershear import __version__
    from layershear.engine.distributed import from_main, is_main
    from layershear.errors import JournalError
    from layershear.model.checkpoint import checkpoint_identity
    from layershear.model.loading import resolve_checkpoint
    from layershear.search.journal import SearchJournal

    param = next(model.parameters())
    docs = json.dumps([dataclasses.asdict(item) for item in calibration.items], sort_keys=True).encode()
    head = {"layershear": __version__, "settings": settings,
            "model": {"source": source, "revision": revision, "dtype": str(param.dtype).removeprefix("torch."),
                      "device": param.device.type,
                      "weights": checkpoint_identity(resolve_checkpoint(source, revision=revision))},
            "calibration": {"recipe": calibration.recipe, "seed": calibration.seed, "num_items": len(calibration.items),
                            "documents": hashlib.sha256(docs).hexdigest()}}
    # rank 0 alone reads the file (after a --restart unlinked it) and sends what it replays to the others,
    # so every rank asks for the same models in the same collective calls
    error, journal = None, None
    try:
        journal = SearchJournal(path, head, write=is_main())
    except JournalError as e:
        error = str(e)
    state = from_main((error, journal.state() if journal is not None else None))
    if state[0] is not None:
        raise JournalError(state[0])
    journal.load_state(state[1])
    return journal


def _call(source, calibration, ratio, num_remove, metric, search, width) -> str:
    args = [repr(source), f"calib={calibration.recipe!r}",
            f"ratio={ratio}" if ratio is not None else f"num_remove={num_remove}"]
    args += [f"metric={metric!r}"] if metric != "accuracy" else []
    args += [f"search={search!r}"] if search != "greedy" else []
    args += [f"beam_width={width}"] if width != 1 else []
    return f"layershear.prune_model({', '.join(args)})"


__all__ = ["SEARCHES", "prune_model"]
