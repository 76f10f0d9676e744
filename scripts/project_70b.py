#!/usr/bin/env python
"""A PROJECTION (not a measurement) of pruning a Llama-3-70B-shaped model with layershear on 1, 2 and 8 GPUs.

Inputs, each printed:
- the work: block-tokens of greedy removal of 25% and 50% of 80 blocks, counted by layershear's own
  formulas (``layershear.pipeline.plan``: the streamed engine's exact count and the in-memory fast
  engine's upper bound), times the padded tokens of one pass over the calibration set from a
  ``layershear plan --json`` file (mix10, laid out by layershear; the tokenizer is the planned model's);
- FLOPs per block-token: ``FlopModel`` of the 70B shape (public Llama-3-70B config values, built on
  the meta device), 2 x block parameters; attention and LM head FLOPs are left out (for rows of
  512 tokens they add about 1%);
- the compute rate: counted FLOPs / wall seconds of a measured GPU run in docs/bench (an H100 run of
  the 8B shape), assumed to hold for the 70B shape (same MFU);
- the weight fetch of a streamed sweep: block bytes (bf16) / ``--h2d-gbps`` (an assumed host-to-GPU
  rate, default 25 GB/s), overlapped with compute as the prefetch does;
- how many models share a sweep: ``plan_streaming`` (layershear's own rule) for one process's
  hidden states (its 1/G of the padded tokens x hidden x 2 bytes) in an 80 GB H100 (79.1 GiB as
  CUDA reports it) less the resident embeddings, head and two blocks; the extra sweeps are counted.

Placements: 70B in bf16 (141 GB) fits no single 80 GB H100, so 1 and 2 GPUs run one streamed process per
GPU (dividing the batches); 8 GPUs either split one model (a pipeline whose micro-batches are the
plan's calibration batches, all in flight: ``layershear.pipeline.plan.split_seconds``; transfers
between GPUs not counted) or run 8 streamed processes. The paper's figure for 50% on two H100s is 1.1-8.5 days.

    python scripts/project_70b.py --plan docs/bench/cpu/plan-mix10-smollm2.json \
        --rate docs/bench/h100/bench-512-fused.json --json docs/bench/projection-70b.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LLAMA3_70B = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", type=Path, required=True, help="a `layershear plan --json` file (padded tokens per pass)")
    ap.add_argument("--rate", type=Path, required=True, help="a scripts/bench_scoring.py JSON of a GPU run")
    ap.add_argument("--config", default="fast", help="the row of --rate to take the rate from")
    ap.add_argument("--h2d-gbps", type=float, default=25.0, help="assumed host-to-device copy rate, GB/s")
    ap.add_argument("--device-gib", type=float, default=79.1, help="GPU memory (an 80 GB H100: 79.1 GiB)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    import transformers as tf

    from layershear.engine.streamed import plan_streaming
    from layershear.engine.work import FlopModel
    from layershear.model.arch import meta_model
    from layershear.pipeline.plan import search_block_tokens, split_seconds, streamed_block_tokens

    plan = json.loads(args.plan.read_text())
    bench = json.loads(args.rate.read_text())
    row = next(r for r in bench["rows"] if r["config"] == args.config)
    rate = row["flops"] / row["seconds"]
    model = meta_model(tf.LlamaConfig(**LLAMA3_70B))
    flop = FlopModel.of(model)
    blocks = LLAMA3_70B["num_hidden_layers"]
    block_bytes = 2 * (flop.block_token // 2)                  # block_token = 2 x parameters; bf16 = 2 bytes each
    weight_bytes = sum(p.numel() for p in model.parameters()) * 2
    padded = plan["padded_tokens_per_pass"]
    fetch_s = block_bytes / (args.h2d_gbps * 1e9)
    print("PROJECTION, not a measurement.")
    print(f"work: {plan['calibration_docs']} calibration documents ({plan['source']}'s tokenizer), {padded:,} padded "
          f"tokens per pass")
    print(f"model: Llama-3-70B shape, {blocks} blocks, {weight_bytes / 1e9:.1f} GB in bf16, "
          f"{flop.block_token / 1e9:.2f} GFLOP per block-token")
    print(f"rate: {rate / 1e12:.0f} TFLOP/s counted / wall in {bench['meta']['device']} run ({args.rate}, "
          f"config {args.config}, MFU {rate / bench['meta']['matmul_flops_per_s']:.0%}), assumed for the 70B shape")
    print(f"fetch: {block_bytes / 1e9:.2f} GB per block at an assumed {args.h2d_gbps:.0f} GB/s = {fetch_s:.3f} s")
    out = {"projection": True, "inputs": {"plan": str(args.plan), "rate_file": str(args.rate), "config": args.config,
                                          "rate_flops_per_s": rate, "h2d_gbps_assumed": args.h2d_gbps,
                                          "padded_tokens_per_pass": padded, "batches": plan["batches"],
                                          "block_token_flops": flop.block_token,
                                          "weight_bytes": weight_bytes},
           "rows": []}
    non_block = weight_bytes - blocks * block_bytes
    free = args.device_gib * 2**30 - non_block - 2 * block_bytes
    per = {}
    for g in (1, 2, 8):
        state = padded * LLAMA3_70B["hidden_size"] * 2 // g
        per[g] = plan_streaming(state, blocks + 1, torch.device("cuda"), free=(int(free), 0))
        print(f"{g} GPU(s): {per[g].state_bytes / 1e9:.2f} GB of states per model and process -> "
              f"{per[g].models_per_sweep} models per sweep on the {per[g].where}")
    out["inputs"]["models_per_sweep"] = {g: p.models_per_sweep for g, p in per.items()}
    print(f"{'removed':>8} {'PFLOP (1 sweep/step)':>21} {'1 GPU':>8} {'2 GPUs':>8} {'8 GPUs':>8} "
          f"{'| 8 GPUs split (pipeline), fast engine bound':>45}")
    for share in (0.25, 0.5):
        k = round(share * blocks)
        days, work = {}, {}
        for g, p in per.items():
            tokens, loads = streamed_block_tokens(blocks, k, 1, padded, p.models_per_sweep)
            compute = tokens * flop.block_token / rate
            # one process per GPU on 1/G of the batches; each sweep fetches its blocks, overlapped
            days[g] = max(compute / g, loads * fetch_s) / 86400
            work[g] = {"block_tokens": tokens, "block_loads": loads}
        one_sweep = streamed_block_tokens(blocks, k, 1, padded)[0] * flop.block_token
        fast = search_block_tokens(blocks, k, 1, padded)[1]
        split8 = split_seconds(fast * flop.block_token / rate, 8, plan["batches"]) / 86400   # one model over 8 GPUs
        out["rows"].append({"removed_share": share, "num_remove": k, "streamed": work, "streamed_days": days,
                            "fast_bound_block_tokens": fast, "split_8_days": split8})
        print(f"{k:>5}/{blocks} {one_sweep / 1e15:21.0f} {days[1]:7.2f}d {days[2]:7.2f}d {days[8]:7.2f}d "
              f"{split8:44.2f}d")
    print("paper (two H100s, 50%): 1.1-8.5 days")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
