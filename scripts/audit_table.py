"""Side-by-side table of several ``layershear analyze`` reports and the paper's audit figures.

    .venv/bin/python scripts/audit_table.py smollm2=out/analyze3/smollm2 gemma3=out/analyze3/gemma3 ...

Per model: the tasks on which the full model is above chance (only those carry signal), the pooled
and per-task Pearson/Spearman R between the cosine score (ShortGPT's BI = 1 - cos, so the sign is the
paper's flipped) and the accuracy drop, the misjudgment and major-misjudgment rates, and the
Wilcoxon p-value of the task-dependence test. Prints Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAPER = ("paper (Pythia / Mistral / OLMo)", "R = -0.46 / -0.23 / -0.15 (cosine similarity vs drop)",
         "93.8% / 53.6%", "drops vary with the task, cosine scores hardly")


def _row(name: str, folder: Path) -> list[str]:
    a = json.loads((folder / "report.json").read_text())["analysis"]
    full, rand = a["full_accuracy_by_task"], a["random_by_task"]
    above = [t for t in a["tasks"] if full[t] - rand[t] > 1e-9]
    c = a["correlations"]
    pooled = c["cosine_vs_drop_pooled"]
    per_task = ", ".join(f"{t} {c['cosine_vs_drop_by_task'][t]['pearson_r']:+.2f}/{c['cosine_vs_drop_by_task'][t]['spearman_rho']:+.2f}"
                         for t in a["tasks"])
    acc = ", ".join(f"{t} {100 * full[t]:.1f} (r {100 * rand[t]:.3g})" for t in a["tasks"])
    m, td = a["misjudgment"], a["task_dependence"]
    return [name, f"{a['num_blocks']}", acc, ", ".join(above),
            f"{pooled['pearson_r']:+.2f} / {pooled['spearman_rho']:+.2f}", per_task,
            f"{100 * m['rate']:.1f}% / {100 * m['major_rate']:.1f}%",
            f"p = {td.get('wilcoxon_p', td.get('p_value', float('nan'))):.2g}"]


def main() -> None:
    head = ["model", "blocks", "full-model accuracy % (random)", "above chance", "pooled R / rho (BI vs drop)",
            "per task R / rho", "misjudgment / major", "task dependence (Wilcoxon)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for arg in sys.argv[1:]:
        name, _, folder = arg.partition("=")
        print("| " + " | ".join(_row(name, Path(folder))) + " |")
    print(f"| {PAPER[0]} | 16-32 | | | {PAPER[1]} | | {PAPER[2]} | {PAPER[3]} |")


if __name__ == "__main__":
    main()
