"""torch.distributed plumbing: a process whose peer failed gets a clear error within the timeout, not a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from layershear.engine.distributed import timeout_s
from layershear.errors import LayershearError

# rank 1 dies before the first collective; rank 0 waits in sum_across
_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from layershear.engine.distributed import init_from_env, sum_across
    from layershear.errors import LayershearError
    init_from_env()
    if os.environ["RANK"] == "1":
        os._exit(3)
    try:
        sum_across(torch.ones(2, dtype=torch.float64), torch.device("cpu"))
    except LayershearError as e:
        print("ERROR:", e, flush=True)
        os._exit(4)
    print("no error", flush=True)
""")


@pytest.mark.slow      # two processes; still runs by default
def test_a_failed_rank_fails_the_run_without_a_hang(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAYERSHEAR_DIST_TIMEOUT": "10"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode != 0
    assert time.perf_counter() - started < 200
    assert "no error" not in proc.stdout
    assert "ERROR: rank 0 of 2: summing log-likelihoods across processes failed" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAYERSHEAR_DIST_TIMEOUT", "12.5")
    assert timeout_s() == 12.5
    monkeypatch.setenv("LAYERSHEAR_DIST_TIMEOUT", "soon")
    with pytest.raises(LayershearError, match="not a positive number of seconds"):
        timeout_s()
