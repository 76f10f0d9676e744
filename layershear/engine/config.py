"""Switches of the log-likelihood engine (``--engine fast|reference``)."""

from __future__ import annotations

from dataclasses import dataclass

from layershear.errors import ScoringError


@dataclass(frozen=True)
class EngineConfig:
    """Switches of the scoring engine; each gives the same numbers with less work.

    ``scored_head``: the LM head (and its log-softmax) only on the scored positions, not on every
    position. ``skip_prefix``: cached-prefix block skipping within a greedy step (see
    :mod:`layershear.engine.prefix_cache`). ``share_context``: the choices of a question (and any prefix
    common to several questions) are computed once, in a prefix tree (see :mod:`layershear.engine.packing`).
    ``pack``: several sequences or trees share a row of ``row_tokens`` tokens, so padding is only a
    row's tail (None: the width of :data:`ROW_TOKENS` with the fewest FLOPs per pass, counted by
    :class:`layershear.engine.work.FlopModel`; wider rows waste less on padding but compute more masked attention; 0 =
    one tree per row).
    Without ``share_context`` and ``pack`` rows are lm-eval's: one right-padded request per row,
    batches sorted by length. ``step_reuse`` (with ``skip_prefix``, not with racing): candidate runs
    store their hidden state entering the blocks likely to be removed next, and a later step's
    candidate before the removed block starts after it from that state (see
    :mod:`layershear.engine.step_reuse`).
    ``stack_tokens`` (with ``skip_prefix``, a packed layout and every block input cached, not in
    racing's slices): the candidates of a step share each forward pass, stacked along the batch
    dimension, up to about this many tokens per pass (0 = one candidate per pass; with checkpointed
    caches candidates run one at a time; see :mod:`layershear.engine.stacking`). ``fused_kernels``: RMSNorm
    in one ``F.rms_norm`` kernel and rotary embeddings in three kernels instead of Hugging Face's
    eager element-wise steps, where checked equal (see :mod:`layershear.engine.fused`).
    """

    scored_head: bool = True
    skip_prefix: bool = True
    share_context: bool = True
    pack: bool = True
    row_tokens: int | None = None   # None: the width in ROW_TOKENS with the fewest counted FLOPs; 0: a row per tree
    step_reuse: bool = True
    stack_tokens: int = 16384
    fused_kernels: bool = True

    @property
    def packed(self) -> bool:
        """Whether requests are laid out in tries/packed rows with a custom attention mask."""
        return self.share_context or self.pack


#: ``reference``: every candidate runs a full forward over every request with the LM head at every
#: position (lm-eval's computation, the paper's N x T passes). ``fast``: all switches on.
ENGINES: dict[str, EngineConfig] = {
    "fast": EngineConfig(),
    "reference": EngineConfig(scored_head=False, skip_prefix=False, share_context=False, pack=False, step_reuse=False,
                        stack_tokens=0, fused_kernels=False),
}


ROW_TOKENS: tuple[int, ...] = (0, 256, 512, 1024, 2048)
"""Row widths tried when ``EngineConfig.row_tokens`` is None; 0 = one prefix tree per row (rows of similar
width batched together), which computes the least masked attention."""


def engine_config(engine: str | EngineConfig) -> EngineConfig:
    """``engine`` itself, or the :data:`ENGINES` entry it names.

    Raises:
        ScoringError: an unknown name.
    """
    if isinstance(engine, EngineConfig):
        return engine
    if engine not in ENGINES:
        raise ScoringError(f"Unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    return ENGINES[engine]
