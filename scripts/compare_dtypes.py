#!/usr/bin/env python3
"""Do bf16 relevances rank the blocks as fp32 ones do? One greedy job scored in both, in one process.

The fast engine runs a greedy job in fp32. Then the model is cast to bf16 in place, and the same
engine scores every candidate along the fp32 job's path (same parents, so rankings compare step by
step) and also runs its own greedy job. Per step it prints the block each dtype would remove, the
Spearman correlation of the two relevance vectors (tied relevances share their average rank;
:func:`layershear.analysis.statistics.correlation`), the largest |Δ relevance|, and the candidate
pairs that bf16 orders against fp32 although their fp32 relevances differ by more than
``--tie-docs`` documents' worth. One document flipping changes a relevance by
1 / (N x (Acc(f) - r)) (paper's AccBasedRelevance, N calibration documents), so closer pairs tie
within noise. It also counts the reversed pairs whose fp32 accuracies differ significantly on the
calibration set: McNemar's exact test (two-sided binomial sign test on the documents that one
candidate gets right and the other wrong, p < ``--alpha``), the usual test for two classifiers
scored on the same documents. A pair that does not pass it is one the calibration set cannot tell
apart (not proof that the two are equal); the test is per pair, with no correction for the many
pairs of a step, so by chance alone about ``--alpha`` of truly equal pairs pass it.

Example (GPU; with --random-shape the golds are rigged as in bench_scoring.py, in fp32):
    python scripts/compare_dtypes.py --model .gpu/tok --random-shape llama3-8b --ratio 0.25 \\
        --calib arc_easy:8,arc_challenge:8,boolq:8,hellaswag:8,openbookqa:8,piqa:8,winogrande:8,mmlu:8
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_scoring import SHAPES, _rig_golds, model_and_tokenizer  # scripts/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table
from scipy import stats

from layershear.analysis.statistics import correlation
from layershear.data.benchmarks import find_data_dir
from layershear.data.calibration import build_calibration
from layershear.data.recipes import load_calibration
from layershear.model.arch import decoder_blocks
from layershear.model.devices import resolve_device
from layershear.scoring.scorer import Scorer
from layershear.search import GreedyPruner, num_to_remove


def mcnemar_p(right_a: tuple[bool, ...], right_b: tuple[bool, ...]) -> float:
    """Two-sided exact McNemar p-value: are candidates a and b equally accurate on these documents?
    Binomial(n, 1/2) sign test on the n documents exactly one of them gets right."""
    if len(right_a) != len(right_b):
        raise ValueError(f"correctness of {len(right_a)} and {len(right_b)} documents: score both on the same set")
    only_a = sum(x and not y for x, y in zip(right_a, right_b))
    n = only_a + sum(y and not x for x, y in zip(right_a, right_b))
    return float(stats.binomtest(only_a, n, 0.5).pvalue) if n else 1.0


def compare_step(fp32: dict[int, float], bf16: dict[int, float], noise: float, tie_docs: float,
                 correct: dict[int, tuple[bool, ...]], alpha: float = 0.05) -> dict:
    """Per-step comparison of two ``block -> relevance`` maps (same candidates); ``correct``: each
    candidate's per-document correctness in fp32, for the McNemar test. The picks (ties broken by the
    gold probability, as the search does) are added by the caller."""
    blocks = sorted(fp32)
    reversed_pairs = [(a, b) for a in blocks for b in blocks if fp32[a] < fp32[b] and bf16[a] > bf16[b]]
    out = {"spearman": correlation(fp32, bf16).spearman_rho,
           "max_abs_diff": max(abs(fp32[b] - bf16[b]) for b in blocks), "noise": noise,
           "reversed_pairs": len(reversed_pairs),
           "swapped_outside_ties": [(a, b) for a, b in reversed_pairs if fp32[a] < fp32[b] - tie_docs * noise],
           "swapped_significant": [(a, b, p) for a, b in reversed_pairs if (p := mcnemar_p(correct[a], correct[b])) < alpha]}
    return out


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    model, tokenizer = model_and_tokenizer(args.model, args.random_shape, torch.float32, device)
    items = build_calibration(load_calibration(args.calib), data_dir=find_data_dir()).items
    if args.random_shape:
        items = _rig_golds(model, tokenizer, items, args.batch_size)
    num_remove = args.num_remove or num_to_remove(len(decoder_blocks(model)), ratio=args.ratio)
    start = time.perf_counter()
    scorer32 = Scorer(model, tokenizer, items, batch_size=args.batch_size)
    fp32 = GreedyPruner(scorer32).prune(num_remove)
    seconds32 = time.perf_counter() - start
    model.to(torch.bfloat16)
    scorer = Scorer(model, tokenizer, items, batch_size=args.batch_size)
    start = time.perf_counter()
    bf16 = GreedyPruner(scorer).prune(num_remove)
    seconds16 = time.perf_counter() - start
    steps = []
    for step in fp32.steps:
        parent = frozenset(fp32.removed[:len(steps)])
        full = scorer.accuracy(parent)
        noise = 1.0 / (len(items) * max(full.accuracy - full.random, 1e-12))
        got = {s.block_idx: s.relevance for s in scorer.score_blocks(parent)}
        want = {c.block_idx: c.relevance for c in step.candidates}
        pick = min(scorer.children(parent, list(got)).values(), key=lambda a: a.rank_key).removed - parent
        correct = {b: scorer32.accuracy(parent | {b}).correct for b in want}   # memoised in fp32
        steps.append({"parent": sorted(parent), "fp32_min": fp32.removed[len(steps)], "bf16_min": min(pick),
                      **compare_step(want, got, noise, args.tie_docs, correct, args.alpha)})
    return {"model": f"random {args.random_shape}" if args.random_shape else args.model, "calib": args.calib,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "docs": len(items), "fp32_removed": list(fp32.removed), "bf16_removed": list(bf16.removed),
            "fp32_seconds": seconds32, "bf16_seconds": seconds16, "tie_docs": args.tie_docs, "alpha": args.alpha,
            "steps": steps}


def render(out: dict) -> Table:
    table = Table(title=f"bf16 against fp32 relevances along the fp32 greedy path: {out['model']}, {out['docs']} docs, "
                        f"{out['device']} (fp32 removed {out['fp32_removed']}, bf16 greedy removed {out['bf16_removed']})")
    for col in ("step", "parent", "fp32 removes", "bf16 removes", "Spearman", "max |Δrel|", "1 doc", "reversed pairs",
                f"of them > {out['tie_docs']:g} docs apart", f"of them McNemar p < {out['alpha']:g}"):
        table.add_column(col, justify="right")
    for k, st in enumerate(out["steps"], 1):
        table.add_row(str(k), str(st["parent"]), str(st["fp32_min"]), str(st["bf16_min"]), f"{st['spearman']:.3f}",
                      f"{st['max_abs_diff']:.3f}", f"{st['noise']:.3f}",
                      str(st["reversed_pairs"]), ", ".join(f"{a}<{b}" for a, b in st["swapped_outside_ties"]) or "none",
                      ", ".join(f"{a}<{b} (p={p:.3f})" for a, b, p in st["swapped_significant"]) or "none")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--random-shape", choices=sorted(SHAPES), default=None)
    parser.add_argument("--calib", default="arc_easy:16,hellaswag:8,piqa:16,openbookqa:16")
    parser.add_argument("--num-remove", type=int, default=None)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tie-docs", type=float, default=2.0, help="relevances closer than this many documents tie")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the McNemar test between two candidates' fp32 accuracies")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = run(args)
    Console(width=200).print(render(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
