#!/usr/bin/env python3
"""Run the same greedy pruning job with each scoring-engine configuration in one process and compare.

Prints, per configuration: forward passes, padded tokens, block-tokens (tokens x decoder blocks run),
LM-head positions, counted FLOPs, wall time, tokens/s, speed-up over the reference engine (FLOPs and
wall time), peak memory, and whether it removed the same blocks with the same relevances.

FLOPs are counted from the batch shapes (layershear.engine.config.FlopModel): 2 x (parameters of one
decoder block) per block-token, 4 x heads x head_dim per attention (query, key) pair and block
(the causal half for lm-eval rows, the full square for rows with a custom mask), and 2 x (LM-head
parameters) per LM-head position. The reference engine is lm-eval's computation (every candidate
runs every request, requests sorted by length, LM head at every position).

With ``--random-shape llama3-8b`` the model is a randomly initialised Llama-3-8B-shaped network (no
download; speed does not depend on the weights) and requests are tokenised with the tokenizer of
``--model``, so sequence lengths and choice counts come from the real benchmark data (a random model
is at chance, so each document's gold answer is set to the model's own choice on 3 of 4 documents
to keep relevance defined; its accuracies mean nothing, the work is the real job's). On CUDA the
table adds model-FLOP utilisation: counted FLOPs / wall time over the bf16 matmul rate measured in
the same process (8192 x 8192 x 8192 matmuls).

Examples:
    # CPU, the embedded demo model (about 15 minutes on 2 cores)
    python scripts/bench_scoring.py --model models/smollm2-135m-instruct --dtype bf16 \\
        --calib arc_easy:16,hellaswag:8,piqa:16,openbookqa:16 --num-remove 2
    # GPU, Llama-3-8B shape, 25% greedy removal, reference vs fast only
    python scripts/bench_scoring.py --random-shape llama3-8b --dtype bf16 --ratio 0.25 \\
        --calib arc_easy:8,arc_challenge:8,boolq:8,hellaswag:8,openbookqa:8,piqa:8,winogrande:8,mmlu:8 \\
        --configs reference,fast
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

from layershear.data.benchmarks import find_data_dir
from layershear.data.calibration import build_calibration
from layershear.data.recipes import load_calibration
from layershear.engine.compile import compile_blocks
from layershear.engine.config import ENGINES, EngineConfig
from layershear.engine.work import FlopModel
from layershear.model.arch import decoder_blocks
from layershear.model.devices import resolve_device, resolve_dtype
from layershear.model.loading import load_model, resolve_checkpoint
from layershear.scoring.racing import RaceSettings
from layershear.scoring.scorer import Scorer
from layershear.search import GreedyPruner, num_to_remove

_OFF = ENGINES["reference"]
CONFIGS = {
    "reference": _OFF,
    "+scored-head": dataclasses.replace(_OFF, scored_head=True),
    "+prefix-skip": dataclasses.replace(_OFF, skip_prefix=True),
    "+shared-context": dataclasses.replace(_OFF, share_context=True),
    "+packing": dataclasses.replace(_OFF, pack=True),   # several requests per row, no shared prefixes
    "+fused": dataclasses.replace(_OFF, fused_kernels=True),   # RMSNorm and rotary in fewer kernels (layershear.engine.fused)
    "fast-no-reuse": EngineConfig(step_reuse=False),   # fast without layershear.engine.step_reuse
    "fast-no-stack": EngineConfig(stack_tokens=0),     # fast with one candidate per pass (no layershear.engine.stacking)
    "fast-no-fuse": EngineConfig(fused_kernels=False),   # fast with Hugging Face's eager RMSNorm and rotary
    "fast": EngineConfig(),
    "fast+race": EngineConfig(),   # with --race-delta / --race-slices (layershear.scoring.racing)
    "fast+compile": EngineConfig(),  # decoder blocks' parts compiled (layershear.engine.compile), compile time included;
                               # compiles the model in place, so list it last
}


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (device)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"


SHAPES = {
    # meta-llama/Meta-Llama-3-8B config.json
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                      rms_norm_eps=1e-5),
    # a small shape for trying the script out on a CPU
    "tiny": dict(vocab_size=49152, hidden_size=256, intermediate_size=688, num_hidden_layers=8, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=8192),
}


def _random_model(shape: str, dtype: torch.dtype, device: torch.device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)      # built in dtype on the device: an 8B model never exists in fp32
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape], attn_implementation="sdpa"))
    finally:
        torch.set_default_dtype(default)
    return model.to(dtype).eval()


def model_and_tokenizer(name: str, random_shape: str | None, dtype: torch.dtype, device: torch.device):
    """``(model, tokenizer)`` of ``name``; with ``random_shape`` a random model of that shape and only the
    tokenizer of ``name``."""
    if random_shape is None:
        return load_model(name, dtype=dtype, device=device)
    from transformers import AutoTokenizer

    return _random_model(random_shape, dtype, device), AutoTokenizer.from_pretrained(resolve_checkpoint(name))


def _rig_golds(model, tokenizer, items, batch_size):
    """A random model is at chance, where relevance is undefined and greedy search stops: set each
    document's gold answer to the model's own choice on 3 of 4 documents, so that the search runs
    its full course. The work (tokens, choices, lengths) is the real data's; the accuracies mean
    nothing. The picks come from the reference engine, so that a change to the fast engine (whose
    bf16 rounding differs) does not change the job it is measured on."""
    from layershear.scoring.accuracy import item_scores

    scorer = Scorer(model, tokenizer, items, batch_size=batch_size, engine=_OFF)
    picks = [int(s.argmax()) for s in item_scores(items, scorer.engine.run(), measures=scorer.measures)]
    return [dataclasses.replace(it, gold=p if i % 4 else (p + 1) % it.num_choices)
            for i, (it, p) in enumerate(zip(items, picks))]


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """Measured dense matmul FLOP/s at ``dtype`` on ``device`` (n x n x n, after a warm-up)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


# kernel / op name fragments -> category, first match wins (CUDA kernel names, else aten op names on CPU)
_CATEGORIES = (
    ("attention", ("fmha", "flash", "attention", "sdpa")),   # before matmul: fmha_cutlassF_* kernels
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "aten::mm", "aten::addmm", "aten::bmm")),
    ("norm", ("rms_norm", "layer_norm")),
    ("softmax / logsumexp", ("softmax", "logsumexp")),
    ("copy / cat / index", ("copy", "cat", "memcpy", "memset", "index", "gather", "roll")),
    ("element-wise", ("elementwise", "vectorized", "reduce", "aten::mul", "aten::add", "aten::pow", "aten::mean",
                      "aten::rsqrt", "aten::silu", "aten::neg", "aten::sub", "aten::div")),
)


def kernel_categories(events, device_kernels: bool) -> dict[str, float]:
    """Self time (microseconds) per category of ``torch.profiler`` ``key_averages()`` rows: device
    kernels on CUDA (rows with device time and no CPU time), aten ops on CPU."""
    out: dict[str, float] = {}
    for e in events:
        us = e.self_device_time_total if device_kernels else e.self_cpu_time_total
        if us <= 0 or (device_kernels and e.self_cpu_time_total > 0) or (not device_kernels and not e.key.startswith("aten::")):
            continue
        name = e.key.lower()
        cat = next((c for c, frags in _CATEGORIES if any(f in name for f in frags)), "other")
        out[cat] = out.get(cat, 0.0) + us
    return out


def profile(scorer: Scorer, blocks: list[int], rows: int = 20) -> str:
    """Kernel-time table (torch.profiler) of one fresh evaluation of the candidates ``blocks``, then
    the share of kernel time per category (matmul, attention, norm, element-wise, ...) and the
    kernel time against the wall time of the profiled evaluation (the rest: GPU idle)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    scorer.accuracy(())                         # the parent's block inputs, outside the profile
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        scorer.children((), blocks)
        if cuda:
            torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    events = prof.key_averages()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    lines = [events.table(sort_by=key, row_limit=rows, max_name_column_width=60)]
    cats = kernel_categories(events, device_kernels=cuda)
    total = sum(cats.values())
    lines.append(f"{'kernel' if cuda else 'aten op'} time by category ({total / 1e3:,.1f} ms; "
                 f"wall {wall_us / 1e3:,.1f} ms, so {'busy' if cuda else 'in ops'} {total / wall_us:.0%}):")
    lines += [f"  {c:<22} {us / total:6.1%}" for c, us in sorted(cats.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer = model_and_tokenizer(args.model, args.random_shape, dtype, device)
    calib_items = build_calibration(load_calibration(args.calib), data_dir=find_data_dir()).items
    if args.random_shape:
        calib_items = _rig_golds(model, tokenizer, calib_items, args.batch_size)
    blocks = decoder_blocks(model)
    flop_model = FlopModel.of(model)
    num_remove = args.num_remove or num_to_remove(len(blocks), ratio=args.ratio)
    rows = []
    rate = matmul_rate(device, dtype) if device.type == "cuda" else None
    names = args.configs.split(",")
    if any(n not in CONFIGS for n in names):
        sys.exit(f"--configs: a comma-separated subset of {', '.join(CONFIGS)}; got {args.configs!r}")
    if "fast+compile" in names[:-1]:
        sys.exit("--configs: fast+compile compiles the model in place; list it last")
    configs = {name: CONFIGS[name] for name in names}
    if args.stack_tokens is not None:
        configs = {name: dataclasses.replace(e, stack_tokens=args.stack_tokens) if e.stack_tokens else e
                   for name, e in configs.items()}
    for name, engine in configs.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        race = RaceSettings(delta=args.race_delta, slices=args.race_slices) if name == "fast+race" else None
        scorer = Scorer(model, tokenizer, calib_items, batch_size=args.batch_size, engine=engine, race=race)
        start = time.perf_counter()
        if name == "fast+compile":
            compile_blocks(model)       # lazily: the compile happens inside the timed job
        result = GreedyPruner(scorer).prune(num_remove)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        s = scorer.engine.stats
        rows.append({"config": name, "engine": dataclasses.asdict(engine), "seconds": seconds,
                     "flops": flop_model.flops(s), "padding_fraction": s.padding_fraction, "row_tokens": scorer.engine.row_tokens,
                     "removed": list(result.removed),
                     # relevances of candidates racing eliminated early are estimates: compared as None
                     "relevances": [[c.relevance if c.exact else None for c in st.candidates] for st in result.steps],
                     "sequences_scored": sum(c.sequences for st in result.steps for c in st.candidates),
                     "sequences_exact": sum(len(scorer.engine.requests) for st in result.steps for _ in st.candidates),
                     "peak_memory": _peak_memory(device), "cache_plan": scorer.engine.cache_plan and scorer.engine.cache_plan.describe(),
                     "mfu": flop_model.flops(s) / seconds / rate if rate else None, **dataclasses.asdict(s)})
        print(f"{name}: {seconds:.1f} s, removed {list(result.removed)}", file=sys.stderr)
    if args.profile:
        last = list(configs.values())[-1]
        scorer = Scorer(model, tokenizer, calib_items, batch_size=args.batch_size, engine=last)
        print(f"profile of {names[-1]}, candidates 0, {len(blocks) // 2}, {len(blocks) - 1}:")
        print(profile(scorer, [0, len(blocks) // 2, len(blocks) - 1]))
    ref = rows[0]
    for row in rows:
        row["flops_ratio"] = ref["flops"] / row["flops"]
        row["wall_ratio"] = ref["seconds"] / row["seconds"]
        row["tokens_per_s"] = row["padded_tokens"] / row["seconds"]
        row["same_blocks"] = row["removed"] == ref["removed"]
        row["max_relevance_diff"] = max(abs(a - b) for ra, rb in zip(row["relevances"], ref["relevances"])
                                        for a, b in zip(ra, rb) if a is not None and b is not None)
    meta = {"model": f"random {args.random_shape}" if args.random_shape else args.model, "dtype": args.dtype,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device), "calib": args.calib,
            "matmul_flops_per_s": rate,
            "calibration_docs": len(calib_items), "num_blocks": len(blocks), "num_remove": num_remove,
            **dataclasses.asdict(flop_model)}
    return [meta, *rows]


def render(meta: dict, rows: list[dict]) -> Table:
    table = Table(title=f"Scoring engines on the same greedy job: {meta['model']} ({meta['num_blocks']} blocks, "
                        f"remove {meta['num_remove']}), {meta['calibration_docs']} calibration docs, "
                        f"{meta['dtype']} on {meta['device']}")
    cols = ["config", "passes", "tokens", "padding", "block-tok", "head pos", "GFLOP", "wall s", "tok/s",
            "FLOP x", "wall x", "MFU", "peak mem", "same blocks", "max |Δrel|", "candidate seqs"]
    for col in cols:
        table.add_column(col, justify="left" if col == "config" else "right")
    for r in rows:
        table.add_row(r["config"], str(r["forward_passes"]), f"{r['padded_tokens']:,}", f"{r['padding_fraction']:.1%}",
                      f"{r['block_tokens']:,}",
                      f"{r['head_positions']:,}", f"{r['flops'] / 1e9:,.0f}", f"{r['seconds']:.1f}",
                      f"{r['tokens_per_s']:,.0f}", f"{r['flops_ratio']:.2f}", f"{r['wall_ratio']:.2f}",
                      f"{r['mfu']:.0%}" if r["mfu"] else "-",
                      r["peak_memory"], "yes" if r["same_blocks"] else "NO", f"{r['max_relevance_diff']:.2g}",
                      f"{r['sequences_scored'] / r['sequences_exact']:.0%}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--calib", default="arc_easy:16,hellaswag:8,piqa:16,openbookqa:16")
    parser.add_argument("--num-remove", type=int, default=None, help="blocks to remove (default: --ratio)")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write every number to this file")
    parser.add_argument("--random-shape", choices=sorted(SHAPES), default=None,
                        help="score a randomly initialised model of this shape (tokenizer from --model)")
    parser.add_argument("--configs", default=",".join(c for c in CONFIGS if c not in ("fast+race", "fast+compile")),
                        help=f"comma-separated subset of: {', '.join(CONFIGS)}; ratios are against the first")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler kernel table of the last config on three candidates")
    parser.add_argument("--stack-tokens", type=int, default=None,
                        help="tokens per stacked pass for the configs that stack candidates (default: Engine's)")
    parser.add_argument("--race-delta", type=float, default=0.05)
    parser.add_argument("--race-slices", type=int, default=8)
    args = parser.parse_args()
    meta, *rows = run(args)
    Console(width=200).print(render(meta, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
