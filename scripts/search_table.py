#!/usr/bin/env python
"""The markdown table of docs/search.md from the JSON files of scripts/search_study.py.

    python scripts/search_table.py SmolLM2-135M=docs/search/smollm2.json Gemma-3-270M=docs/search/gemma3.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ("cosine", "greedy", "beam4", "astar", "evolve")


def _cal(run: dict) -> float:
    """Calibration accuracy rescored in one layout for every run (see scripts/search_study.py)."""
    return run.get("calibration_common", run["calibration"])


def main() -> None:
    print("| model | removed | search | calibration acc % | held-out acc % | evaluations | block-tokens | wall s | "
          "removed blocks |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for arg in sys.argv[1:]:
        label, path = arg.split("=", 1)
        record = json.loads(Path(path).read_text())
        full = record["full"]
        print(f"| {label} | 0 | (full model) | {100 * full['calibration']:.2f} | {100 * full['held_out']['mean']:.2f} "
              "| | | | |")
        runs = record["runs"]
        for ratio in sorted({r["ratio"] for r in runs.values()}):
            greedy = runs.get(f"{ratio}:greedy")
            for name in ORDER:
                run = runs.get(f"{ratio}:{name}")
                if run is None:
                    continue
                cost = run["cost"] or {}
                mark = ""
                if greedy is not None and name not in ("greedy", "cosine"):
                    d_cal = 100 * (_cal(run) - _cal(greedy))
                    d_out = 100 * (run["held_out"]["mean"] - greedy["held_out"]["mean"])
                    mark = f" ({d_cal:+.2f} / {d_out:+.2f} vs greedy)"
                tokens = f"{cost['block_tokens'] / 1e6:.1f} M" if cost else "-"
                print(f"| {label} | {run['num_remove']} ({ratio:.0%}) | {name}{mark} | {100 * _cal(run):.2f} | "
                      f"{100 * run['held_out']['mean']:.2f} | {cost.get('evaluations', '-')} | {tokens} | "
                      f"{run['seconds']} | {','.join(map(str, run['removed']))} |")


if __name__ == "__main__":
    main()
