"""Shared test helpers (not fixtures; those are in conftest.py): tiny models and tokenizers, item builders,
the CLI runner, and the cache plans and greedy steps of the engine tests.

Test modules import from here (``from helpers import ...``; ``tests/`` is on ``pythonpath`` in
pyproject.toml), never from each other or from conftest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf
from click.testing import CliRunner

from layershear.cli import cli
from layershear.data.benchmarks import MCItem
from layershear.engine.prefix_cache import CachePlan
from layershear.scoring.scorer import Scorer, SearchPlan

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SCRIPTS_DIR = REPO_ROOT / "scripts"
BENCHMARK_FIXTURES = TESTS_DIR / "data" / "benchmarks"   # small user files for load_path (not the shared data)

# --- tiny random checkpoints of every supported architecture -------------------------------------

TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4)
KV = dict(num_key_value_heads=2)
WINDOW = 4  # tiny sliding window; tests use sequences longer than this
SEQ_LEN = 12

# name -> (config class, model class, config kwargs, config.json keys to delete after saving)
ARCHS: dict[str, tuple[Any, Any, dict[str, Any], tuple[str, ...]]] = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {**TINY, **KV}, ()),
    "llama_tied": (tf.LlamaConfig, tf.LlamaForCausalLM, {**TINY, **KV, "tie_word_embeddings": True}, ()),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, {**TINY, **KV, "sliding_window": WINDOW}, ()),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {**TINY, **KV}, ()),
    # Hub-style Qwen2 config: the sliding pattern comes from max_window_layers (blocks >= 3 slide).
    "qwen2_swa": (
        tf.Qwen2Config, tf.Qwen2ForCausalLM,
        {**TINY, **KV, "use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 3},
        ("layer_types",),
    ),
    "qwen3": (
        tf.Qwen3Config, tf.Qwen3ForCausalLM,
        {**TINY, **KV, "head_dim": 8, "use_sliding_window": True, "sliding_window": WINDOW,
         "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention",
                         "sliding_attention", "full_attention"]},
        (),
    ),
    "gemma2": (
        tf.Gemma2Config, tf.Gemma2ForCausalLM,
        {**TINY, **KV, "head_dim": 8, "sliding_window": WINDOW, "query_pre_attn_scalar": 8}, (),
    ),
    # Old Gemma2 config.json without layer_types: transformers alternates sliding/full by block index.
    "gemma2_old": (
        tf.Gemma2Config, tf.Gemma2ForCausalLM,
        {**TINY, **KV, "head_dim": 8, "sliding_window": WINDOW, "query_pre_attn_scalar": 8}, ("layer_types",),
    ),
    # Gemma3 text config with only sliding_window_pattern=3: blocks 2 and 5 are full attention.
    "gemma3_text": (
        tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
        {**TINY, **KV, "head_dim": 8, "sliding_window": WINDOW, "sliding_window_pattern": 3,
         "query_pre_attn_scalar": 8},
        ("layer_types",),
    ),
    "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, {**TINY, **KV, "pad_token_id": 0}, ()),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, {**TINY, **KV, "pad_token_id": 0}, ()),
    "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, dict(TINY), ()),
    "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel, dict(vocab_size=128, n_embd=32, n_layer=6, n_head=4, n_positions=64), ()),
}


def word_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer for the 128-id tiny checkpoints: ``w3`` .. ``w127`` are ids 3..127."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 128)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def build_checkpoint(name: str, path: Path) -> Path:
    """Save a tiny random ``name`` model to ``path`` in several 20 KB shards."""
    cfg_cls, model_cls, kwargs, strip = ARCHS[name]
    torch.manual_seed(0)
    model = model_cls(cfg_cls(**kwargs)).eval()
    model.save_pretrained(path, max_shard_size="20KB")
    if strip:
        config = json.loads((path / "config.json").read_text())
        for key in strip:
            config.pop(key, None)
        (path / "config.json").write_text(json.dumps(config, indent=2))
    if name == "llama":
        word_tokenizer().save_pretrained(path)
        (path / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    return path


def load(path: Path) -> tf.PreTrainedModel:
    """Load a checkpoint in fp32, eval mode, asserting no missing, unexpected or mismatched keys."""
    model, info = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    assert not problems, f"loading {path}: {problems}"
    return model.eval()


def random_ids(batch: int = 2, seq_len: int = SEQ_LEN, seed: int = 0) -> torch.Tensor:
    """Deterministic random token ids, shape ``(batch, seq_len)``, int64."""
    return torch.randint(3, 128, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


# --- a tiny LM that can read any text (byte-level tokenizer), for scorer and CLI tests ---------------

BYTE_VOCAB = 260  # 256 byte symbols + <s>, </s>, <pad>, spare


def byte_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: every UTF-8 byte is one token (ids 0-255)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({"<s>": 256, "</s>": 257, "<pad>": 258})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tiny_lm(path: Path) -> Path:
    """Save a 4-block random Llama with the byte tokenizer to ``path`` as an HF folder (several shards)."""
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=BYTE_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, bos_token_id=256, eos_token_id=257,
                            pad_token_id=258, max_position_embeddings=2048)
    tf.LlamaForCausalLM(config).eval().save_pretrained(path, max_shard_size="40KB")
    byte_tokenizer().save_pretrained(path)
    return path


# --- items and a character tokenizer for the 128-id tiny checkpoints ------------------------------

class CharTokenizer:
    """Maps every character to one id in 3..122 (the tiny checkpoints have 128 ids)."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[3 + ord(c) % 120 for c in t] for t in texts]}


def mc_items(n: int = 6) -> list[MCItem]:
    """``n`` three-choice arc_easy items for CharTokenizer."""
    # contexts longer than the tiny sliding window (4) and of different lengths, so batches are padded
    out = []
    for i in range(n):
        ctx = f"Question {i}: which way{'?' * (i % 3)} now" + " and then" * (i % 2)
        out.append(MCItem("arc_easy", i, (ctx,) * 3, (" left", " right side", " up" * (1 + i % 2)), i % 3,
                          (4, 10, 3 * (1 + i % 2))))
    return out


def rigged_piqa(tiny_lm_dir):
    """(model, tokenizer, 24 PIQA docs) with the gold labels rigged to the full model's own choices on
    20 of 24 docs, so that relevance is defined for the random tiny model."""
    from transformers import AutoTokenizer

    from layershear.data.benchmarks import find_data_dir, load_split

    if find_data_dir() is None:
        pytest.skip("../shared/data/benchmarks not found")
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = load(tiny_lm_dir)
    items = load_split("piqa", "validation", source="local")[:24]
    probe = Scorer(model, tokenizer, items, engine="reference").accuracy()
    rigged = [MCItem(it.task, it.doc_id, it.contexts, it.continuations,
                     (it.gold if ok else 1 - it.gold) if k % 6 else (1 - it.gold if ok else it.gold), it.choice_lengths)
              for k, (it, ok) in enumerate(zip(items, probe.correct))]
    return model, tokenizer, rigged


# --- the CLI ----------------------------------------------------------------------------------------

GOALS = ["clean a pan", "open a jar", "dry wet shoes", "cut bread", "fix a chair", "boil an egg",
         "plant a seed", "fold a shirt", "light a fire", "sharpen a knife", "paint a wall", "wash a car"]


def write_piqa(folder: Path, n: int, labels: list[int] | None = None) -> Path:
    """Write ``n`` PIQA-format validation docs (``piqa/valid.jsonl`` and labels) under ``folder``."""
    piqa = folder / "piqa"
    piqa.mkdir(parents=True, exist_ok=True)
    rows = [{"goal": f"How to {GOALS[i % 12]} ({i})?", "sol1": f"use a {'cloth' if i % 3 else 'stone'} {i % 5}",
             "sol2": f"try the {'water' if i % 2 else 'sun'} then wait {i % 7}"} for i in range(n)]
    (piqa / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (piqa / "valid-labels.lst").write_text("".join(f"{x}\n" for x in (labels or [0] * n)))
    return folder


def run_cli(*args: str):
    """Invoke the ``layershear`` CLI in-process (click's CliRunner), exceptions not caught."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


# --- cache plans and greedy steps for the step-reuse and stacking tests -----------------------------

ROOMY = 1 << 30      # budget the plan leaves for stored states


def reuse_plan(where: str = "device", every: int = 1, budget: int = ROOMY) -> CachePlan:
    """A CachePlan keeping every ``every``-th block input on ``where``, leaving ``budget`` bytes for step reuse."""
    return CachePlan(where, every, 0, 0, budget)


def greedy_steps(scorer: Scorer, order: list[int] | None = None, steps: int = 4) -> list[tuple[frozenset[int], dict]]:
    """Children evaluations of a greedy search (``order``: the blocks to remove, else the best child
    each time, as GreedyPruner picks it), without the above-random check."""
    scorer.expect(SearchPlan(depth=len(order) if order else steps))
    parent, out = frozenset(), []
    for depth in range(len(order) if order else steps):
        children = scorer.children(parent, [b for b in range(scorer.num_blocks) if b not in parent])
        out.append((parent, children))
        parent = parent | {order[depth]} if order else min(children.values(), key=lambda a: a.rank_key).removed
    return out
