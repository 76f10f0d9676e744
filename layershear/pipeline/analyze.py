"""The ``analyze`` job: every block metric on one model, how they agree, and what pruning by each costs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from layershear.analysis.analyze import Analysis, analyze
from layershear.data.calibration import CalibrationSet
from layershear.data.recipes import CalibrationRecipe, EvalSuite
from layershear.engine.config import EngineConfig
from layershear.errors import LayershearError
from layershear.inputs import DataSource, eval_documents
from layershear.pipeline.run import EventFn, PruneEvent, draw_calibration, load_for_job


@dataclass(frozen=True)
class AnalyzeRun:
    """The analysis and its ``report.json`` header (settings, model, calibration, eval documents)."""

    analysis: Analysis
    record: dict[str, Any]
    title: str


def analyze_model(model, tokenizer=None, *, calib: str | CalibrationRecipe | CalibrationSet, tasks: str | EvalSuite,
                  max_remove: int | None = None, acc_norm: bool | None = None, engine: str | EngineConfig = "fast",
                  batch_size: int = 16, max_length: int | None = None, add_bos: bool = False, dtype: str = "auto",
                  device: str = "auto", revision: str | None = None, trust_remote_code: bool = False,
                  data: DataSource | None = None, command: str = "", on_event: EventFn | None = None) -> AnalyzeRun:
    """Run :func:`layershear.analysis.analyze.analyze` on ``model`` with the calibration set ``calib``
    and the held-out documents of ``tasks`` (at least two tasks); ``max_remove`` (default: a quarter
    of the blocks) ends the pruning curves.

    Raises:
        LayershearError: fewer than 2 tasks, ``max_remove`` outside [1, N-1]; CheckpointError for a
            checkpoint refused by :func:`layershear.model.loading.load_model`; ScoringError when
            relevance is undefined or a log-likelihood is not finite.
    """
    from layershear.export.record import calibration_dict, run_record
    from layershear.model.arch import decoder_blocks
    from layershear.scoring.accuracy import measure_of
    from layershear.search.count import check_count, num_to_remove

    emit = on_event or (lambda _e: None)
    calibration = draw_calibration(calib, data, emit)
    suite, docs = eval_documents(tasks, data, exclude=calibration.used())
    if len(docs) < 2:
        raise LayershearError(f"--tasks {suite!r} has {len(docs)} task; task dependence needs at least 2, e.g. "
                              "--tasks arc_easy:200,piqa:200")
    hf_model, tokenizer, source = load_for_job(model, tokenizer, emit, dtype=dtype, device=device, revision=revision,
                                          trust_remote_code=trust_remote_code)
    num_blocks = len(decoder_blocks(hf_model))
    max_remove = check_count(max_remove, num_blocks) if max_remove else num_to_remove(num_blocks, ratio=0.25)
    started = time.perf_counter()

    def on_stage(stage: str) -> None:
        emit(PruneEvent("info", stage))
        emit(PruneEvent("stage", stage))

    def on_progress(label: str, done: int, total: int) -> None:     # passes of one model's log-likelihoods
        emit(PruneEvent("progress", label, count=1))

    result = analyze(hf_model, tokenizer, calibration.items, docs, max_remove=max_remove, batch_size=batch_size,
                     max_length=max_length, add_bos=add_bos, acc_norm=acc_norm, engine=engine, on_stage=on_stage, on_progress=on_progress)
    record = run_record(command=command,
                        settings={"tasks": suite, "max_remove": max_remove, "acc_norm": acc_norm,
                                  "engine": engine if isinstance(engine, str) else "custom", "dtype": dtype,
                                  "device": device, "seconds": round(time.perf_counter() - started, 2)},
                        model={"source": source, "num_blocks": num_blocks},
                        calibration=calibration_dict(calibration, num_tokens=0, measures={
                            d.task: measure_of(d.task, acc_norm) for d in calibration.draws}),
                        eval={"suite": suite, "num_docs": {t: len(v) for t, v in docs.items()}})
    return AnalyzeRun(result, record, f"layershear analyze: {source}")
