#!/usr/bin/env python
"""Racing on one real model: the same greedy job in exact mode, with layershear's first racing bound
(Hoeffding-Serfling on the accuracy difference) and with the paired McNemar-type bound, in one run.

Prints, for each mode: the blocks removed (and whether they equal exact mode's, step by step, in
the plain layout and in the racing modes' sliced layout: in bf16 the layout moves rounding),
calibration documents scored (summed over candidate models), evaluations, block-tokens and wall
seconds, with ratios against exact mode. Racing modes share the slicing (seed, slices) and delta.

    python scripts/bench_racing.py models/smollm2-135m-instruct --calib arc_easy:100,piqa:100 \
        --num-remove 3 --json docs/bench/cpu/racing-smollm2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--num-remove", type=int, default=3)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--add-bos", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from layershear.inputs import DataSource
    from layershear.pipeline.run import draw_calibration, load_for_job
    from layershear.scoring.racing import RaceSettings
    from layershear.scoring.scorer import Scorer
    from layershear.search import GreedyPruner

    quiet = lambda _e: None
    calibration = draw_calibration(args.calib, DataSource("local", None), quiet)
    model, tokenizer, source = load_for_job(args.model, None, quiet, dtype=args.dtype, device="cpu")
    # exact-sliced: exact mode in the racing modes' batch layout (each slice packed on its own); in bf16
    # the layout changes rounding, so racing's picks are compared with it as well as with plain exact mode
    modes = {"exact": None, "exact-sliced": "sliced",
             "serfling": RaceSettings(delta=args.delta, slices=args.slices, bound="serfling"),
             "mcnemar": RaceSettings(delta=args.delta, slices=args.slices, bound="mcnemar")}
    rows = {}
    for name, race in modes.items():
        sliced = race == "sliced"
        scorer = Scorer(model, tokenizer, calibration.items, add_bos=args.add_bos, race=None if sliced else race,
                        slices=args.slices if sliced else None)
        started = time.perf_counter()
        result = GreedyPruner(scorer).prune(args.num_remove)
        seconds = time.perf_counter() - started
        rows[name] = {"removed": list(result.removed), "final_accuracy": result.final.accuracy,
                      "documents": scorer.documents_scored, "evaluations": scorer.evaluations,
                      "exact_models": scorer.models_scored, "block_tokens": scorer.engine.stats.block_tokens,
                      "seconds": round(seconds, 1),
                      "dropped_per_step": [sum(not c.exact for c in s.candidates) for s in result.steps]}
    exact = rows["exact"]
    for name, row in rows.items():
        row["same_picks"] = [a == b for a, b in zip(row["removed"], exact["removed"])]
        row["same_picks_as_sliced"] = [a == b for a, b in zip(row["removed"], rows["exact-sliced"]["removed"])]
        for key in ("documents", "block_tokens", "seconds"):
            row[f"{key}_vs_exact"] = round(row[key] / exact[key], 3)
        print(f"{name:12s} removed {row['removed']} same as exact {row['same_picks']} / as exact-sliced "
              f"{row['same_picks_as_sliced']} documents {row['documents']} "
              f"({row['documents_vs_exact']:.3f}x) block-tokens {row['block_tokens_vs_exact']:.3f}x "
              f"wall {row['seconds']} s ({row['seconds_vs_exact']:.3f}x) dropped/step {row['dropped_per_step']}")
    s, m = rows["serfling"], rows["mcnemar"]
    print(f"paired bound vs Hoeffding-Serfling: documents {m['documents'] / s['documents']:.3f}x, "
          f"wall {m['seconds'] / s['seconds']:.3f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": source, "calib": args.calib, "calibration_docs": len(calibration.items),
                                         "num_remove": args.num_remove, "delta": args.delta, "slices": args.slices,
                                         "dtype": args.dtype, "threads": torch.get_num_threads(), "modes": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
