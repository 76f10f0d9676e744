#!/usr/bin/env python
"""Block-streamed (layer-major) scoring against in-memory scoring on one real model, the same greedy job.

Each mode runs in a fresh child process, so that its memory is its own:

- ``memory``: the model loaded whole (``layershear.model.loading.load_model``), the default fast engine;
- ``streamed``: embeddings, final norm and LM head loaded, the blocks streamed from the memory-mapped
  safetensors shards one at a time (``--placement streamed``), hidden states in memory;
- ``spilled``: streamed, and the hidden states between blocks spilled to memory-mapped files in a
  temporary folder (the plan ``disk``, which a job takes when no memory holds one model's states;
  here forced, with the same sweeps as ``streamed``).

Prints for each mode the blocks removed, wall seconds, block-tokens, the weights resident (all of
them, or the non-block tensors plus the most block weights the streamer held at once, counted), the
process's anonymous resident memory (``RssAnon`` from /proc: after loading, and its peak sampled at
every block load and after the job) and its peak resident set (``VmHWM``, which also counts the
shards' file pages the memory map touched), then the ratios to ``memory`` and the largest
log-likelihood difference to ``memory`` over every model both scored.

    python scripts/bench_streamed.py models/smollm2-135m-instruct --calib arc_easy:32 --num-remove 3 \
        --json docs/bench/cpu/streamed-smollm2.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def child(args: argparse.Namespace) -> None:
    import torch

    from layershear.inputs import DataSource
    from layershear.model.arch import decoder_blocks
    from layershear.model.devices import resolve_dtype
    from layershear.model.loading import load_model
    from layershear.model.streaming import streamed_model
    from layershear.pipeline.run import draw_calibration
    from layershear.scoring.scorer import Scorer
    from layershear.search import GreedyPruner

    torch.manual_seed(0)
    calibration = draw_calibration(args.calib, DataSource("local", None), lambda _e: None)
    cpu = torch.device("cpu")
    dtype = resolve_dtype(args.dtype, cpu)
    peak = {"anon": 0}

    def sample(_block: int = -1) -> None:
        peak["anon"] = max(peak["anon"], _status("RssAnon"))

    if args.mode == "memory":
        model, tokenizer = load_model(args.model, dtype=dtype, device=cpu)
        extra = {}
    else:
        from transformers import AutoTokenizer

        model, shards = streamed_model(args.model, dtype=dtype, device=cpu)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        extra = {"weights": shards}
    loaded_anon = _status("RssAnon")
    sample()
    scorer = Scorer(model, tokenizer, calibration.items, add_bos=args.add_bos, **extra)
    if args.mode != "memory":
        scorer.engine.on_load = sample
    if args.mode == "spilled":
        import dataclasses

        spill = tempfile.mkdtemp(prefix="layershear-bench-spill-")
        scorer.engine.stream_plan = dataclasses.replace(scorer.engine.stream_plan, where="disk", spill_dir=spill)
    started = time.perf_counter()
    result = GreedyPruner(scorer).prune(args.num_remove)
    seconds = time.perf_counter() - started
    sample()
    if args.mode == "spilled":
        import shutil

        shutil.rmtree(spill)
    blocks = decoder_blocks(model)
    block_bytes = sum(p.numel() for p in blocks[0].parameters()) * torch.finfo(dtype).bits // 8
    block_ids = {id(p) for p in blocks.parameters()}
    other_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in block_ids)
    engine = scorer.engine
    resident = other_bytes + (engine.peak_block_bytes if args.mode != "memory" else len(blocks) * block_bytes)
    lls = {}
    parents = [frozenset(result.removed[:d]) for d in range(len(result.removed))]
    for parent in parents:
        for b in range(len(blocks)):
            if b not in parent and engine.is_scored(parent | {b}):
                lls[",".join(map(str, sorted(parent | {b})))] = scorer.accuracy(parent | {b}).loglikelihoods
    torch.save(lls, args.out.with_suffix(".pt"))
    row = {"mode": args.mode, "removed": list(result.removed), "seconds": round(seconds, 3),
           "block_tokens": engine.stats.block_tokens, "num_blocks": len(blocks), "block_weight_bytes": block_bytes,
           "non_block_weight_bytes": other_bytes, "resident_weight_bytes": resident,
           "rss_anon_after_load": loaded_anon, "rss_anon_peak": peak["anon"], "vm_hwm": _status("VmHWM"),
           "relevances": [[c.relevance for c in step.candidates] for step in result.steps]}
    if args.mode != "memory":
        row.update(engine.cost()["streamed"])
    args.out.write_text(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--num-remove", type=int, default=3)
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--add-bos", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--modes", default="memory,streamed,spilled", help="modes to run, memory first")
    ap.add_argument("--mode", choices=["memory", "streamed", "spilled"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode is not None:
        child(args)
        return

    import torch

    modes = args.modes.split(",")
    if modes[0] != "memory" or not set(modes) <= {"memory", "streamed", "spilled"}:
        ap.error("--modes: memory first, then any of streamed, spilled")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            out = Path(tmp) / f"{mode}.json"
            command = [sys.executable, __file__, args.model, "--calib", args.calib, "--num-remove", str(args.num_remove),
                       "--dtype", args.dtype, "--mode", mode, "--out", str(out)] + (["--add-bos"] if args.add_bos else [])
            subprocess.run(command, check=True)
            rows[mode] = json.loads(out.read_text())
            rows[mode]["lls"] = torch.load(out.with_suffix(".pt"))
    mem = rows["memory"]
    gib = 2**30
    print(f"{'mode':9} {'removed':>14} {'wall s':>8} {'block-tokens':>13} {'weights resident':>17} "
          f"{'RssAnon load':>13} {'RssAnon peak':>13} {'VmHWM':>8}")
    for row in rows.values():
        print(f"{row['mode']:9} {row['removed']!s:>14} {row['seconds']:8.2f} {row['block_tokens']:13,} "
              f"{row['resident_weight_bytes'] / gib:13.3f} GiB {row['rss_anon_after_load'] / gib:9.3f} GiB "
              f"{row['rss_anon_peak'] / gib:9.3f} GiB {row['vm_hwm'] / gib:5.2f} GiB")
    compared = {}
    for mode in modes[1:]:
        st = rows[mode]
        common = sorted(set(mem["lls"]) & set(st["lls"]))
        diff = max(float((mem["lls"][k] - st["lls"][k]).abs().max()) for k in common)
        compared[mode] = {"models_compared": len(common), "max_abs_loglikelihood_diff": diff,
                          "same_removed": mem["removed"] == st["removed"]}
        print(f"{mode}: same blocks removed: {mem['removed'] == st['removed']}; max |log-likelihood difference| "
              f"over {len(common)} models: {diff:.3g} nats")
        print(f"{mode}: peak block weights resident {st['peak_block_bytes']:,} bytes = "
              f"{st['peak_block_bytes'] / st['block_weight_bytes']:.2f} blocks of {st['block_weight_bytes']:,}; "
              f"{st['block_loads']} block loads in {st['sweeps']} sweeps; states on {st['where']}; fetching "
              f"{st['fetch_seconds']:.2f} s, waited {st['wait_seconds']:.2f} s")
        print(f"{mode} / memory: wall {st['seconds'] / mem['seconds']:.3f}x, block-tokens "
              f"{st['block_tokens'] / mem['block_tokens']:.3f}x, weights resident "
              f"{st['resident_weight_bytes'] / mem['resident_weight_bytes']:.3f}x, RssAnon peak "
              f"{st['rss_anon_peak'] / mem['rss_anon_peak']:.3f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"meta": {"model": args.model, "calib": args.calib, "num_remove": args.num_remove, "dtype": args.dtype,
                           "compared_to_memory": compared},
                  "rows": [{k: v for k, v in row.items() if k != "lls"} for row in rows.values()]}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
