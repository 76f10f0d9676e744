#!/usr/bin/env python3
"""Does torch.compile make the scoring forward faster? Times the same evaluations eager and compiled.

Compiles every part of each decoder block with layershear.engine.compile.compile_blocks (attention, MLP and
norms; inductor, dynamic shapes; the blocks themselves carry layershear's cache hooks, so they stay
eager), as ``prune --compile`` does, and times three single-block-removed evaluations of the fast
engine before and after, in one process, and prints the ratio and the largest change
in a log-likelihood (bf16 fusions round differently).

Examples:
    # CPU, the embedded demo model (about 1 minute)
    python scripts/bench_compile.py --model models/smollm2-135m-instruct --dtype bf16
    # GPU, a random Llama-3-8B-shaped model (tokenizer of --model)
    python scripts/bench_compile.py --random-shape llama3-8b --dtype bf16 --calib arc_easy:32,boolq:32,mmlu:32
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_scoring import SHAPES, model_and_tokenizer  # scripts/ is on sys.path when run as a script

from layershear.data.benchmarks import find_data_dir
from layershear.data.calibration import build_calibration
from layershear.data.recipes import load_calibration
from layershear.engine.compile import compile_blocks
from layershear.model.devices import resolve_device, resolve_dtype
from layershear.scoring.scorer import Scorer


def _timed(scorer: Scorer, device: torch.device) -> tuple[list[float], torch.Tensor]:
    times, n = [], scorer.num_blocks
    for removed in ({n - 2}, {n - 3}, {n - 4}):
        start = time.perf_counter()
        scorer.engine.run(removed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times, scorer.engine.run({n - 5})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--calib", default="arc_easy:16,hellaswag:8,piqa:16,openbookqa:16")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random-shape", choices=sorted(SHAPES), default=None,
                        help="time a randomly initialised model of this shape (tokenizer from --model)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer = model_and_tokenizer(args.model, args.random_shape, dtype, device)
    calib = build_calibration(load_calibration(args.calib), data_dir=find_data_dir())
    scorer = Scorer(model, tokenizer, calib.items)
    eager, lls_eager = _timed(scorer, device)
    compile_blocks(model)           # what `layershear prune --compile` does
    compiled, lls_compiled = _timed(scorer, device)      # the first includes compilation
    print(f"eager    s per evaluation: {', '.join(f'{t:.2f}' for t in eager)}")
    print(f"compiled s per evaluation: {', '.join(f'{t:.2f}' for t in compiled)} (first includes compilation)")
    print(f"speed-up after compilation: {(eager[1] + eager[2]) / (compiled[1] + compiled[2]):.2f}x; "
          f"max |Δ log-likelihood| {float((lls_eager - lls_compiled).abs().max()):.3g} nats")


if __name__ == "__main__":
    main()
