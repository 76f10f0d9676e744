"""The ``score`` job: the relevance of every block of a model (one greedy step, nothing removed for good)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from layershear.data.calibration import CalibrationSet
from layershear.data.recipes import CalibrationRecipe
from layershear.engine.config import EngineConfig
from layershear.errors import LayershearError
from layershear.inputs import DataSource
from layershear.pipeline.run import EngineProgress, EventFn, PruneEvent, draw_calibration, load_for_job
from layershear.scoring.accuracy import ModelAccuracy
from layershear.scoring.relevance import BlockScore


@dataclass(frozen=True)
class ScoreRun:
    """Relevance of every block still in the model without ``parent.removed``; ``record`` is the JSON."""

    scores: tuple[BlockScore, ...]
    parent: ModelAccuracy
    record: dict[str, Any]


def score_model(model, tokenizer=None, *, calib: str | CalibrationRecipe | CalibrationSet, removed: Iterable[int] = (),
                acc_norm: bool | None = None, engine: str | EngineConfig = "fast", batch_size: int = 16,
                max_length: int | None = None, add_bos: bool = False, dtype: str = "auto", device: str = "auto",
                revision: str | None = None, trust_remote_code: bool = False, data: DataSource | None = None,
                command: str = "", on_event: EventFn | None = None) -> ScoreRun:
    """AccBasedRelevance of every block of ``model`` (without ``removed``) on the calibration set.

    Args: as :func:`layershear.pipeline.prune.prune_model`; ``removed``: blocks taken out first.

    Raises:
        LayershearError: a block of ``removed`` out of range; CheckpointError for a checkpoint
            refused by :func:`layershear.model.loading.load_model`; ScoringError when the model is not
            above chance on the calibration set (relevance undefined) or a log-likelihood is not finite.
    """
    from layershear.export.record import block_scores, calibration_dict, run_record
    from layershear.pipeline.stages import build_scorer
    from layershear.scoring.scorer import SearchPlan

    emit = on_event or (lambda _e: None)
    removed = sorted(set(removed))
    calibration = draw_calibration(calib, data, emit)
    hf_model, tokenizer, source = load_for_job(model, tokenizer, emit, dtype=dtype, device=device, revision=revision,
                                          trust_remote_code=trust_remote_code)
    scorer = build_scorer(hf_model, tokenizer, calibration.items, batch_size=batch_size, max_length=max_length,
                          acc_norm=acc_norm, add_bos=add_bos, engine=engine, on_progress=EngineProgress(emit))
    bad = [b for b in removed if not 0 <= b < scorer.num_blocks]
    if bad:
        raise LayershearError(f"--remove {bad} out of range: the model has blocks 0..{scorer.num_blocks - 1}")
    total = scorer.expect(SearchPlan(parents=1, models=1 + scorer.num_blocks - len(removed)))
    for line in scorer.describe():
        emit(PruneEvent("info", line))
    emit(PruneEvent("stage", "scoring", total=total))
    scores = tuple(scorer.score_blocks(removed))
    parent = scorer.accuracy(removed)
    measures = scorer.measures_by_task()
    record = run_record(command=command, settings={"acc_norm": acc_norm, "removed": removed, "dtype": dtype},
                        model={"source": source, "num_blocks": scorer.num_blocks},
                        calibration=calibration_dict(calibration, measures=measures, num_tokens=scorer.engine.num_tokens),
                        full={"accuracy": parent.accuracy, "random": parent.random,
                              "accuracy_by_task": parent.accuracy_by_task},
                        blocks=block_scores(scores))
    return ScoreRun(scores, parent, record)
