"""Interrupted prune runs resume from their journal with the same result as an uninterrupted run:
in process (an interruption at many points of the search) and as a real process killed by SIGINT,
SIGTERM and SIGKILL at random points."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layershear import prune_model
from layershear.errors import JournalError
from layershear.inputs import DataSource
from layershear.scoring.racing import RaceSettings
from layershear.search import EvolveSettings
from layershear.search.journal import journal_path, summarize


class _Stop(KeyboardInterrupt):
    pass


def _prune(tiny_lm_dir, data_dir, journal, *, stop_at=None, **kw):
    """prune_model on the tiny LM; ``stop_at=(kind, n)`` interrupts at the n-th event of that kind."""
    seen = {"progress": 0, "step": 0}

    def on_event(event):
        kind = "step" if event.kind == "info" and re.match(r"step \d+/\d+:", event.text) else event.kind
        if kind in seen:
            seen[kind] += 1
            if stop_at == (kind, seen[kind]):
                raise _Stop()

    args = dict(calib="piqa:16", num_remove=2, data=DataSource("local", data_dir), journal=journal, on_event=on_event)
    return prune_model(tiny_lm_dir, **{**args, **kw}), seen


@pytest.mark.parametrize("search", ["greedy", "beam", "race", "astar", "evolve"])
def test_resume_after_interruptions_equals_uninterrupted_run(tiny_lm_dir, data_dirs, tmp_path, search):
    search = {"greedy": {}, "beam": {"search": "beam", "beam_width": 2},
              "race": {"race": RaceSettings(delta=0.2, slices=4)}, "astar": {"search": "astar"},
              "evolve": {"search": "evolve", "evolve": EvolveSettings(offspring=3, slices=4, stages=((1, 2), (2, 1)))}
              }[search]
    reference, seen = _prune(tiny_lm_dir, data_dirs[0], None, **search)
    progress = seen["progress"]
    points = [("progress", 1), ("progress", progress // 3), ("step", 1), ("progress", 2 * progress // 3),
              ("progress", progress - 1)]
    for kind, n in points:
        journal = tmp_path / f"{kind}-{n}.journal.jsonl"
        with pytest.raises(_Stop):
            _prune(tiny_lm_dir, data_dirs[0], journal, stop_at=(kind, n), **search)
        recorded = summarize(journal)
        resumed, _ = _prune(tiny_lm_dir, data_dirs[0], journal, **search)
        assert resumed.removed == reference.removed
        assert resumed.record["search"] == reference.record["search"], (kind, n)   # every candidate of every step
        assert resumed.record["calibration"] == reference.record["calibration"]
        assert resumed.record["cost"]["journal"]["models_replayed"] >= recorded.models
        if kind == "step":
            assert recorded.steps == 1 and recorded.models >= 4     # the full model and step 1's candidates


def test_journal_of_other_settings_is_refused(tiny_lm_dir, data_dirs, tmp_path):
    journal = tmp_path / "j.jsonl"
    with pytest.raises(_Stop):
        _prune(tiny_lm_dir, data_dirs[0], journal, stop_at=("step", 1))
    before = journal.read_bytes()
    with pytest.raises(JournalError, match=r"other settings \(settings.num_remove: 2 -> 1\); rerun with its settings, "
                                           r"or pass --restart"):
        _prune(tiny_lm_dir, data_dirs[0], journal, num_remove=1)
    with pytest.raises(JournalError, match=r"calibration.documents: '[0-9a-f]+' -> '[0-9a-f]+'"):
        _prune(tiny_lm_dir, data_dirs[0], journal, calib="piqa:12")
    assert journal.read_bytes() == before              # a refused journal is left as it was


def test_cut_last_line_is_dropped_and_damage_is_refused(tiny_lm_dir, data_dirs, tmp_path):
    journal = tmp_path / "j.jsonl"
    reference, _ = _prune(tiny_lm_dir, data_dirs[0], None)
    with pytest.raises(_Stop):
        _prune(tiny_lm_dir, data_dirs[0], journal, stop_at=("step", 2))
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])     # a write cut short by a kill
    resumed, _ = _prune(tiny_lm_dir, data_dirs[0], journal)
    assert resumed.record["search"] == reference.record["search"]
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())      # the cut line was replaced
    journal.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    with pytest.raises(JournalError, match="is damaged at byte .*pass --restart to discard it"):
        _prune(tiny_lm_dir, data_dirs[0], journal)


# --- a real process, killed -------------------------------------------------------------------------------

def _command(tiny_lm_dir, data_dir, out) -> list[str]:
    return [sys.executable, "-m", "layershear", "prune", str(tiny_lm_dir), "--num-remove", "2", "--calib", "piqa:16",
            "--data-dir", str(data_dir), "--data-source", "local", "--batch-size", "1", "--engine", "reference",
            "--out", str(out)]


def _search(out: Path) -> dict:
    return json.loads((out / "layershear.json").read_text())["search"]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_result(tiny_lm_dir, data_dirs, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    reference = tmp_path / "reference"
    done = subprocess.run(_command(tiny_lm_dir, data_dirs[0], reference), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    rng, resumed = random.Random(0), 0
    # head, full model, step 1's candidates, step 1, step 2's candidates, step 2: kill at 1 to 3 lines, mid-search
    for k, sig in enumerate([signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGKILL]):
        out = tmp_path / f"run{k}"
        journal, lines = journal_path(out), rng.randint(1, 3)
        proc = subprocess.Popen(_command(tiny_lm_dir, data_dirs[0], out), stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 120
        while _lines(journal) < lines and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.1))
        proc.send_signal(sig)
        stderr = proc.communicate(timeout=120)[1]
        if proc.returncode == 0 or not journal.exists():   # finished before the signal: nothing to resume
            assert _search(out) == _search(reference)
            continue
        assert proc.returncode == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[sig], stderr
        if sig != signal.SIGKILL:
            assert "Traceback" not in stderr and "interrupted (" in stderr
            assert "run the same command again to resume" in stderr or summarize(journal).models == 0
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}.tmp-*"))
        again = subprocess.run(_command(tiny_lm_dir, data_dirs[0], out), capture_output=True, text=True, env=env)
        assert again.returncode == 0, again.stderr
        assert _search(out) == _search(reference), (k, sig, lines)
        assert not journal.exists()                    # removed once the model is written
        resumed += 1
    assert resumed >= 3          # the kills landed mid-search (not after the run had finished)
