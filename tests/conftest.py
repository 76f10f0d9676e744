"""Shared fixtures: offline mode and tiny random checkpoints of every supported architecture."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf

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


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _tiny_tokenizer() -> tf.PreTrainedTokenizerFast:
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
        _tiny_tokenizer().save_pretrained(path)
        (path / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Return ``get(name) -> Path``, building each architecture's checkpoint once per session."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = build_checkpoint(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.fixture(scope="session", params=sorted(ARCHS))
def tiny_checkpoint(request: pytest.FixtureRequest, tiny_checkpoints: Callable[[str], Path]) -> tuple[str, Path]:
    """``(name, folder)`` for every architecture in ``ARCHS``."""
    return request.param, tiny_checkpoints(request.param)


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


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-block random Llama with the byte tokenizer, saved as an HF folder (several shards)."""
    path = tmp_path_factory.mktemp("tiny_lm")
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=BYTE_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, bos_token_id=256, eos_token_id=257,
                            pad_token_id=258, max_position_embeddings=2048)
    tf.LlamaForCausalLM(config).eval().save_pretrained(path, max_shard_size="40KB")
    byte_tokenizer().save_pretrained(path)
    return path
