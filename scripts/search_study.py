#!/usr/bin/env python
"""Search beyond greedy on one real model: greedy, beam 4, A*-style and evolve (and cosine, ShortGPT's
one-shot Block Influence, as the floor) at several removal ratios, each with

- calibration accuracy (the objective every search maximises; ``calibration`` as the search measured
  it, ``calibration_common`` rescored in one batch layout for all runs),
- held-out accuracy on documents never used for calibration (mean of the per-task accuracies, each
  task by its lm-eval measure), and
- cost: evaluations, block-tokens (padded tokens x blocks run), documents scored, wall seconds.

Each search gets a fresh Scorer (nothing cached from another search), and every Scorer lays the
calibration set out in the same 8 random slices that the evolutionary search's staged selection
needs: in bf16 the batch layout changes rounding, and with a few dozen documents one document more
or less can change a greedy step, so one layout for all keeps evolve's greedy phase identical to
greedy's. A*-style search gets a
budget of ``--astar-budget`` x greedy's evaluations at the same ratio, measured in this run; evolve
counts greedy's evaluations in its own. Results are written after every run to ``--out``
(a finished run found there is kept), so an interrupted study resumes.

    python scripts/search_study.py models/smollm2-135m-instruct --calib arc_easy:16,piqa:16 \
        --eval arc_easy:100,piqa:100 --out docs/search/smollm2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

SLICES = 8          # EvolveSettings().slices: one batch layout for every run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--ratios", default="0.25,0.5")
    ap.add_argument("--searches", default="cosine,greedy,beam4,astar,evolve")
    ap.add_argument("--astar-budget", type=float, default=1.5, help="A*-style budget in greedy's evaluations")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--add-bos", action="store_true")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    import torch

    from layershear.inputs import DataSource, eval_documents
    from layershear.model.arch import decoder_blocks
    from layershear.pipeline.run import draw_calibration, load_for_job
    from layershear.scoring.accuracy import measure_of
    from layershear.scoring.baselines import calibration_texts
    from layershear.scoring.evaluation import evaluate_suite
    from layershear.scoring.scorer import Scorer
    from layershear.search import EvolveSettings, GreedyPruner, SearchBudget, num_to_remove
    from layershear.search.baseline import remove_by_metric

    torch.manual_seed(0)
    quiet = lambda _e: None
    data = DataSource("local", None)
    calibration = draw_calibration(args.calib, data, quiet)
    suite, held_out = eval_documents(args.eval, data, exclude=calibration.used())
    model, tokenizer, source = load_for_job(args.model, None, quiet, dtype=args.dtype, device="cpu")
    opts = dict(batch_size=args.batch_size, add_bos=args.add_bos)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record.update({"model": source, "calib": args.calib, "calibration_docs": len(calibration.items), "eval": args.eval,
                   "held_out_docs": {t: len(v) for t, v in held_out.items()}, "dtype": args.dtype,
                   "threads": torch.get_num_threads(), "runs": record.get("runs", {})})

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")

    def held_out_accuracy(removed) -> dict:
        results = evaluate_suite(model, tokenizer, held_out, removed=sorted(removed), **opts)
        by_task = {r.task: r.values[measure_of(r.task)] for r in results}
        return {"mean": statistics.fmean(by_task.values()), "by_task": by_task}

    if "full" not in record:
        started = time.perf_counter()
        scorer = Scorer(model, tokenizer, calibration.items, slices=SLICES, **opts)
        record["full"] = {"calibration": scorer.accuracy().accuracy, "random": scorer.accuracy().random,
                          "held_out": held_out_accuracy(()), "seconds": round(time.perf_counter() - started, 1)}
        save()
    num_blocks = len(decoder_blocks(model))
    for ratio in [float(r) for r in args.ratios.split(",")]:
        k = num_to_remove(num_blocks, ratio=ratio)
        for name in args.searches.split(","):
            key = f"{ratio}:{name}"
            if key in record["runs"]:
                continue
            started = time.perf_counter()
            if name == "cosine":
                removal = remove_by_metric("cosine", model, tokenizer, calibration_texts(calibration.items),
                                           num_remove=k, num_blocks=num_blocks, iterative=False,
                                           batch_size=args.batch_size)
                seconds = time.perf_counter() - started
                scorer = Scorer(model, tokenizer, calibration.items, slices=SLICES, **opts)
                removed, final, cost = removal.removed, scorer.accuracy(removal.removed), None
            else:
                evolve = EvolveSettings()
                scorer = Scorer(model, tokenizer, calibration.items, slices=evolve.slices, **opts)
                budget = SearchBudget()
                if name == "astar":
                    greedy = record["runs"][f"{ratio}:greedy"]["cost"]["evaluations"]
                    budget = SearchBudget(evaluations=int(args.astar_budget * greedy))
                search, width = ("beam", int(name[4:])) if name.startswith("beam") else (name, 1)
                result = GreedyPruner(scorer, search=search, beam_width=width, budget=budget, evolve=evolve).prune(k)
                seconds = time.perf_counter() - started
                removed, final = result.removed, result.final
                cost = {"evaluations": result.cost.evaluations, "block_tokens": result.cost.block_tokens,
                        "documents": result.cost.documents, "expansions": result.cost.expansions,
                        "generations": result.cost.generations, "shared_starts": scorer.engine.stats.shared_starts,
                        "reused_runs": scorer.engine.stats.reused_runs, "notes": list(result.notes),
                        "path": [s.chosen.block_idx for s in result.steps],
                        "refinements": [[list(m.put_back), list(m.removed), m.after.accuracy]
                                        for m in result.refinements]}
            record["runs"][key] = {"ratio": ratio, "search": name, "num_remove": k, "removed": sorted(removed),
                                   "calibration": final.accuracy, "held_out": held_out_accuracy(removed),
                                   "seconds": round(seconds, 1), "cost": cost}
            save()
            run = record["runs"][key]
            print(f"{key}: removed {run['removed']} calib {100 * run['calibration']:.2f} held-out "
                  f"{100 * run['held_out']['mean']:.2f} {run['seconds']} s "
                  f"{cost['evaluations'] if cost else '-'} evals", flush=True)
    _common(record, model, tokenizer, calibration, opts, save)


def _common(record, model, tokenizer, calibration, opts, save) -> None:
    """Every final set's calibration accuracy again in one Scorer (the same sliced layout), a check
    that the runs' own numbers agree."""
    from layershear.scoring.scorer import Scorer

    todo = [run for run in record["runs"].values() if "calibration_common" not in run]
    if not todo:
        return
    scorer = Scorer(model, tokenizer, calibration.items, slices=SLICES, **opts)
    for run in todo:
        run["calibration_common"] = scorer.accuracy(run["removed"]).accuracy
    save()


if __name__ == "__main__":
    main()
