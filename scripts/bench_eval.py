#!/usr/bin/env python3
"""Held-out evaluation speed: layershear's engine against lm-evaluation-harness's HF backend, same documents.

For every task of ``--tasks`` the same documents are scored twice in this process, on the same
loaded model: by layershear (:func:`layershear.scoring.evaluation.evaluate_items`, the ``fast``
engine) and by lm-eval's ``HFLM.loglikelihood`` on the very (context, continuation) requests
layershear builds (lm-eval 0.4.x; ``pip install lm-eval``). Both results are reduced to acc /
acc_norm by the same code, so the table shows per task: documents, requests, tokens each side
computes, wall seconds, the speed-up (lm-eval / layershear), both accuracies, the largest
log-likelihood difference and the documents whose correctness differs (flips). The order of the
two runs alternates from task to task, so a slow drift of the machine does not favour either side.

Examples:
    # CPU, the embedded demo model, 300 documents per task (about an hour on 2 cores)
    python scripts/bench_eval.py --model models/smollm2-135m-instruct --dtype fp32 \\
        --tasks arc_easy:300,arc_challenge:300,boolq:300,hellaswag:300,openbookqa:300,piqa:300,winogrande:300,mmlu:300
    # a quick look
    python scripts/bench_eval.py --tasks arc_easy:40,boolq:40 --json bench-eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from layershear.engine.loglikelihood import LoglikelihoodEngine
from layershear.engine.requests import requests_of
from layershear.inputs import eval_documents
from layershear.model.loading import load_model
from layershear.scoring.accuracy import correct, item_scores
from layershear.scoring.evaluation import evaluate_items


def lm_eval_loglikelihoods(lm, items) -> torch.Tensor:
    """lm-eval's ``LM.loglikelihood`` on the requests of ``items`` (one per choice, item-major)."""
    from lm_eval.api.instance import Instance

    instances = [Instance("loglikelihood", {}, (r.context, r.continuation), idx=r.choice, doc_id=r.item)
                 for r in requests_of(items)]
    return torch.tensor([ll for ll, _ in lm.loglikelihood(instances, disable_tqdm=True)], dtype=torch.float64)


def lm_eval_tokens(lm, items, batch_size: int) -> int:
    """Tokens lm-eval's batches compute: one right-padded row per request (one per context and prefix
    for one-token continuations, its ``logits_cache`` grouping), rows sorted by length."""
    seen: dict[tuple, int] = {}
    for r in requests_of(items):
        ctx, cont = lm._encode_pair(r.context, r.continuation)
        key = tuple(ctx + cont[:-1]) if len(cont) == 1 else (len(seen), tuple(ctx + cont))
        seen[key] = min(len(ctx) + len(cont) - 1, lm.max_length)
    lengths = sorted(seen.values(), reverse=True)
    return sum(batch[0] * len(batch) for batch in (lengths[k:k + batch_size] for k in range(0, len(lengths), batch_size)))


def measures_of(items, lls: torch.Tensor) -> dict[str, torch.Tensor]:
    from layershear.data.benchmarks import get_task

    return {m: correct(items, item_scores(items, lls, measures=[m] * len(items)))
            for m in get_task(items[0].task).measures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--tasks", default="arc_easy:40,boolq:40")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write every number to this file")
    args = parser.parse_args()
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        print("needs lm-eval: pip install lm-eval", file=sys.stderr)
        return 2

    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device=str(model.device))
    suite, tasks = eval_documents(args.tasks)
    rows = []
    for k, (task, items) in enumerate(tasks.items()):
        timed = {}
        for side in (("layershear", "lm-eval") if k % 2 == 0 else ("lm-eval", "layershear")):
            start = time.perf_counter()
            if side == "layershear":
                result = evaluate_items(model, tokenizer, items, batch_size=args.batch_size)
            else:
                theirs = lm_eval_loglikelihoods(lm, items)
            timed[side] = time.perf_counter() - start
        engine = LoglikelihoodEngine(model, tokenizer, requests_of(items), batch_size=args.batch_size, engine="fast")
        ours_lls = engine.run()        # the same pass once more, for the per-request comparison
        ours, ref = measures_of(items, ours_lls), measures_of(items, theirs)
        rows.append({
            "task": task, "docs": len(items), "requests": len(engine.requests),
            "tokens_layershear": sum(s.rows * s.width for s in engine.batch_shapes),
            "tokens_lm_eval": lm_eval_tokens(lm, items, args.batch_size),
            "seconds_layershear": timed["layershear"], "seconds_lm_eval": timed["lm-eval"],
            "speedup": timed["lm-eval"] / timed["layershear"],
            "accuracy_layershear": result.values, "accuracy_lm_eval": {m: float(c.double().mean()) for m, c in ref.items()},
            "max_abs_loglikelihood_diff": float((ours_lls - theirs).abs().max()),
            "flips": {m: int((ours[m] != ref[m]).sum()) for m in ours},
        })
        print(f"{task}: layershear {timed['layershear']:.1f} s, lm-eval {timed['lm-eval']:.1f} s", file=sys.stderr)
    total_ours = sum(r["seconds_layershear"] for r in rows)
    total_ref = sum(r["seconds_lm_eval"] for r in rows)
    table = Table(title=f"Held-out evaluation, layershear vs lm-eval {_version()} HFLM: {args.model}, {args.dtype} "
                        f"on {args.device}, batch size {args.batch_size}")
    for col in ("task", "docs", "requests", "tokens ours", "tokens lm-eval", "s ours", "s lm-eval", "speed-up",
                "acc ours / lm-eval %", "max |Δll|", "flips"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for r in rows:
        accs = ", ".join(f"{m} {100 * r['accuracy_layershear'][m]:.2f}/{100 * r['accuracy_lm_eval'][m]:.2f}"
                         for m in r["accuracy_layershear"])
        table.add_row(r["task"], str(r["docs"]), str(r["requests"]), f"{r['tokens_layershear']:,}",
                      f"{r['tokens_lm_eval']:,}", f"{r['seconds_layershear']:.1f}", f"{r['seconds_lm_eval']:.1f}",
                      f"{r['speedup']:.2f}x", accs, f"{r['max_abs_loglikelihood_diff']:.1e}",
                      str(sum(r["flips"].values())))
    table.add_row("all", str(sum(r["docs"] for r in rows)), str(sum(r["requests"] for r in rows)),
                  f"{sum(r['tokens_layershear'] for r in rows):,}", f"{sum(r['tokens_lm_eval'] for r in rows):,}",
                  f"{total_ours:.1f}", f"{total_ref:.1f}", f"{total_ref / total_ours:.2f}x", "", "",
                  str(sum(sum(r["flips"].values()) for r in rows)), style="bold")
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "dtype": args.dtype, "device": args.device, "batch_size": args.batch_size,
                       "suite": suite, "threads": torch.get_num_threads(), "lm_eval": _version(), "tasks": rows,
                       "seconds_layershear": total_ours, "seconds_lm_eval": total_ref,
                       "speedup": total_ref / total_ours}, f, indent=2)
    return 0


def _version() -> str:
    from importlib.metadata import version

    return version("lm-eval")


if __name__ == "__main__":
    sys.exit(main())
