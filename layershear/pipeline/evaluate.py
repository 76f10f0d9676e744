"""The ``eval`` job: held-out acc / acc_norm of a model, lm-eval style, on documents no calibration used."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from layershear.data.benchmarks import MCItem
from layershear.engine.config import EngineConfig
from layershear.pipeline.run import EventFn, load_for_job
from layershear.scoring.evaluation import TaskResult


def evaluate_model(model, tokenizer=None, *, tasks: Mapping[str, Sequence[MCItem]], removed: Iterable[int] = (),
                   name: str = "", batch_size: int = 16, max_length: int | None = None, add_bos: bool = False,
                   engine: str | EngineConfig = "fast", dtype: str = "auto", device: str = "auto",
                   revision: str | None = None, trust_remote_code: bool = False,
                   on_event: EventFn | None = None) -> tuple[TaskResult, ...]:
    """Every measure of every task in ``tasks`` (:func:`layershear.inputs.eval_documents`) for
    ``model`` (a Hub id, a folder or a loaded model) without ``removed``, one progress stage per task.
    ``trust_remote_code`` as :func:`layershear.model.loading.load_model`.

    Raises:
        UnsupportedModelError, CheckpointError: as :func:`layershear.inputs.model_and_tokenizer`.
        ScoringError: a log-likelihood is NaN or infinite.
    """
    from layershear.pipeline.stages import evaluate_removed

    emit = on_event or (lambda _e: None)
    hf_model, tokenizer, _ = load_for_job(model, tokenizer, emit, dtype=dtype, device=device, revision=revision,
                                          trust_remote_code=trust_remote_code)
    return evaluate_removed(hf_model, tokenizer, tasks, tuple(removed), name=name or str(model), emit=emit,
                            batch_size=batch_size, max_length=max_length, add_bos=add_bos, engine=engine)
