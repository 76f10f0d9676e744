"""Fault-injection table: break the inputs of the real ``layershear`` CLI the way a careless or hostile user
would, and check that every fault ends in one clean error and that nothing is lost.

Run it from the repository root (CPU only, about five minutes on 2 cores)::

    python scripts/fault_table.py                                   # every case, table on stdout
    python scripts/fault_table.py --out docs/bench/cpu/fault-table.md
    python scripts/fault_table.py --only nan-weight-prune 'signal-*'   # names or globs (see --list)
    python scripts/fault_table.py --keep /tmp/faults                # keep fixtures, broken inputs and logs

It builds its fixtures in a temporary folder (or in ``--keep DIR``): the tiny 4-block random Llama of
``tests/helpers.py`` with its byte tokenizer, PIQA-format data whose labels are rigged (as ``data_dirs`` in
``tests/conftest.py``) so the model is above chance, a 350 MB random Llama for the cases that need a slow
export, and a tiny llama GGUF written with the ``gguf`` package. Each case copies what it needs into its
own subfolder, breaks it, runs ``python -m layershear ...`` there as a subprocess (stdin from /dev/null,
``HF_HUB_OFFLINE=1``, a private ``HF_HOME``, no Hub token unless the case sets one, a timeout per
subprocess) and checks:

* expected: the exit code (2 for a fault, with exactly one ``error: ...`` line on stderr), no
  ``Traceback``, and what the error line must mention;
* nothing lost: the source checkpoint and every protected file (a previous output, the user's files)
  are byte-identical before and after (SHA-256 of every file), no ``.NAME.tmp-*`` / ``.NAME.old-*``
  is left beside the target, and a target that did not exist was not half-written.

It prints (and with ``--out`` writes) a Markdown table ``fault kind | command | expected | observed |
nothing lost | verdict`` and a summary line, and exits 1 when any row FAILs. ``Case.pinned_by`` names the
pytest node that pins a row (filled in by the owner; shown as a column once any is set).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
CLI = [sys.executable, "-m", "layershear"]       # `python -m layershear.cli` does not run (no __main__)
INDEX = "model.safetensors.index.json"
TIMEOUT_S = 60.0
ERROR_CHARS = 120                                # observed: the error line, cut to this many characters
NAN_TENSOR = "model.layers.1.mlp.down_proj.weight"
OMITTED_TENSOR = "model.layers.2.self_attn.k_proj.weight"
SEARCH_MARKERS = ("removing ", "layout:", "scoring ━", "step 1/")   # stderr of a search under way (not of loading)
FULL_DISK_BYTES = 16_384                         # RLIMIT_FSIZE for "disk full": below any output shard
FULL_DISK_JSON_BYTES = 64                        # ... and below the --json record of `eval`


# --- running the CLI -------------------------------------------------------------------------------

@dataclass
class Proc:
    """What one ``layershear`` subprocess did."""

    args: list[str]
    rc: int | None
    stdout: str
    stderr: str
    wall: float
    timed_out: bool = False

    @property
    def error_lines(self) -> list[str]:
        return [ln.strip() for ln in self.stderr.splitlines() if ln.strip().startswith("error:")]


def _env(ctx: Ctx) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(ctx.fx.root / "hf-home"),
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", COLUMNS="200",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.update(ctx.env)
    return env


def _file_size_limit(nbytes: int) -> Callable[[], None]:
    """preexec_fn: writes past ``nbytes`` fail with EFBIG ('disk full') instead of killing the process."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return limit


def _save_logs(ctx: Ctx, label: str, proc: Proc) -> None:
    (ctx.dir / f"{label}.stdout").write_text(proc.stdout)
    (ctx.dir / f"{label}.stderr").write_text(proc.stderr)


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def cli(ctx: Ctx, args: list[str], label: str = "run", *, limit_bytes: int | None = None) -> Proc:
    """Run ``layershear ARGS`` in the case folder and wait (at most ``ctx.timeout`` seconds)."""
    t0 = time.monotonic()
    try:
        done = subprocess.run(CLI + args, cwd=ctx.dir, env=_env(ctx), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=ctx.timeout, start_new_session=True,
                              preexec_fn=_file_size_limit(limit_bytes) if limit_bytes else None)
        proc = Proc(args, done.returncode, done.stdout, done.stderr, time.monotonic() - t0)
    except subprocess.TimeoutExpired as e:
        proc = Proc(args, None, _text(e.stdout), _text(e.stderr), time.monotonic() - t0, timed_out=True)
    _save_logs(ctx, label, proc)
    return proc


@dataclass
class Running:
    """A ``layershear`` subprocess started in the background (logs go to files, so polling never blocks it)."""

    ctx: Ctx
    args: list[str]
    label: str
    popen: subprocess.Popen
    t0: float

    def alive(self) -> bool:
        return self.popen.poll() is None

    def finish(self) -> Proc:
        try:
            rc, timed_out = self.popen.wait(timeout=max(1.0, self.ctx.timeout - (time.monotonic() - self.t0))), False
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc, timed_out = None, True
            self.popen.wait()
        stdout, stderr = ((self.ctx.dir / f"{self.label}.{ext}").read_text(errors="replace") for ext in ("stdout", "stderr"))
        return Proc(self.args, rc, stdout, stderr, time.monotonic() - self.t0, timed_out)


def start(ctx: Ctx, args: list[str], label: str) -> Running:
    with open(ctx.dir / f"{label}.stdout", "w") as out, open(ctx.dir / f"{label}.stderr", "w") as err:
        popen = subprocess.Popen(CLI + args, cwd=ctx.dir, env=_env(ctx), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, start_new_session=True)
    return Running(ctx, args, label, popen, time.monotonic())


def wait_until(ready: Callable[[], bool], run: Running, poll_s: float = 0.005) -> bool:
    """Poll ``ready`` while ``run`` is alive and within its timeout; True once it holds."""
    while run.alive() and time.monotonic() - run.t0 < run.ctx.timeout:
        if ready():
            return True
        time.sleep(poll_s)
    return ready() and run.alive()


def describe(proc: Proc) -> str:
    """Observed: the exit code and the first ``error:`` line, else the traceback's last line."""
    if proc.timed_out:
        return f"timeout after {proc.wall:.0f} s"
    code = {-9: "killed (-9)", 130: "130", 143: "143"}.get(proc.rc, str(proc.rc))
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    if proc.error_lines:
        detail = proc.error_lines[0]
    elif lines and ("Traceback" in proc.stderr or (proc.rc or 0) > 0):
        detail = lines[-1]                       # the traceback's last line, or the last word of a failed run
    else:
        detail = ""
    detail = detail if len(detail) <= ERROR_CHARS else detail[:ERROR_CHARS - 1] + "…"
    return f"exit {code}" + (f": {detail}" if detail else "")


# --- fixtures ---------------------------------------------------------------------------------------

def write_tiny_gguf(path: Path) -> Path:
    """A 2-block random llama GGUF (fp32, byte-level BPE vocabulary) that ``convert-gguf`` can read."""
    import gguf
    import numpy as np
    from tokenizers import pre_tokenizers

    rng = np.random.default_rng(0)
    hidden, ffn, blocks, heads, kv_heads = 32, 64, 2, 4, 2
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["<s>", "</s>", "<pad>", "ĠĠ"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(blocks)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * 256 + [3] * 4)
    w.add_token_merges(["Ġ Ġ"])
    w.add_bos_token_id(256)
    w.add_eos_token_id(257)
    w.add_pad_token_id(258)

    def rand(*shape: int):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    kv = kv_heads * hidden // heads
    w.add_tensor("token_embd.weight", rand(len(tokens), hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output.weight", rand(len(tokens), hidden))
    for i in range(blocks):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)),
                            ("ffn_down", (hidden, ffn))):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class Fixtures:
    """Shared inputs, each built on first use under ``root/fixtures`` (cases copy what they break)."""

    def __init__(self, root: Path, timeout: float):
        self.root, self.timeout = root, timeout
        self.dir = root / "fixtures"
        self.dir.mkdir(parents=True, exist_ok=True)
        import transformers

        transformers.logging.disable_progress_bar()
        transformers.logging.set_verbosity_error()

    @cached_property
    def tiny(self) -> Path:
        from helpers import build_tiny_lm

        return build_tiny_lm(self.dir / "tiny")

    @cached_property
    def data(self) -> Path:
        """24 PIQA docs, labels = the tiny model's own choice on 20 of them (conftest.py's ``data_dirs``)."""
        from helpers import load, write_piqa
        from transformers import AutoTokenizer

        from layershear.data.benchmarks import load_split
        from layershear.scoring.scorer import Scorer

        base = write_piqa(self.dir / "data", 24)
        items = load_split("piqa", "validation", source="local", data_dir=base)
        scorer = Scorer(load(self.tiny), AutoTokenizer.from_pretrained(self.tiny), items)
        preds = [int(ok) ^ 1 for ok in scorer.accuracy().correct]   # gold is 0: a wrong answer means it picked 1
        return write_piqa(base, 24, [p if i % 6 else 1 - p for i, p in enumerate(preds)])

    @cached_property
    def big(self) -> Path:
        """A 350 MB random Llama (6 blocks of width 1024) in 50 MB shards: an export that lasts about a second."""
        import torch
        import transformers as tf

        path = self.dir / "big"
        torch.manual_seed(0)
        config = tf.LlamaConfig(vocab_size=260, hidden_size=1024, intermediate_size=4096, num_hidden_layers=6,
                                num_attention_heads=16, num_key_value_heads=4, bos_token_id=256, eos_token_id=257,
                                pad_token_id=258)
        tf.LlamaForCausalLM(config).save_pretrained(path, max_shard_size="50MB")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(self.tiny / name, path / name)
        return path

    @cached_property
    def gguf(self) -> Path:
        return write_tiny_gguf(self.dir / "tiny.gguf")

    @cached_property
    def reference_search(self) -> dict:
        """The ``search`` section of an uninterrupted run of the signalled prune (SLOW_PRUNE)."""
        ctx = Ctx(self, self.dir / "reference")
        ctx.dir.mkdir(exist_ok=True)
        proc = cli(ctx, slow_prune(ctx, "out"), "reference")
        if proc.rc != 0:
            raise RuntimeError(f"the reference prune failed: {describe(proc)}")
        return json.loads((ctx.dir / "out" / "layershear.json").read_text())["search"]

    def paths(self) -> list[tuple[str, str]]:
        """(absolute path, short name) of the fixtures, as the table shows them."""
        return [(str(self.dir / "big"), "BIG"), (str(self.dir / "tiny"), "TINY"), (str(self.dir / "data"), "DATA"),
                (str(self.dir), "FX")]

    def flag_sets(self) -> list[tuple[str, str]]:
        """(flags as typed, short name) of the shared flag sets, as the table shows them."""
        return [(shlex.join(slow_args(self)), "$SLOW"), (shlex.join(calib_args(self)), "$CALIB"),
                (shlex.join(eval_args(self)), "$EVAL")]


def calib_args(fx: Fixtures) -> list[str]:
    """The calibration flags of test_cli.py's prune on the tiny model, with the local rigged data."""
    return ["--calib", "piqa:16", "--data-source", "local", "--data-dir", str(fx.dir / "data"), "--batch-size", "8"]


def slow_args(fx: Fixtures) -> list[str]:
    """As calib_args, but one sequence per forward on the reference engine: a search of a few seconds, so a
    signal can land between the journal's second line and the end."""
    return ["--calib", "piqa:16", "--data-source", "local", "--data-dir", str(fx.dir / "data"), "--batch-size", "1",
            "--engine", "reference"]


def eval_args(fx: Fixtures) -> list[str]:
    return ["--tasks", "piqa:10", "--data-source", "local", "--data-dir", str(fx.dir / "data")]


# --- a case and its folder ---------------------------------------------------------------------------

@dataclass
class Ctx:
    """One case's folder and what the checks look at."""

    fx: Fixtures
    dir: Path
    src: Path | None = None                              # the input that must stay byte-identical
    out: Path | None = None                              # the target (--out folder or --json file)
    protect: list[Path] = field(default_factory=list)    # more paths that must stay byte-identical
    env: dict[str, str] = field(default_factory=dict)    # extra environment for the subprocess
    limit_bytes: int | None = None                       # RLIMIT_FSIZE of the subprocess ('disk full')
    marker: Path | None = None                           # a file the run must never create
    mentions: list[str] = field(default_factory=list)    # what the error must name, known only after setup

    @property
    def timeout(self) -> float:
        return self.fx.timeout

    def copy_tiny(self, name: str = "model") -> Path:
        self.src = Path(shutil.copytree(self.fx.tiny, self.dir / name))
        return self.src

    def rel(self, path: Path) -> str:
        """``path`` as the command gets it: relative to the case folder when inside it, else absolute."""
        return os.path.relpath(path, self.dir) if path.resolve().is_relative_to(self.dir.resolve()) else str(path)


@dataclass
class Outcome:
    """What a driver observed: the run the expectation is about, problems found on the way, and
    nothing-lost findings it made itself (e.g. before a re-run that legitimately writes --out)."""

    main: Proc
    observed: str
    problems: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    command: str | None = None


Check = Callable[[Ctx, Proc], "str | None"]
Driver = Callable[["Case", Ctx], Outcome]


def run_once(case: Case, ctx: Ctx) -> Outcome:
    proc = cli(ctx, case.argv(ctx), limit_bytes=ctx.limit_bytes)
    return Outcome(proc, describe(proc))


@dataclass
class Case:
    name: str                                  # unique; --only takes names or globs
    kind: str                                  # the fault, as the table names it
    setup: Callable[[Ctx], None]               # builds the broken input in ctx.dir, sets ctx.src/out/...
    argv: Callable[[Ctx], list[str]]           # the CLI arguments, paths relative to ctx.dir
    expected: str                              # the table's words for what must happen
    rc: int = 2                                # exit code of the main run (Popen's -9 for SIGKILL)
    mentions: tuple[str, ...] = ()             # each 'a|b': the error line (else stderr) names a or b
    checks: tuple[Check, ...] = ()             # further expectations on the main run
    drive: Driver = run_once                   # how the command is run
    leaves_out: bool = False                   # --out exists at the end (the case ends with a good run)
    pinned_by: str = ""                        # pytest node id that pins this row (filled in by the owner)


# --- shared checks ---------------------------------------------------------------------------------

def expectation_problems(case: Case, ctx: Ctx, proc: Proc) -> list[str]:
    """The generic expectation: exit code, no traceback, one clean error line that mentions what it must."""
    if proc.timed_out:
        return [f"timed out after {proc.wall:.0f} s"]
    problems = []
    if proc.rc != case.rc:
        problems.append(f"exit {proc.rc}, expected {case.rc}")
    if "Traceback" in proc.stderr:
        problems.append("traceback on stderr")
    if case.rc == 2 and len(proc.error_lines) != 1:
        problems.append(f"{len(proc.error_lines)} 'error:' lines, expected 1")
    text = proc.error_lines[0] if case.rc == 2 and proc.error_lines else proc.stderr
    for alternatives in (*case.mentions, *ctx.mentions):
        if not any(a.lower() in text.lower() for a in alternatives.split("|")):
            problems.append(f"does not mention {alternatives!r}")
    for check in case.checks:
        problem = check(ctx, proc)
        if problem:
            problems.append(problem)
    return problems


def no_search(ctx: Ctx, proc: Proc) -> str | None:
    """The run stopped before the search (no progress lines of a search on stderr)."""
    seen = [m.strip() for m in SEARCH_MARKERS if m in proc.stderr]
    return f"the search started ({', '.join(seen)!r} on stderr; {proc.wall:.0f} s)" if seen else None


def marker_absent(ctx: Ctx, proc: Proc) -> str | None:
    return f"{ctx.rel(ctx.marker)} was created: the checkpoint's code ran" if ctx.marker and ctx.marker.exists() else None


def out_loads(ctx: Ctx, proc: Proc) -> str | None:
    """The target is a complete model: transformers loads it with no missing or unexpected keys."""
    from helpers import load

    try:
        load(ctx.out)
    except Exception as e:   # any failure to load is the finding
        return f"{ctx.rel(ctx.out)} does not load: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(path: Path) -> dict[str, str]:
    """relative path -> SHA-256 (or 'dir') for ``path`` and everything under it; {} when it is missing."""
    if not path.exists():
        return {}
    if path.is_file():
        return {".": _sha256(path)}
    return {str(p.relative_to(path)): "dir" if p.is_dir() else _sha256(p) for p in sorted(path.rglob("*"))} | {".": "dir"}


def leftovers(out: Path) -> list[str]:
    """Hidden temp / old folders (or files) of an atomic write left beside ``out``."""
    if not out.parent.is_dir():
        return []
    return sorted(p.name for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*") for p in out.parent.glob(pattern))


class Guard:
    """Snapshots what must not be lost; :meth:`check` lists what was."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.before = {p: tree_hash(p) for p in dict.fromkeys(p for p in (ctx.src, *ctx.protect) if p)}
        self.out_existed = ctx.out is not None and ctx.out.exists()

    def check(self, out_may_exist: bool) -> list[str]:
        lost = []
        for path, before in self.before.items():
            after = tree_hash(path)
            if after == before:
                continue
            if not after:
                lost.append(f"{self.ctx.rel(path)} is gone")
                continue
            changed = [k for k in before if k in after and after[k] != before[k]]
            missing = [k for k in before if k not in after]
            added = [k for k in after if k not in before]
            parts = [f"{len(v)} {w} ({', '.join(v[:2])}{', …' if len(v) > 2 else ''})"
                     for v, w in ((changed, "changed"), (missing, "missing"), (added, "added")) if v]
            lost.append(f"{self.ctx.rel(path)}: {'; '.join(parts)}")
        out = self.ctx.out
        if out is not None:
            left = leftovers(out)
            if left:
                lost.append("left " + ", ".join(left))
            if not self.out_existed and not out_may_exist and out.exists():
                lost.append(f"half-written {self.ctx.rel(out)}")
        return lost


# --- setups: each makes its broken input in ctx.dir -----------------------------------------------------

def _shard_of(model: Path, tensor: str) -> Path:
    return model / json.loads((model / INDEX).read_text())["weight_map"][tensor]


def _poison(model: Path, tensor: str, value: float) -> None:
    """Set one element of ``tensor`` to ``value`` in its shard, keeping the shard's metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shard = _shard_of(model, tensor)
    with safe_open(shard, "pt") as f:
        metadata = f.metadata() or {"format": "pt"}
    tensors = {k: v.clone() for k, v in load_file(shard).items()}
    tensors[tensor].view(-1)[tensors[tensor].numel() // 2] = value
    save_file(tensors, shard, metadata=metadata)


def setup_nan(ctx: Ctx) -> None:
    _poison(ctx.copy_tiny(), NAN_TENSOR, float("nan"))
    ctx.out = ctx.dir / "out"


def setup_inf(ctx: Ctx) -> None:
    _poison(ctx.copy_tiny(), NAN_TENSOR, float("inf"))
    ctx.out = ctx.dir / "out"


def setup_index_omits(ctx: Ctx) -> None:
    src = ctx.copy_tiny()
    index = json.loads((src / INDEX).read_text())
    del index["weight_map"][OMITTED_TENSOR]
    (src / INDEX).write_text(json.dumps(index, indent=2))
    ctx.out = ctx.dir / "out"


def setup_remote_code(ctx: Ctx) -> None:
    src = ctx.copy_tiny()
    ctx.marker = ctx.dir / "MARKER-modeling_x-imported"
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    config["model_type"] = "x_custom"          # a model type transformers has no class for
    (src / "config.json").write_text(json.dumps(config, indent=2))
    (src / "modeling_x.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(ctx.marker)!r}).write_text('modeling_x.py was imported\\n')\n"
        "from transformers import LlamaForCausalLM\n\n\n"
        "class X(LlamaForCausalLM):\n    pass\n")
    ctx.out = ctx.dir / "out"


def setup_out_contains_src(ctx: Ctx) -> None:
    (ctx.dir / "parent").mkdir()
    ctx.copy_tiny("parent/model")
    ctx.out = ctx.dir / "parent"


def setup_out_is_src(ctx: Ctx) -> None:
    ctx.out = ctx.copy_tiny()


def setup_out_inside_src(ctx: Ctx) -> None:
    ctx.out = ctx.copy_tiny() / "pruned"


def setup_unrelated_out(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "notes"
    (ctx.out / "sub").mkdir(parents=True)
    (ctx.out / "notes.txt").write_text("my notes; not a model\n")
    (ctx.out / "sub" / "data.txt").write_text("1 2 3\n")
    ctx.protect.append(ctx.out)


def setup_concurrent(ctx: Ctx) -> None:
    ctx.src, ctx.out = ctx.fx.big, ctx.dir / "out"


def setup_truncated(ctx: Ctx) -> None:
    shard = _shard_of(ctx.copy_tiny(), NAN_TENSOR)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    ctx.mentions.append(shard.name)
    ctx.out = ctx.dir / "out"


def setup_bad_index(ctx: Ctx) -> None:
    (ctx.copy_tiny() / INDEX).write_text('{"metadata": {"total_size": 143056}, "weight_map": {"model.embed_tokens.')
    ctx.out = ctx.dir / "out"


def _previous_export(ctx: Ctx, args: list[str]) -> None:
    """A good run that writes ctx.out first: the previous output the faulty run must leave intact."""
    proc = cli(ctx, args, "previous")
    if proc.rc != 0:
        raise RuntimeError(f"the previous good run failed: {describe(proc)}")
    ctx.protect.append(ctx.out)


def setup_full_disk_export(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "out"
    _previous_export(ctx, ["export", "model", "--remove", "2", "--out", "out"])
    ctx.limit_bytes = FULL_DISK_BYTES


def setup_full_disk_gguf(ctx: Ctx) -> None:
    ctx.src = Path(shutil.copy(ctx.fx.gguf, ctx.dir / "tiny.gguf"))
    ctx.out = ctx.dir / "out"
    _previous_export(ctx, ["convert-gguf", "tiny.gguf", "--out", "out"])
    ctx.limit_bytes = FULL_DISK_BYTES


def setup_json_folder(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "results"
    ctx.out.mkdir()
    (ctx.out / "old.json").write_text('{"old": true}\n')
    ctx.protect.append(ctx.out)


def setup_json_missing_folder(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "missing" / "x.json"


def setup_json_under_file(ctx: Ctx) -> None:
    ctx.copy_tiny()
    (ctx.dir / "afile").write_text("a file, not a folder\n")
    ctx.out = ctx.dir / "afile" / "x.json"
    ctx.protect.append(ctx.dir / "afile")


def setup_json_full_disk(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "results.json"
    ctx.out.write_text(json.dumps({"results": "of an earlier run", "keep": list(range(40))}) + "\n")
    ctx.protect.append(ctx.out)
    ctx.limit_bytes = FULL_DISK_JSON_BYTES


def setup_no_tokenizer(ctx: Ctx) -> None:
    src = ctx.copy_tiny("no-tokenizer-model")
    for pattern in ("tokenizer*", "special_tokens_map.json", "chat_template*", "vocab.*", "merges.txt"):
        for p in src.glob(pattern):
            p.unlink()
    ctx.out = ctx.dir / "out"


def setup_pickle_only(ctx: Ctx) -> None:
    import torch
    from safetensors.torch import load_file

    src = ctx.dir / "bin-only"
    src.mkdir()
    state = {}
    for shard in sorted(ctx.fx.tiny.glob("*.safetensors")):
        state.update(load_file(shard))
    torch.save(state, src / "pytorch_model.bin")     # transformers 5 dropped save_pretrained(safe_serialization=False)
    for p in ctx.fx.tiny.iterdir():
        if p.suffix != ".safetensors" and p.name != INDEX:
            shutil.copy(p, src / p.name)
    ctx.src, ctx.out = src, ctx.dir / "out"


def setup_config_mismatch(ctx: Ctx) -> None:
    src = ctx.copy_tiny()
    config = json.loads((src / "config.json").read_text())
    config["intermediate_size"] = 48                 # the tensors have 64
    (src / "config.json").write_text(json.dumps(config, indent=2))
    ctx.out = ctx.dir / "out"


def setup_signal(ctx: Ctx) -> None:
    _ = ctx.fx.reference_search       # the uninterrupted run first
    ctx.src, ctx.out = ctx.fx.tiny, ctx.dir / "out"


def setup_journal(ctx: Ctx) -> None:
    ctx.src, ctx.out = ctx.fx.tiny, ctx.dir / "out"


def setup_term_export(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "out"
    _previous_export(ctx, ["export", "model", "--remove", "2", "--out", "out"])
    _ = ctx.fx.big                     # built before the timed run
    ctx.protect.append(ctx.fx.big)


def setup_stale_temp(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "out"
    tmp = ctx.dir / ".out.tmp-k1ll3d"
    tmp.mkdir()
    (tmp / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 4096)   # half an export
    (ctx.dir / ".out.old-k1ll3d").mkdir()


def setup_plain(ctx: Ctx) -> None:
    ctx.copy_tiny()
    ctx.out = ctx.dir / "out"


def setup_hub_offline(ctx: Ctx) -> None:
    setup_plain(ctx)
    ctx.env.update(HF_HUB_OFFLINE="1", HF_TOKEN="dummy")


def setup_out_under_file(ctx: Ctx) -> None:
    ctx.copy_tiny()
    (ctx.dir / "afile").write_text("a file, not a folder\n")
    ctx.protect.append(ctx.dir / "afile")
    ctx.out = ctx.dir / "afile" / "out"


# --- argv ----------------------------------------------------------------------------------------------

def prune(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["prune", ctx.rel(ctx.src), "--num-remove", "2", *calib_args(ctx.fx), "--out", ctx.rel(ctx.out),
                        *extra]


def export(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["export", ctx.rel(ctx.src), "--remove", "1", "--out", ctx.rel(ctx.out), *extra]


def evaluate(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["eval", ctx.rel(ctx.src), *eval_args(ctx.fx), *extra]


def eval_json(ctx: Ctx) -> list[str]:
    return evaluate("--json", ctx.rel(ctx.out))(ctx)


def convert(ctx: Ctx) -> list[str]:
    return ["convert-gguf", ctx.rel(ctx.src), "--out", ctx.rel(ctx.out), "--overwrite"]


def slow_prune(ctx: Ctx, out: str, num_remove: int = 2) -> list[str]:
    """The prune the signal cases interrupt (and its reference run): the tiny model, 2 steps, a few seconds."""
    return ["prune", str(ctx.fx.dir / "tiny"), "--num-remove", str(num_remove), *slow_args(ctx.fx), "--out", out]


# --- drivers: runs that are more than one command ------------------------------------------------------------

def journal_lines(out: Path) -> int:
    """Lines of the run's journal (``<out>.journal.jsonl`` beside --out; any ``*<out>*journal*`` there)."""
    paths = [out.with_name(out.name + ".journal.jsonl"), *out.parent.glob(f"*{out.name}*journal*")]
    for path in paths:
        try:
            return sum(1 for ln in path.read_text().splitlines() if ln.strip())
        except OSError:
            continue
    return 0


def _interrupt_when(ctx: Ctx, run: Running, ready: Callable[[], bool], sig: signal.Signals, what: str) -> tuple[Proc, str | None]:
    """Send ``sig`` once ``ready()``; returns the finished run and why the signal was not sent (or None)."""
    if wait_until(ready, run):
        run.popen.send_signal(sig)
        return run.finish(), None
    proc = run.finish()
    return proc, f"not injected: {what} never seen before the run ended ({describe(proc)}, {proc.wall:.0f} s)"


def _first_difference(a, b, path: str = "search") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k} only in one"
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} entries"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{path}[{i}]"))), None)
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def signalled(sig: signal.Signals) -> Driver:
    """Interrupt the slow prune once its journal has 2 lines; then the same command must finish the job
    with the uninterrupted run's search."""
    def drive(case: Case, ctx: Ctx) -> Outcome:
        guard = Guard(ctx)
        args = case.argv(ctx)
        proc, not_sent = _interrupt_when(ctx, start(ctx, args, "interrupted"), lambda: journal_lines(ctx.out) >= 2,
                                         sig, "a journal with 2 lines")
        outcome = Outcome(proc, describe(proc), lost=guard.check(out_may_exist=False))
        if not_sent:
            outcome.problems.append(not_sent)
            return outcome
        rerun = cli(ctx, args, "rerun")
        if rerun.rc != 0:
            outcome.problems.append(f"re-run: {describe(rerun)}")
            outcome.observed += f"; re-run: {describe(rerun)}"
            return outcome
        search = json.loads((ctx.out / "layershear.json").read_text())["search"]
        diff = _first_difference(ctx.fx.reference_search, search)
        if diff:
            outcome.problems.append(f"re-run's search differs: {diff[:100]}")
        outcome.observed += f"; re-run: exit 0, search {'≠' if diff else '='} uninterrupted run's"
        return outcome
    return drive


def two_at_once(case: Case, ctx: Ctx) -> Outcome:
    """Start the same export twice at the same moment; one must win, the other must say the target is busy."""
    args = case.argv(ctx)
    runs = [start(ctx, args, "first"), start(ctx, args, "second")]
    procs = [r.finish() for r in runs]
    rcs = [p.rc for p in procs]
    losers = [p for p in procs if p.rc != 0]
    main = losers[0] if losers else procs[1]
    outcome = Outcome(main, f"exits {rcs[0]} and {rcs[1]}" + (f"; {describe(main)}" if losers else ""),
                      command="2 × " + show(args, ctx))
    if sorted(rcs, key=str) != [0, 2]:
        outcome.problems.append(f"exit codes {rcs[0]} and {rcs[1]}, expected one 0 and one 2")
    if 0 in rcs:
        problem = out_loads(ctx, main)
        if problem:
            outcome.problems.append(problem)
    else:
        outcome.problems.append("no run wrote the model")
    return outcome


def term_during_export(case: Case, ctx: Ctx) -> Outcome:
    """SIGTERM an --overwrite export once its temp folder appears beside --out."""
    proc, not_sent = _interrupt_when(ctx, start(ctx, case.argv(ctx), "run"), lambda: bool(leftovers(ctx.out)),
                                     signal.SIGTERM, f"a .{ctx.out.name}.tmp-* folder")
    outcome = Outcome(proc, describe(proc))
    if not_sent:
        outcome.problems.append(not_sent)
    return outcome


def journal_differs(case: Case, ctx: Ctx) -> Outcome:
    """SIGKILL a --num-remove 2 prune mid-search, re-run it with --num-remove 1: one line naming the
    difference; then with --restart: a fresh run that succeeds."""
    guard = Guard(ctx)
    killed, not_sent = _interrupt_when(ctx, start(ctx, slow_prune(ctx, "out"), "killed"), lambda: journal_lines(ctx.out) >= 2,
                                       signal.SIGKILL, "a journal with 2 lines")
    if not_sent:
        return Outcome(killed, describe(killed), problems=[not_sent])
    args = case.argv(ctx)
    proc = cli(ctx, args, "differs")
    outcome = Outcome(proc, describe(proc), lost=guard.check(out_may_exist=False),
                      command=show(args, ctx) + " (journal of --num-remove 2), then again with --restart")
    restart = cli(ctx, [*args, "--restart"], "restart")
    outcome.observed += f"; --restart: {describe(restart)}"
    if restart.rc != 0:
        outcome.problems.append(f"--restart: {describe(restart)}")
    elif not (ctx.out / "config.json").is_file():
        outcome.problems.append("--restart wrote no model")
    return outcome


# --- the cases ---------------------------------------------------------------------------------------------

CLEAN = "exit 2, one error line"
INTACT = "source intact, no --out"

CASES: list[Case] = [
    Case("nan-weight-prune", "NaN weight", setup_nan, prune(), f"{CLEAN} naming the tensor; {INTACT}",
         mentions=(NAN_TENSOR,)),
    Case("nan-weight-eval", "NaN weight", setup_nan, evaluate(), f"{CLEAN} naming the tensor; source intact",
         mentions=(NAN_TENSOR,)),
    Case("inf-weight-prune", "Inf weight", setup_inf, prune(), f"{CLEAN} naming the tensor; {INTACT}",
         mentions=(NAN_TENSOR,)),
    Case("index-omits-export", "index omits a tensor", setup_index_omits, export(),
         f"{CLEAN} naming the tensor or the index; {INTACT}", mentions=(f"{OMITTED_TENSOR}|index",)),
    Case("index-omits-prune", "index omits a tensor", setup_index_omits, prune(),
         f"{CLEAN} naming the tensor or the index; {INTACT}", mentions=(f"{OMITTED_TENSOR}|index",)),
    Case("remote-code-prune", "config auto_map + modeling_x.py", setup_remote_code, prune(),
         f"refused ({CLEAN}); modeling_x.py never imported", checks=(marker_absent,)),
    Case("out-contains-src", "--out is the source's parent", setup_out_contains_src, export("--overwrite"),
         f"refused ({CLEAN}); source intact"),
    Case("out-is-src", "--out is the source", setup_out_is_src, export("--overwrite"), f"refused ({CLEAN}); source intact"),
    Case("out-inside-src", "--out inside the source", setup_out_inside_src, export("--overwrite"),
         f"refused ({CLEAN}); source intact"),
    Case("overwrite-unrelated", "--overwrite onto unrelated files", setup_unrelated_out, export("--overwrite"),
         f"refused ({CLEAN}); the files intact"),
    Case("concurrent-export", "two exports, one --out, same moment", setup_concurrent, export(),
         "one exit 0, one exit 2 naming the lock / other run; the result loads", mentions=("lock|another",),
         drive=two_at_once, leaves_out=True),
    Case("truncated-shard-export", "truncated shard", setup_truncated, export(), f"{CLEAN} naming the file; {INTACT}"),
    Case("truncated-shard-prune", "truncated shard", setup_truncated, prune(), f"{CLEAN} naming the file; {INTACT}"),
    Case("bad-index-export", "malformed index JSON", setup_bad_index, export(), f"{CLEAN} naming the index; {INTACT}",
         mentions=(INDEX,)),
    Case("bad-index-prune", "malformed index JSON", setup_bad_index, prune(), f"{CLEAN} naming the index; {INTACT}",
         mentions=(INDEX,)),
    Case("full-disk-export", f"disk full (RLIMIT_FSIZE {FULL_DISK_BYTES} B)", setup_full_disk_export,
         export("--overwrite"), f"{CLEAN}; no temp folder; previous output intact"),
    Case("full-disk-convert-gguf", f"disk full (RLIMIT_FSIZE {FULL_DISK_BYTES} B)", setup_full_disk_gguf, convert,
         f"{CLEAN}; no temp folder; previous output intact"),
    Case("json-is-folder", "--json is a folder", setup_json_folder, eval_json, f"{CLEAN} naming --json; folder intact",
         mentions=("--json",)),
    Case("json-missing-folder", "--json in a missing folder", setup_json_missing_folder, eval_json,
         f"{CLEAN} naming --json", mentions=("--json",)),
    Case("json-under-file", "--json under a file", setup_json_under_file, eval_json, f"{CLEAN} naming --json",
         mentions=("--json",)),
    Case("json-full-disk", f"--json on a full disk (RLIMIT_FSIZE {FULL_DISK_JSON_BYTES} B)", setup_json_full_disk,
         eval_json, f"{CLEAN}; the existing json intact"),
    Case("no-tokenizer-prune", "no tokenizer files", setup_no_tokenizer, prune(), f"{CLEAN} naming the folder; {INTACT}",
         mentions=("no-tokenizer-model",)),
    Case("pickle-only-prune", "only pytorch_model.bin", setup_pickle_only, prune(),
         f"{CLEAN} saying how to convert to safetensors, before any scoring", mentions=("safetensors",),
         checks=(no_search,)),
    Case("config-mismatch-prune", "config.json ≠ tensors (intermediate_size)", setup_config_mismatch, prune(),
         f"{CLEAN}; {INTACT}"),
    Case("signal-int-prune", "SIGINT mid-search", setup_signal, lambda ctx: slow_prune(ctx, "out"),
         "exit 130 saying how to resume; no --out, no temp; re-run: exit 0, same search", rc=130,
         mentions=("resume|re-run|rerun",), drive=signalled(signal.SIGINT), leaves_out=True),
    Case("signal-term-prune", "SIGTERM mid-search", setup_signal, lambda ctx: slow_prune(ctx, "out"),
         "exit 143 saying how to resume; no --out, no temp; re-run: exit 0, same search", rc=143,
         mentions=("resume|re-run|rerun",), drive=signalled(signal.SIGTERM), leaves_out=True),
    Case("signal-kill-prune", "SIGKILL mid-search", setup_signal, lambda ctx: slow_prune(ctx, "out"),
         "killed (-9); no --out, no temp; re-run: exit 0, same search", rc=-9, drive=signalled(signal.SIGKILL),
         leaves_out=True),
    Case("signal-term-export", "SIGTERM mid-export (--overwrite)", setup_term_export,
         lambda ctx: ["export", str(ctx.fx.big), "--remove", "1", "--out", "out", "--overwrite", "--max-shard-size", "10MB"],
         "exit 143; no temp folder; previous output intact", rc=143, drive=term_during_export),
    Case("stale-temp-export", "stale .out.tmp-* / .out.old-* beside --out", setup_stale_temp, export(),
         "exit 0; both swept; the result loads", rc=0, checks=(out_loads,), leaves_out=True),
    Case("hub-bad-repo-id", "--push-to-hub 'not a valid/repo/id'", setup_plain,
         prune("--push-to-hub", "not a valid/repo/id"), f"{CLEAN} before the search; no --out", checks=(no_search,)),
    Case("hub-offline", "--push-to-hub me/x, HF_HUB_OFFLINE=1, HF_TOKEN=dummy", setup_hub_offline,
         prune("--push-to-hub", "me/x"), f"{CLEAN} before the search; no --out", checks=(no_search,)),
    Case("journal-settings-differ", "resume with other settings", setup_journal,
         lambda ctx: slow_prune(ctx, "out", num_remove=1),
         f"{CLEAN} naming what differs; --restart: exit 0", mentions=("num-remove|num_remove",), drive=journal_differs,
         leaves_out=True),
    Case("out-under-file", "--out under a file (afile/out)", setup_out_under_file, prune(),
         f"{CLEAN} before loading; afile intact", mentions=("afile",), checks=(no_search,)),
]

#: the test that pins each row (its node id)
PINNED = {
    'nan-weight-prune': 'tests/model/test_checkpoint.py::test_non_finite_weight_names_the_tensor',
    'nan-weight-eval': 'tests/cli/test_faults.py::test_eval_of_a_nan_model_names_the_tensor',
    'inf-weight-prune': 'tests/model/test_checkpoint.py::test_non_finite_weight_names_the_tensor',
    'index-omits-export': 'tests/model/test_checkpoint.py::test_index_omits_a_tensor_a_shard_holds',
    'index-omits-prune': 'tests/model/test_checkpoint.py::test_index_omits_a_tensor_a_shard_holds',
    'remote-code-prune': 'tests/model/test_checkpoint.py::test_remote_code_is_refused_and_never_imported',
    'out-contains-src': 'tests/cli/test_faults.py::test_export_into_the_source_or_its_parent_is_refused',
    'out-is-src': 'tests/export/test_atomic.py::test_target_overlapping_the_source_is_refused',
    'out-inside-src': 'tests/export/test_atomic.py::test_target_overlapping_the_source_is_refused',
    'overwrite-unrelated': 'tests/export/test_atomic.py::test_overwrite_never_replaces_unrelated_files',
    'concurrent-export': 'tests/cli/test_faults.py::test_export_while_another_run_holds_the_lock',
    'truncated-shard-export': 'tests/model/test_checkpoint.py::test_truncated_shard',
    'truncated-shard-prune': 'tests/model/test_checkpoint.py::test_truncated_shard',
    'bad-index-export': 'tests/model/test_checkpoint.py::test_index_is_not_json',
    'bad-index-prune': 'tests/model/test_checkpoint.py::test_index_is_not_json',
    'full-disk-export': 'tests/export/test_exporter.py::test_failure_mid_export_leaves_old_folder_and_no_temp',
    'full-disk-convert-gguf': 'tests/export/test_atomic.py::test_full_disk_in_the_body_changes_nothing',
    'json-is-folder': 'tests/cli/test_faults.py::test_json_paths_that_cannot_be_written',
    'json-missing-folder': 'tests/cli/test_faults.py::test_json_paths_that_cannot_be_written',
    'json-under-file': 'tests/cli/test_faults.py::test_json_paths_that_cannot_be_written',
    'json-full-disk': 'tests/export/test_atomic.py::test_write_text_atomic_failure_keeps_the_previous_file',
    'no-tokenizer-prune': 'tests/model/test_checkpoint.py::test_no_tokenizer_files',
    'pickle-only-prune': 'tests/model/test_checkpoint.py::test_pickle_only_weights_are_refused_unread',
    'config-mismatch-prune': 'tests/model/test_checkpoint.py::test_config_disagreeing_with_the_tensors',
    'signal-int-prune': 'tests/pipeline/test_resume.py::test_killed_process_resumes_to_the_same_result',
    'signal-term-prune': 'tests/pipeline/test_resume.py::test_killed_process_resumes_to_the_same_result',
    'signal-kill-prune': 'tests/pipeline/test_resume.py::test_killed_process_resumes_to_the_same_result',
    'signal-term-export': 'tests/cli/test_faults.py::test_interruption_turned_into_another_error_exits_as_the_signal',
    'stale-temp-export': 'tests/export/test_atomic.py::test_atomic_folder_sweeps_first',
    'hub-bad-repo-id': 'tests/cli/test_faults.py::test_prune_refuses_before_loading',
    'hub-offline': 'tests/cli/test_faults.py::test_prune_refuses_before_loading',
    'journal-settings-differ': 'tests/pipeline/test_resume.py::test_journal_of_other_settings_is_refused',
    'out-under-file': 'tests/cli/test_faults.py::test_prune_out_under_a_file',
}
for _case in CASES:
    _case.pinned_by = PINNED.get(_case.name, "")


# --- running a case and printing the table -------------------------------------------------------------

@dataclass
class Row:
    case: Case
    command: str
    observed: str
    lost: list[str]
    problems: list[str]
    wall: float

    @property
    def ok(self) -> bool:
        return not self.lost and not self.problems


def show(args: list[str], ctx: Ctx) -> str:
    text = shlex.join(args)
    for long, short in ctx.fx.flag_sets() + ctx.fx.paths():
        text = text.replace(long, short)
    return "layershear " + text


def _short_paths(text: str, fx: Fixtures) -> str:
    for long, short in fx.paths():
        text = text.replace(long, short)
    return text


def run_case(case: Case, fx: Fixtures) -> Row:
    t0 = time.monotonic()
    ctx = Ctx(fx, fx.root / "cases" / case.name)
    ctx.dir.mkdir(parents=True)
    command = case.name
    try:
        case.setup(ctx)
        command = show(case.argv(ctx), ctx)
        guard = Guard(ctx)
        outcome = case.drive(case, ctx)
        problems = outcome.problems + expectation_problems(case, ctx, outcome.main)
        lost = outcome.lost + [x for x in guard.check(out_may_exist=case.leaves_out) if x not in outcome.lost]
        return Row(case, outcome.command or command, outcome.observed, lost, problems, time.monotonic() - t0)
    except Exception as e:   # a broken setup is a FAIL row, not a crashed harness
        (ctx.dir / "harness-error.txt").write_text(traceback.format_exc())
        return Row(case, command, f"harness error: {type(e).__name__}: {str(e)[:ERROR_CHARS]}", [],
                   ["the case could not run (see harness-error.txt with --keep)"], time.monotonic() - t0)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row]) -> str:
    pinned = any(r.case.pinned_by for r in rows)
    head = ["fault kind", "command", "expected", "observed", "nothing lost", "verdict"] + (["pinned by"] if pinned else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.case.kind, f"`{r.command}`", r.case.expected, r.observed,
                 "yes" if not r.lost else "no: " + "; ".join(r.lost),
                 "ok" if r.ok else "FAIL: " + "; ".join(r.problems or ["something lost"])]
        if pinned:
            cells.append(f"`{r.case.pinned_by}`" if r.case.pinned_by else "")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def report(rows: list[Row], fx: Fixtures, wall: float) -> str:
    ok = sum(r.ok for r in rows)
    legend = "; ".join(f"`{short}` = `{_short_paths(long, fx)}`" for long, short in fx.flag_sets())
    return "\n".join([
        "# Fault-injection table",
        "",
        f"`python scripts/fault_table.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {_git_head()}, "
        f"{os.cpu_count()} CPUs: **{ok} of {len(rows)} ok**, {wall:.0f} s.",
        "",
        "Each row runs `python -m layershear ...` in its own folder (paths relative to it; `FX` = the fixtures: "
        "`TINY` the 4-block random Llama of tests/helpers.py, `DATA` 24 PIQA docs rigged above chance, "
        "`BIG` a 350 MB random Llama). " + legend + ". *Nothing lost*: source and protected files byte-identical, "
        "no `.NAME.tmp-*` / `.NAME.old-*` beside the target, no half-written target.",
        "",
        table(rows),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="Also write the Markdown report to this file.")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="Run only these cases (names or globs; see --list).")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="Build everything in DIR and keep it (logs per case).")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="Seconds per subprocess [%(default)s].")
    parser.add_argument("--list", action="store_true", help="List the case names and exit.")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{c.name:26} {c.kind}" for c in CASES))
        return 0
    cases = CASES
    if args.only:
        unknown = [p for p in args.only if not any(fnmatch.fnmatchcase(c.name, p) for c in CASES)]
        if unknown:
            parser.error(f"no case matches {', '.join(unknown)}; --list shows the names")
        cases = [c for c in CASES if any(fnmatch.fnmatchcase(c.name, p) for p in args.only)]

    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    sys.path.insert(0, str(TESTS))
    sys.path.insert(0, str(REPO))
    if args.keep:
        if args.keep.exists() and any(args.keep.iterdir()):
            parser.error(f"--keep {args.keep}: not empty; give a new or empty folder")
        args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep.resolve()
    else:
        root = Path(tempfile.mkdtemp(prefix="layershear-faults-"))
    t0 = time.monotonic()
    try:
        fx = Fixtures(root, args.timeout)
        print(f"fixtures in {fx.dir}", file=sys.stderr)
        _ = fx.tiny, fx.data                              # built before the first case
        rows = []
        for i, case in enumerate(cases, 1):
            row = run_case(case, fx)
            rows.append(row)
            print(f"[{i}/{len(cases)}] {case.name}: {'ok' if row.ok else 'FAIL'} ({row.wall:.1f} s) {row.observed}",
                  file=sys.stderr, flush=True)
        wall = time.monotonic() - t0
        text = report(rows, fx, wall)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    ok = sum(r.ok for r in rows)
    print(f"{ok} of {len(rows)} ok ({wall:.0f} s){'' if ok == len(rows) else f'; {len(rows) - ok} FAIL'}", file=sys.stderr)
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
