"""Baseline block scores (ShortGPT BI, angular distance, perplexity, Taylor) against hand-made references."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import byte_tokenizer, load

from layershear.data.benchmarks.base import MCItem
from layershear.errors import LayershearError, ScoringError
from layershear.model.arch import decoder_blocks
from layershear.scoring.baselines import (
    angular_scores,
    calibration_texts,
    cosine_scores,
    perplexity,
    perplexity_scores,
    taylor_scores,
)

TEXTS = ["the quick brown fox jumps over the lazy dog", "a short one", "pack my box with five dozen liquor jugs!", "xy"]


class CharTokenizer:
    """Minimal tokenizer: one id < 128 per character, nothing else."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        assert add_special_tokens is False
        return {"input_ids": [[3 + ord(c) % 120 for c in t] for t in texts]}


TOK = CharTokenizer()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def llama(tiny_checkpoints: Callable[[str], Path]) -> torch.nn.Module:
    return load(tiny_checkpoints("llama"))


def _all_four(model: torch.nn.Module, texts: list[str], **kw: object) -> dict[str, dict[int, float]]:
    return {
        "cosine": cosine_scores(model, TOK, texts, **kw),
        "angular": angular_scores(model, TOK, texts, **kw),
        "perplexity": perplexity_scores(model, TOK, texts, **kw),
        "taylor": taylor_scores(model, TOK, texts, **kw),
    }


def _reference_states(model: torch.nn.Module, ids: list[int]) -> list[torch.Tensor]:
    """x_0 .. x_L for one unpadded text: block inputs from output_hidden_states, x_L from the final norm's input."""
    captured: list[torch.Tensor] = []
    handle = model.model.norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states
    finally:
        handle.remove()
    num_blocks = len(decoder_blocks(model))
    return [h[0].double() for h in hidden[:num_blocks]] + [captured[0][0].double()]


def _reference_span(model: torch.nn.Module, encoded: list[list[int]], n: int, angular: bool) -> dict[int, float]:
    sums: dict[int, float] = {}
    tokens = 0
    for ids in encoded:
        xs = _reference_states(model, ids)
        tokens += len(ids)
        for start in range(len(xs) - n):
            cos = F.cosine_similarity(xs[start], xs[start + n], dim=-1)
            value = torch.arccos(cos.clamp(-1, 1)) / math.pi if angular else 1 - cos
            sums[start] = sums.get(start, 0.0) + float(value.sum())
    return {start: s / tokens for start, s in sums.items()}


def _pruned_copy(model: torch.nn.Module, removed: int) -> torch.nn.Module:
    """A deep copy with one block deleted by hand (not via remove_blocks)."""
    pruned = copy.deepcopy(model)
    layers = pruned.model.layers
    pruned.model.layers = torch.nn.ModuleList([b for i, b in enumerate(layers) if i != removed])
    pruned.config.num_hidden_layers = len(pruned.model.layers)
    return pruned


def test_calibration_texts_takes_gold_context_and_continuation() -> None:
    item = MCItem("t", 0, ("ctx A", "ctx B"), (" one", " two"), 1, (3, 3))
    assert calibration_texts([item]) == ["ctx B two"]


def test_identity_block_scores_zero(llama: torch.nn.Module) -> None:
    block = decoder_blocks(llama)[2]
    with torch.no_grad():
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    scores = _all_four(llama, TEXTS, batch_size=3)
    assert abs(scores["cosine"][2]) < 1e-6
    assert abs(scores["angular"][2]) < 1e-6
    assert scores["perplexity"][2] == pytest.approx(perplexity(llama, TOK, TEXTS), rel=1e-5)
    assert scores["taylor"][2] == 0.0
    for metric in ("cosine", "angular", "taylor"):
        assert min(v for k, v in scores[metric].items() if k != 2) > 1e-4, metric


def test_span_scores_match_unpadded_reference(tiny_lm_dir: Path) -> None:
    model, tokenizer = load(tiny_lm_dir), byte_tokenizer()
    texts = ["The cat sat on the mat, twice.", "Hi there"]  # unequal lengths: batch_size=2 pads the second
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    got = cosine_scores(model, tokenizer, texts, batch_size=2)
    assert got == pytest.approx(_reference_span(model, encoded, 1, angular=False), abs=1e-5)
    for n in (1, 2, 4):
        got = angular_scores(model, tokenizer, texts, n=n, batch_size=2)
        assert sorted(got) == list(range(4 - n + 1))
        assert got == pytest.approx(_reference_span(model, encoded, n, angular=True), abs=1e-5)


def test_perplexity_matches_hf_loss(tiny_lm_dir: Path) -> None:
    model, tokenizer = load(tiny_lm_dir), byte_tokenizer()
    texts = ["The cat sat on the mat, twice.", "Hi there", "x"]  # "x" predicts nothing
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"][:2]:
            t = torch.tensor([ids])
            total += float(model(input_ids=t, labels=t).loss) * (len(ids) - 1)
            count += len(ids) - 1
    assert perplexity(model, tokenizer, texts, batch_size=3) == pytest.approx(math.exp(total / count), rel=1e-5)


def test_max_length_keeps_the_last_tokens(llama: torch.nn.Module) -> None:
    long = "abcdefghijklmnopqrstuvwxyz"
    assert cosine_scores(llama, TOK, [long], max_length=5) == pytest.approx(cosine_scores(llama, TOK, [long[-5:]]), abs=1e-6)


def test_removed_uses_original_indices_and_restores(llama: torch.nn.Module) -> None:
    before = [id(b) for b in decoder_blocks(llama)]
    got = _all_four(llama, TEXTS, removed={1}, batch_size=2)
    got["angular_n2"] = angular_scores(llama, TOK, TEXTS, n=2, removed={1}, batch_size=2)
    assert [id(b) for b in decoder_blocks(llama)] == before
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in decoder_blocks(llama))

    pruned = _pruned_copy(llama, 1)
    want = _all_four(pruned, TEXTS, batch_size=2)
    want["angular_n2"] = angular_scores(pruned, TOK, TEXTS, n=2, batch_size=2)
    original = [0, 2, 3, 4, 5]
    for metric, scores in want.items():
        assert got[metric] == pytest.approx({original[k]: v for k, v in scores.items()}, rel=1e-5), metric
    assert sorted(got["angular_n2"]) == [0, 2, 3, 4]


def test_taylor_leaves_parameters_untouched_and_matches_backward(llama: torch.nn.Module) -> None:
    llama.model.embed_tokens.weight.requires_grad_(False)
    sentinel = torch.ones_like(llama.lm_head.weight)
    llama.lm_head.weight.grad = sentinel
    flags = {name: p.requires_grad for name, p in llama.named_parameters()}

    got = taylor_scores(llama, TOK, TEXTS, batch_size=3)  # two batches: accumulation is token-weighted

    assert {name: p.requires_grad for name, p in llama.named_parameters()} == flags
    assert llama.lm_head.weight.grad is sentinel
    assert all(p.grad is None for name, p in llama.named_parameters() if name != "lm_head.weight")
    assert not llama.training
    with torch.inference_mode():  # the caller's inference mode must not break the backward pass
        assert taylor_scores(llama, TOK, TEXTS, batch_size=3) == pytest.approx(got, rel=1e-9)

    reference = copy.deepcopy(llama)
    reference.requires_grad_(True)
    encoded = TOK(TEXTS)["input_ids"]
    loss = sum(F.cross_entropy(reference(input_ids=torch.tensor([ids])).logits[0, :-1], torch.tensor(ids[1:]), reduction="sum")
               for ids in encoded) / sum(len(ids) - 1 for ids in encoded)
    reference.zero_grad()
    loss.backward()
    want = {i: sum(float((p.detach() * p.grad).abs().sum()) for p in b.parameters()) for i, b in enumerate(reference.model.layers)}
    assert got == pytest.approx(want, rel=1e-4)


def test_perplexity_scores_equal_perplexity_without_each_block(llama: torch.nn.Module) -> None:
    scores = perplexity_scores(llama, TOK, TEXTS, removed={4})
    assert scores == pytest.approx({b: perplexity(llama, TOK, TEXTS, removed={4, b}) for b in (0, 1, 2, 3, 5)}, rel=1e-9)


@pytest.mark.parametrize(
    ("call", "texts", "match"),
    [
        (cosine_scores, [], "no calibration texts"),
        (angular_scores, [""], "tokenise to no tokens"),
        (taylor_scores, "one text", "one string"),
        (perplexity, ["a", "b"], "single token"),
        (taylor_scores, ["a"], "single token"),
    ],
)
def test_bad_texts_raise(llama: torch.nn.Module, call: Callable, texts: object, match: str) -> None:
    with pytest.raises(ScoringError, match=match):
        call(llama, TOK, texts)


def test_bad_arguments_raise_and_restore(llama: torch.nn.Module) -> None:
    with pytest.raises(ScoringError, match="n=7 blocks per span"):
        angular_scores(llama, TOK, TEXTS, n=7)
    with pytest.raises(ScoringError, match="n=0"):
        angular_scores(llama, TOK, TEXTS, n=0)
    with pytest.raises(ScoringError, match="batch_size=0"):
        cosine_scores(llama, TOK, TEXTS, batch_size=0)
    with pytest.raises(ScoringError, match="only block 5 remains"):
        perplexity_scores(llama, TOK, TEXTS, removed={0, 1, 2, 3, 4})
    with pytest.raises(LayershearError):
        cosine_scores(llama, TOK, TEXTS, removed={6})
    assert len(decoder_blocks(llama)) == 6
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in decoder_blocks(llama))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_every_metric_runs_on_architecture(tiny_checkpoints: Callable[[str], Path], arch: str) -> None:
    model = load(tiny_checkpoints(arch))
    texts = ["a sliding window of four tokens is shorter than this", "tiny"]
    for metric, scores in _all_four(model, texts, batch_size=2).items():
        assert sorted(scores) == list(range(6)), metric
        assert all(math.isfinite(v) and v >= 0 for v in scores.values()), metric
    assert sorted(angular_scores(model, TOK, texts, n=3)) == [0, 1, 2, 3]
    assert len(decoder_blocks(model)) == 6
