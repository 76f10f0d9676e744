"""How often the fast engine computes a shared few-shot prefix: MMLU 5-shot (lm-eval's ``first_n`` from
dev, one prefix per subject), fast engine vs the lm-eval-style reference on the same requests, one run.

    .venv/bin/python scripts/bench_fewshot_prefix.py --model models/smollm2-135m-instruct \\
        --subjects 3 --docs 40 --json docs/bench/cpu/fewshot-prefix.json

Prints, per engine, the tokens run through the decoder blocks per model, the wall time, and the ratios
(reference / fast); and for the fast layout how many rows hold each subject's documents, i.e. how many
times that subject's description + 5 examples are computed per model (lm-eval: once per request).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    from layershear.data.benchmarks import load_split
    from layershear.data.calibration import with_fewshot
    from layershear.engine.loglikelihood import LoglikelihoodEngine
    from layershear.engine.packing import PackedBatch
    from layershear.engine.requests import requests_of
    from layershear.model.loading import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--subjects", type=int, default=3, help="first N MMLU subjects (alphabetical)")
    parser.add_argument("--docs", type=int, default=40, help="test documents per subject")
    parser.add_argument("--num-fewshot", type=int, default=5)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    docs, _, _ = with_fewshot(load_split("mmlu", "test", source="local"), "test", args.num_fewshot, source="local")
    subjects = sorted({d.description for d in docs})[:args.subjects]
    items = [d for s in subjects for d in [x for x in docs if x.description == s][:args.docs]]
    requests = requests_of(items)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    torch.manual_seed(0)
    out = {"model": args.model, "dtype": args.dtype, "num_fewshot": args.num_fewshot, "subjects": len(subjects),
           "documents": len(items), "requests": len(requests), "torch_threads": torch.get_num_threads()}
    lls = {}
    for name in ("reference", "fast"):
        engine = LoglikelihoodEngine(model, tokenizer, requests, batch_size=args.batch_size, engine=name)
        start = time.perf_counter()
        lls[name] = engine.run()
        seconds = time.perf_counter() - start
        row = {"seconds": round(seconds, 2), "block_tokens_per_block": engine.stats.block_tokens // engine.num_blocks,
               "real_tokens": engine.stats.real_tokens, "forward_passes": engine.stats.forward_passes,
               "row_tokens": engine.row_tokens}
        if name == "fast":
            rows_of = {s: 0 for s in subjects}
            for batch in engine.batches:
                assert isinstance(batch, PackedBatch)
                owners = {items[requests[k].item].description for k in batch.requests}
                for s in owners:                          # rows of this batch that hold documents of subject s
                    rows_of[s] += len({batch.score_rows[j] for j, o in enumerate(batch.owners)
                                       if items[requests[batch.requests[o]].item].description == s})
            row["rows_per_subject"] = [rows_of[s] for s in subjects]
            prefix = len(tokenizer(items[0].contexts[0][:items[0].contexts[0].rindex("\n\n") + 2],
                                   add_special_tokens=False)["input_ids"])
            row["shared_prefix_tokens_first_subject"] = prefix
        out[name] = row
    out["max_abs_loglikelihood_diff"] = float((lls["fast"] - lls["reference"]).abs().max())
    out["ratio_block_tokens"] = round(out["reference"]["block_tokens_per_block"] / out["fast"]["block_tokens_per_block"], 2)
    out["ratio_wall"] = round(out["reference"]["seconds"] / out["fast"]["seconds"], 2)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
