"""The work a log-likelihood engine does, counted from batch shapes (for benchmarks and layershear.json)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from layershear.engine.config import EngineConfig
from layershear.engine.packing import PackedBatch
from layershear.engine.requests import EncodedRequest


@dataclass(frozen=True)
class BatchShape:
    """One forward pass: ``rows`` x ``width`` tokens computed, of which ``real_tokens`` are not
    padding; ``head_positions`` go through the LM head; ``attention_pairs`` (query, key) scores are
    computed per block (causal half for lm-eval rows, the full square for rows with a custom mask)."""

    rows: int
    width: int
    real_tokens: int
    head_positions: int
    attention_pairs: int


@dataclass
class EngineStats:
    """Work done by a Scorer, counted from the batch shapes (for benchmarks and layershear.json).

    ``block_tokens`` sums, over forward passes, padded tokens x decoder blocks run, and
    ``attention_pairs`` (query, key) pairs x blocks run; ``head_positions`` counts the positions
    that went through the LM head; ``cache_bytes`` is the largest set of cached block inputs (and
    step-reuse states) held at once; ``reused_runs`` counts candidates that started from a state
    stored by an earlier candidate run and so ran fewer blocks (:mod:`layershear.engine.step_reuse`);
    ``reused_prefixes`` counts steps whose prefix cache came whole from the removed block's run;
    ``stacked_runs`` counts candidates that shared stacked passes (:mod:`layershear.engine.stacking`; a
    stacked pass counts once in ``forward_passes``); ``shared_starts`` counts models outside a parent's
    children (a search's arbitrary removal sets) that started from a cached block input they share
    (:meth:`layershear.engine.loglikelihood.LoglikelihoodEngine.run_for`). ``padding_fraction`` = 1 - real_tokens / padded_tokens.
    """

    forward_passes: int = 0
    padded_tokens: int = 0
    real_tokens: int = 0
    block_tokens: int = 0
    attention_pairs: int = 0
    head_positions: int = 0
    cache_bytes: int = 0
    reused_runs: int = 0
    reused_prefixes: int = 0
    stacked_runs: int = 0
    shared_starts: int = 0

    def count(self, shapes: Sequence[BatchShape], *, blocks_run: int, passes: bool = True) -> None:
        """Add one pass over the calibration set: ``shapes`` from :func:`batch_shape`, ``blocks_run`` blocks
        (``passes=False``: the forward passes are counted by the caller, as for stacked candidates)."""
        for s in shapes:
            self.forward_passes += passes
            self.padded_tokens += s.rows * s.width
            self.real_tokens += s.real_tokens
            self.block_tokens += s.rows * s.width * blocks_run
            self.attention_pairs += s.attention_pairs * blocks_run
            self.head_positions += s.head_positions

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass(frozen=True)
class FlopModel:
    """Multiply-add FLOPs (2 per MAC) of the work counted in :class:`EngineStats`.

    ``block_token``: 2 x parameters of one decoder block (every matmul of the block, per token);
    ``attention_pair``: 4 x heads x head_dim (QK^T and attention x V, per query-key pair and block);
    ``head_position``: 2 x LM-head parameters. Norms, activations and embeddings are left out.
    """

    block_token: int
    attention_pair: int
    head_position: int

    @classmethod
    def of(cls, model) -> FlopModel:
        from layershear.model.arch import decoder_blocks

        config = getattr(model.config, "text_config", None) or model.config
        heads = getattr(config, "num_attention_heads", None) or config.n_head
        hidden = getattr(config, "hidden_size", None) or config.n_embd
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        return cls(block_token=2 * sum(p.numel() for p in decoder_blocks(model)[0].parameters()),
                   attention_pair=4 * heads * head_dim,
                   head_position=2 * sum(p.numel() for p in model.get_output_embeddings().parameters()))

    def flops(self, stats: EngineStats) -> int:
        return (self.block_token * stats.block_tokens + self.attention_pair * stats.attention_pairs
                + self.head_position * stats.head_positions)

    def pass_flops(self, shapes: Sequence[BatchShape], num_blocks: int) -> int:
        """FLOPs of one full-model pass over batches of these shapes."""
        stats = EngineStats()
        stats.count(shapes, blocks_run=num_blocks)
        return self.flops(stats)


def batch_shape(batch: Sequence[EncodedRequest] | PackedBatch, max_length: int, engine: EngineConfig) -> BatchShape:
    """The :class:`BatchShape` of one batch as ``loglik``/``packing`` build it."""
    if isinstance(batch, PackedBatch):
        rows, width = len(batch.rows), batch.width
        scored = len(set(zip(batch.score_rows, batch.score_cols)))      # a shared position goes through the head once
        return BatchShape(rows, width, batch.real_tokens, scored if engine.scored_head else rows * width,
                          rows * width * width)
    lengths = [min(r.num_tokens, max_length) for r in batch]
    width = max(lengths)
    scored = sum(min(len(r.continuation_ids), length) for r, length in zip(batch, lengths))
    return BatchShape(len(batch), width, sum(lengths), scored if engine.scored_head else len(batch) * width,
                      len(batch) * width * (width + 1) // 2)
