#!/usr/bin/env python3
"""GSM8K accuracy and generation cost of one model folder: the full model and a few models with blocks removed.

The first ``--limit`` test documents get lm-eval's 5-shot prompts (``gsm8k.yaml``: examples from
``train``, default sampler, seed 1234); each candidate model (the full one, then one per
``--remove`` set, blocks taken out in memory) generates greedily with a KV cache
(:mod:`layershear.engine.generate`) and is scored by both filters (``exact_match,strict-match``
and ``exact_match,flexible-extract``, :mod:`layershear.scoring.generative`). The table shows per
candidate both accuracies, wall seconds, prompt and generated tokens, forward passes and generated
tokens per second; ``--json`` writes the same numbers and every generated text.

Examples:
    # a quick look (CPU, the embedded demo model)
    python scripts/bench_gsm8k.py --model models/smollm2-135m-instruct --limit 5 --remove 3,4 --json gsm8k.json
    # the full measurement on a GPU: every test document, three pruned candidates
    python scripts/bench_gsm8k.py --model MODEL --device cuda --dtype bf16 --limit 1319 --remove 3 --remove 3,4 \\
        --remove 10,11,12 --batch-size 64 --json gsm8k-full.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from layershear.engine.generate import MAX_GEN_TOKS
from layershear.inputs import DataSource, eval_documents
from layershear.model.loading import load_model
from layershear.scoring.generative import FILTERS, GenerativeScorer, metric_name


def _blocks(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(b) for b in text.split(",") if b.strip()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/smollm2-135m-instruct", help="local HF model folder or Hub id")
    parser.add_argument("--limit", type=int, default=5, help="first N test documents")
    parser.add_argument("--remove", action="append", default=[], metavar="B,B",
                        help="blocks removed in one candidate (repeat for more candidates); the full model is always scored")
    parser.add_argument("--num-fewshot", type=int, default=None, help="default: lm-eval's 5")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-gen-toks", type=int, default=MAX_GEN_TOKS)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--add-bos", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="write every number and generated text to this file")
    args = parser.parse_args()

    _, tasks = eval_documents(f"gsm8k:{args.limit}", DataSource("auto", args.data_dir, args.num_fewshot))
    items = tasks["gsm8k"]
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    scorer = GenerativeScorer(model, tokenizer, items, batch_size=args.batch_size, max_gen_toks=args.max_gen_toks,
                              max_length=args.max_length, add_bos=args.add_bos)
    candidates = [(), *(_blocks(r) for r in args.remove)]
    rows = []
    for removed in candidates:
        scorer.accuracy(removed)
        gen = scorer.generations[frozenset(removed)]
        rows.append({"removed": list(removed),
                     **{metric_name(f): sum(gen.correct[f]) / len(items) for f in FILTERS},
                     **gen.stats.to_dict(),
                     "texts": list(gen.texts), "answers": {f: list(gen.answers[f]) for f in FILTERS}})
        print(f"removed {list(removed) or '-'}: done in {gen.stats.seconds:.1f}s", file=sys.stderr)

    table = Table(title=f"GSM8K {len(items)} docs, {Path(args.model).name} ({scorer.num_blocks} blocks), "
                        f"{scorer.engine.num_tokens} prompt tokens")
    cols = ["removed", "strict %", "flexible %", "seconds", "prompt tok", "gen tok", "passes", "gen tok/s"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(",".join(map(str, r["removed"])) or "-", f"{100 * r[metric_name('strict-match')]:.1f}",
                      f"{100 * r[metric_name('flexible-extract')]:.1f}", f"{r['seconds']:.1f}", str(r["prompt_tokens"]),
                      str(r["generated_tokens"]), str(r["forward_passes"]), f"{r['tokens_per_second']:.1f}")
    Console().print(table)
    if args.json:
        record = {"model": args.model, "num_docs": len(items), "doc_ids": [it.doc_id for it in items],
                  "settings": {k: v for k, v in vars(args).items() if k != "json"},
                  "num_blocks": scorer.num_blocks, "candidates": rows, "cost": scorer.cost()}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
