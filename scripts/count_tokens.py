#!/usr/bin/env python3
"""Tokens and padding of each batch layout on the shared eval splits (no model run, seconds).

For an equal number of documents from each benchmark's eval split, prints the tokens one pass
computes in lm-eval's layout (one right-padded request per row, length-sorted batches) and in the
packed prefix-tree layouts (layershear.engine.packing) per row width, with and without shared contexts,
and the padding fraction of each.

Example:
    python scripts/count_tokens.py --tokenizer models/smollm2-135m-instruct --docs 200
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from layershear.data.benchmarks import find_data_dir, load_split
from layershear.engine.packing import pack_requests
from layershear.engine.requests import encode_requests, length_sorted_batches

SPLITS = [("arc_challenge", "test"), ("arc_easy", "test"), ("boolq", "validation"), ("hellaswag", "validation"),
          ("openbookqa", "test"), ("piqa", "validation"), ("winogrande", "validation"), ("mmlu", "test")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="models/smollm2-135m-instruct")
    parser.add_argument("--docs", type=int, default=200, help="documents per task")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    data_dir = find_data_dir()
    items = [it for task, split in SPLITS for it in load_split(task, split, source="local", data_dir=data_dir)[:args.docs]]
    requests = encode_requests(items, tokenizer)
    plain = sum(r.num_tokens for r in requests)
    longest = max(r.num_tokens for r in requests)
    table = Table(title=f"{len(items)} docs ({args.docs} per task), {len(requests)} requests, {plain:,} request tokens")
    for col in ("layout", "tokens computed", "padding", "fewer tokens than lm-eval rows"):
        table.add_column(col, justify="left" if col == "layout" else "right")
    batches = length_sorted_batches(requests, args.batch_size)
    padded = sum(len(b) * max(requests[k].num_tokens for k in b) for b in batches)
    table.add_row("lm-eval (one request per row, sorted)", f"{padded:,}", f"{1 - plain / padded:.1%}", "1.00x")
    for share in (False, True):
        for width in (0, 256, 512, 1024, 2048):
            packed = pack_requests(requests, max_length=1 << 20, row_tokens=width, share=share,
                                   batch_tokens=args.batch_size * max(longest, width))
            real = sum(b.real_tokens for b in packed)
            computed = sum(len(b.rows) * b.width for b in packed)
            label = ("shared contexts, " if share else "") + ("one tree per row" if width == 0 else f"rows of {width}")
            table.add_row(label, f"{computed:,}", f"{1 - real / computed:.1%}", f"{padded / computed:.2f}x")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
