#!/usr/bin/env python3
"""Run the same greedy pruning job with each scoring-engine configuration in one process and compare.

Prints, per configuration: forward passes, padded tokens, block-tokens (tokens x decoder blocks run),
LM-head positions, counted FLOPs, wall time, tokens/s, speed-up over the reference engine (FLOPs and
wall time), peak memory, and whether it removed the same blocks with the same relevances.

FLOPs are counted from the batch shapes (layershear.engine.FlopModel): 2 x (parameters of one
decoder block) per block-token, 4 x heads x head_dim per attention (query, key) pair and block
(the causal half for lm-eval rows, the full square for rows with a custom mask), and 2 x (LM-head
parameters) per LM-head position. The reference engine is lm-eval's computation (every candidate
runs every request, requests sorted by length, LM head at every position).

Example (CPU, the embedded demo model; about 5 minutes on 2 cores):
    python scripts/bench_scoring.py --model models/smollm2-135m-instruct --dtype bf16 \\
        --calib arc_easy:16,hellaswag:8,piqa:16,openbookqa:16 --num-drop 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from layershear.arch import decoder_blocks
from layershear.benchmarks import find_data_dir
from layershear.calibration import build_calibration
from layershear.devices import resolve_device, resolve_dtype
from layershear.engine import Engine, FlopModel
from layershear.model_io import load_model
from layershear.recipe import load_calibration
from layershear.scorer import Scorer
from layershear.search import GreedyPruner, num_blocks_to_drop

_OFF = Engine(scored_head=False, skip_prefix=False, share_context=False, pack=False)
CONFIGS = {
    "reference": _OFF,
    "+scored head only": dataclasses.replace(_OFF, scored_head=True),
    "+prefix skip only": dataclasses.replace(_OFF, skip_prefix=True),
    "+shared context only": dataclasses.replace(_OFF, share_context=True),
    "+packing only": dataclasses.replace(_OFF, pack=True),
    "fast (all)": Engine(),
}


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (device)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"


def run(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    model, tokenizer = load_model(args.model, dtype=resolve_dtype(args.dtype, device), device=device)
    calib = build_calibration(load_calibration(args.calib), data_dir=find_data_dir())
    blocks = decoder_blocks(model)
    flop_model = FlopModel.of(model)
    num_drop = args.num_drop or num_blocks_to_drop(len(blocks), ratio=args.ratio)
    rows = []
    for name, engine in CONFIGS.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        scorer = Scorer(model, tokenizer, calib.items, batch_size=args.batch_size, engine=engine)
        start = time.perf_counter()
        result = GreedyPruner(scorer).prune(num_drop)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        s = scorer.stats
        rows.append({"config": name, "engine": dataclasses.asdict(engine), "seconds": seconds,
                     "flops": flop_model.flops(s), "padding_fraction": s.padding_fraction, "row_tokens": scorer.row_tokens,
                     "removed": list(result.removed),
                     "relevances": [[c.relevance for c in st.candidates] for st in result.steps],
                     "peak_memory": _peak_memory(device), **dataclasses.asdict(s)})
        print(f"{name}: {seconds:.1f} s, removed {list(result.removed)}", file=sys.stderr)
    ref = rows[0]
    for row in rows:
        row["flops_ratio"] = ref["flops"] / row["flops"]
        row["wall_ratio"] = ref["seconds"] / row["seconds"]
        row["tokens_per_s"] = row["padded_tokens"] / row["seconds"]
        row["same_blocks"] = row["removed"] == ref["removed"]
        row["max_relevance_diff"] = max(abs(a - b) for ra, rb in zip(row["relevances"], ref["relevances"])
                                        for a, b in zip(ra, rb))
    meta = {"model": args.model, "dtype": args.dtype, "device": str(device), "calib": args.calib,
            "calibration_docs": len(calib.items), "num_blocks": len(blocks), "num_drop": num_drop,
            **dataclasses.asdict(flop_model)}
    return [meta, *rows]


def render(meta: dict, rows: list[dict]) -> Table:
    table = Table(title=f"Scoring engines on the same greedy job: {meta['model']} ({meta['num_blocks']} blocks, "
                        f"remove {meta['num_drop']}), {meta['calibration_docs']} calibration docs, "
                        f"{meta['dtype']} on {meta['device']}")
    cols = ["config", "passes", "tokens", "padding", "block-tok", "head pos", "GFLOP", "wall s", "tok/s",
            "FLOP x", "wall x", "peak mem", "same blocks", "max |Δrel|"]
    for col in cols:
        table.add_column(col, justify="left" if col == "config" else "right")
    for r in rows:
        table.add_row(r["config"], str(r["forward_passes"]), f"{r['padded_tokens']:,}", f"{r['padding_fraction']:.1%}",
                      f"{r['block_tokens']:,}",
                      f"{r['head_positions']:,}", f"{r['flops'] / 1e9:,.0f}", f"{r['seconds']:.1f}",
                      f"{r['tokens_per_s']:,.0f}", f"{r['flops_ratio']:.2f}", f"{r['wall_ratio']:.2f}",
                      r["peak_memory"], "yes" if r["same_blocks"] else "NO", f"{r['max_relevance_diff']:.2g}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--calib", default="arc_easy:16,hellaswag:8,piqa:16,openbookqa:16")
    parser.add_argument("--num-drop", type=int, default=None, help="blocks to remove (default: --ratio)")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write every number to this file")
    args = parser.parse_args()
    meta, *rows = run(args)
    Console(width=200).print(render(meta, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
