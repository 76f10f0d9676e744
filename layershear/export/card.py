"""Hugging Face model card (README.md) for a checkpoint with removed blocks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from layershear.scoring.metric_names import METRIC_TITLES

PAPER_TITLE = "Rethinking Layer Relevance in Large Language Models Beyond Cosine Similarity"
PAPER_URL = "https://arxiv.org/abs/2605.14075"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass(frozen=True)
class RemovedBlock:
    """One removed block, in removal order.

    Attributes:
        block_idx: Index of the block in the ORIGINAL model.
        relevance: Its relevance when it was removed; ``None`` when accuracy did not choose it.
        accuracy: Calibration accuracy of the model after removing it; ``None`` if not measured.
    """

    block_idx: int
    relevance: float | None
    accuracy: float | None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _is_hub_id(name: str) -> bool:
    """The Hub validates ``base_model``; a local path there would be flagged, so it is left out."""
    return bool(_HUB_ID.fullmatch(name)) and not Path(name).exists()


def _chosen_by(metric: str | None, strategy: str) -> str:
    if metric is None:
        return "The blocks were given by hand (`layershear export --remove`); no score chose them."
    if metric == "accuracy":
        return (f"Blocks were chosen by accuracy-based relevance, {strategy} search. The method follows "
                f"*{PAPER_TITLE}* ([arXiv 2605.14075]({PAPER_URL})), which measures a block's relevance by the task "
                "accuracy lost when it is removed, instead of by the cosine similarity of its input and output.")
    return (f"Blocks were chosen by the `{metric}` baseline metric ({strategy}): "
            f"{METRIC_TITLES.get(metric, metric)}; not by accuracy-based relevance, so the table has no relevances.")


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_model_card(
    *,
    base_model: str,
    num_blocks: int,
    removed: Sequence[RemovedBlock],
    calibration: str | None,
    command: str,
    version: str,
    metric: str | None = "accuracy",
    strategy: str = "greedy",
) -> str:
    """Render the README.md of a pruned checkpoint.

    Args:
        base_model: Hub id or path of the source model (front matter ``base_model``).
        num_blocks: Number of decoder blocks in the source model.
        removed: Removed blocks in removal order.
        calibration: One-line description of the calibration recipe; ``None`` when blocks were given by hand.
        command: The command line that produced the checkpoint.
        version: layershear version.
        metric: The metric that chose the blocks (``accuracy`` or a baseline of
            :data:`layershear.scoring.metric_names.METRIC_TITLES`); ``None`` when they were given by hand.
        strategy: How the metric was used: ``greedy``, ``beam(W)``, ``one-shot`` or ``iterative``.

    Returns:
        Markdown text with YAML front matter (``base_model`` when it is a Hub id, ``library_name:
        transformers``, ``tags: [layershear, pruned]``).
    """
    kept = num_blocks - len(removed)
    rows = "\n".join(
        f"| {step} | {b.block_idx} | {_fmt(b.relevance)} | {_fmt(b.accuracy)} |" for step, b in enumerate(removed, 1)
    )
    order = ", ".join(str(b.block_idx) for b in removed) or "none"
    hub = _is_hub_id(base_model)
    link = f"[{base_model}](https://huggingface.co/{base_model})" if hub else f"`{base_model}`"
    front = f"base_model: {_yaml_str(base_model)}\n" if hub else ""
    return f"""---
{front}library_name: transformers
tags:
- layershear
- pruned
---

# {base_model.rstrip('/').split('/')[-1]}, {len(removed)} of {num_blocks} blocks removed

This model is {link} with {len(removed)} whole decoder block{'' if len(removed) == 1 else 's'} (layers) removed by layershear;
{kept} of {num_blocks} blocks remain. The remaining weights are unchanged (no fine-tuning).
{_chosen_by(metric, strategy)}

Load it like any other causal LM with `AutoModelForCausalLM.from_pretrained`.

## Removed blocks (in removal order)

Block indices refer to the original model. Accuracy is the calibration accuracy after that removal.

| step | block | relevance | accuracy |
|-----:|------:|----------:|---------:|
{rows}

Removal order: {order}.

## Calibration

{calibration or "None: the blocks were given by hand."}

## Reproduce

layershear {version}:

```bash
{command}
```
"""
