"""Render few-shot prompts with the real lm-evaluation-harness, for layershear's pinned agreement test.

Run with a Python that has ``lm-eval`` (0.4.13) and ``datasets`` installed (not layershear's venv):

    python3 -m venv /tmp/lmeval && /tmp/lmeval/bin/pip install torch==2.13.0 lm-eval==0.4.13
    /tmp/lmeval/bin/python scripts/lmeval_fewshot_prompts.py --out tests/data/fewshot_lmeval.json

lm-eval's own task YAML fields are used (doc_to_text, doc_to_target, doc_to_choice, description,
fewshot_split, sampler) with ``dataset_path: json`` over the local files of ``../shared/data/benchmarks``
converted to the Hub row format, so no network is needed. Where the local copy lacks lm-eval's
few-shot split (ARC train), the same fallback split layershear uses (validation) is given to lm-eval
too, so that both sides draw from the same pool. For each task the contexts of the first ``--docs``
documents (in split order, with lm-eval's default ``fewshot_random_seed`` 1234) are written.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "benchmarks"


def _arc_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        ch = d["question"]["choices"]
        rows.append({"id": d["id"], "question": d["question"]["stem"], "answerKey": d["answerKey"],
                     "choices": {"text": [c["text"] for c in ch], "label": [c["label"] for c in ch]}})
    return rows


def _mmlu_rows(split_dir: str, subject: str) -> list[dict]:
    path = DATA / "mmlu" / "data" / split_dir / f"{subject}_{split_dir}.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return [{"question": r[0], "subject": subject, "choices": r[1:5], "answer": "ABCD".index(r[5])}
                for r in csv.reader(f)]


def _write(folder: Path, name: str, rows: list[dict]) -> str:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _contexts(config: dict, num_fewshot: int, docs: int) -> list[str]:
    from lm_eval.api.task import ConfigurableTask

    task = ConfigurableTask(config={**config, "num_fewshot": num_fewshot})
    task.set_fewshot_seed(seed=1234)
    out = []
    for k, doc in enumerate(task.eval_docs):
        ctx = task.fewshot_context(doc, num_fewshot)       # every document in order: the sampler's state advances
        if k < docs:
            out.append(ctx)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        arc = {"test": _write(folder, "arc_test", _arc_rows(DATA / "arc_easy" / "ARC-Easy-Test.jsonl")),
               "validation": _write(folder, "arc_val", _arc_rows(DATA / "arc_easy" / "ARC-Easy-Dev.jsonl"))}
        mmlu = {"test": _write(folder, "mmlu_test", _mmlu_rows("test", "abstract_algebra")),
                "dev": _write(folder, "mmlu_dev", _mmlu_rows("dev", "abstract_algebra"))}
        gsm = {"test": str(DATA / "gsm8k" / "test.jsonl"), "train": str(DATA / "gsm8k" / "train.jsonl")}
        tasks = {
            "arc_easy": ({"task": "arc_easy_local", "dataset_path": "json", "dataset_kwargs": {"data_files": arc},
                          "output_type": "multiple_choice", "test_split": "test", "fewshot_split": "validation",
                          "doc_to_text": "Question: {{question}}\nAnswer:",
                          "doc_to_target": "{{choices.label.index(answerKey)}}", "doc_to_choice": "{{choices.text}}",
                          "metric_list": [{"metric": "acc"}]}, 25),
            "mmlu": ({"task": "mmlu_abstract_algebra_local", "dataset_path": "json",
                      "dataset_kwargs": {"data_files": mmlu}, "output_type": "multiple_choice", "test_split": "test",
                      "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
                      "description": "The following are multiple choice questions (with answers) about abstract algebra.\n\n",
                      "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
                      "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
                      "metric_list": [{"metric": "acc"}]}, 5),
            "gsm8k": ({"task": "gsm8k_local", "dataset_path": "json", "dataset_kwargs": {"data_files": gsm},
                       "output_type": "generate_until", "training_split": "train", "fewshot_split": "train",
                       "test_split": "test", "doc_to_text": "Question: {{question}}\nAnswer:",
                       "doc_to_target": "{{answer}}", "generation_kwargs": {"until": ["Question:"]},
                       "metric_list": [{"metric": "exact_match"}]}, 5),
        }
        result = {name: {"num_fewshot": n, "fewshot_split": cfg["fewshot_split"],
                         "contexts": _contexts(cfg, n, args.docs)} for name, (cfg, n) in tasks.items()}
    import lm_eval

    args.out.write_text(json.dumps({"lm_eval": getattr(lm_eval, "__version__", "?"), "tasks": result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
