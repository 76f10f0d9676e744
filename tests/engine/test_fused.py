"""Fewer element-wise kernels (layershear.engine.fused) and the fp32 log-probabilities of the scored positions."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import CharTokenizer, load, mc_items, random_ids

import layershear.engine.fused as fused_module
from layershear.engine.config import ENGINES
from layershear.engine.forward import target_logprobs
from layershear.engine.fused import Fusion, fusable_norms, fused_kernels, rotary_embedding, rotary_modules
from layershear.scoring.scorer import Scorer

# name -> RMSNorm modules expected swappable in a 6-block tiny model: 2 per block + the final norm,
# plus per-head q/k norms (Qwen3: 2 per block; OLMo-2: 2 per block over the projections)
EXPECTED = {"llama": 13, "mistral": 13, "qwen2": 13, "qwen3": 25, "olmo2": 25, "phi3": 13,
            "gemma2": 0, "gemma3_text": 0, "gpt_neox": 0, "gpt2": 0}


def _perturbed(name: str, tiny_checkpoints) -> torch.nn.Module:
    """The tiny model with random norm weights, so a norm that ignored its weight would show."""
    model = load(tiny_checkpoints(name))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__.endswith("Norm") and isinstance(getattr(module, "weight", None), torch.Tensor):
                module.weight.add_(0.5 * torch.randn(module.weight.shape, generator=generator))
    return model


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fused_kernels_give_the_eager_logits(tiny_checkpoints, name, monkeypatch):
    model = _perturbed(name, tiny_checkpoints)
    fusion = Fusion.of(model)
    assert len(fusion.norms) == EXPECTED[name]
    assert len(fusion.rotary) == (name != "gpt2")   # one modeling module per model; GPT-2 has no rotary
    ids = random_ids()
    with torch.no_grad():
        want = model(input_ids=ids).logits
        calls, rms_norm = [], F.rms_norm
        monkeypatch.setattr(fused_module.F, "rms_norm", lambda *a: calls.append(1) or rms_norm(*a))
        with fused_kernels(fusion) as swapped:
            got = model(input_ids=ids).logits
    assert swapped == (len(fusion.norms), len(fusion.rotary))
    assert fusion.describe().startswith(f"fused kernels: {len(fusion.norms)} RMSNorm" if fusion.norms or fusion.rotary
                                        else "fused kernels: none")
    assert len(calls) == len(fusion.norms)   # each swapped module ran the fused op once
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert all("forward" not in vars(m) for m in fusion.norms)   # eager forms back
    assert all(not hasattr(ns.apply_rotary_pos_emb, "eager") for ns in fusion.rotary)


def test_rotary_embedding_equals_rotate_half():
    import transformers.models.llama.modeling_llama as llama

    q, k, angles = torch.randn(3, 4, 7, 16), torch.randn(3, 2, 7, 16), torch.randn(3, 7, 8)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    for got, want in zip(rotary_embedding(q, k, cos, sin), llama.apply_rotary_pos_emb(q, k, cos, sin)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # [batch, seq, heads, head_dim] layout
    for got, want in zip(rotary_embedding(q.transpose(1, 2), k.transpose(1, 2), cos, sin, unsqueeze_dim=2),
                         llama.apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin, unsqueeze_dim=2)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_partial_rotary_takes_the_eager_function(tiny_checkpoints):
    import transformers.models.gpt_neox.modeling_gpt_neox as neox

    model = load(tiny_checkpoints("gpt_neox"))   # rotary_pct 0.25: cos covers a quarter of head_dim
    assert rotary_modules(model) == [neox]
    q, k, angles = torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8), torch.randn(1, 5, 1)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    want = neox.apply_rotary_pos_emb(q, k, cos, sin)
    with fused_kernels(Fusion(rotary=[neox])):
        got = neox.apply_rotary_pos_emb(q, k, cos, sin)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_eager_forms_come_back_after_an_error(tiny_checkpoints):
    import transformers.models.llama.modeling_llama as llama

    eager = llama.apply_rotary_pos_emb
    fusion = Fusion.of(load(tiny_checkpoints("llama")))
    with pytest.raises(RuntimeError, match="boom"), fused_kernels(fusion):
        assert all("forward" in vars(m) for m in fusion.norms) and llama.apply_rotary_pos_emb is not eager
        raise RuntimeError("boom")
    assert all("forward" not in vars(m) for m in fusion.norms) and llama.apply_rotary_pos_emb is eager


def test_nested_use_swaps_once(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    fusion = Fusion.of(model)
    with fused_kernels(fusion) as outer, fused_kernels(fusion) as inner:
        assert outer == (13, 1) and inner == (0, 0)
        assert Fusion.of(model).rotary == fusion.rotary   # planning sees through a running swap
    assert all("forward" not in vars(m) for m in fusion.norms)


def test_hooked_variant_and_other_dtype_inputs_stay_eager(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    norm = model.model.norm
    norm._hf_hook = object()   # accelerate replaces the forward of modules it hooks
    assert norm not in fusable_norms(model)
    del norm._hf_hook

    class OnePlusRMSNorm(type(norm)):   # Gemma-style weight offset: not F.rms_norm with the weight
        def forward(self, x):
            return super().forward(x) * (1.0 + self.weight) / self.weight

    norm.__class__ = OnePlusRMSNorm
    assert norm not in fusable_norms(model)
    norm.__class__ = OnePlusRMSNorm.__mro__[1]
    with fused_kernels(Fusion(norms=[norm])):   # a bf16 input into an fp32 norm takes the eager forward (fp32 output, as HF's)
        x = torch.randn(2, 32).bfloat16()
        assert norm(x).dtype == torch.float32


def test_scorer_with_and_without_fused_norms_agree(tiny_checkpoints):
    model = _perturbed("qwen3", tiny_checkpoints)
    fused = Scorer(model, CharTokenizer(), mc_items(9), batch_size=4)
    eager = Scorer(model, CharTokenizer(), mc_items(9), batch_size=4,
                   engine=dataclasses.replace(ENGINES["fast"], fused_kernels=False))
    reference = Scorer(model, CharTokenizer(), mc_items(9), batch_size=4, engine="reference")
    assert len(fused.engine.fusion.norms) == 25 and len(fused.engine.fusion.rotary) == 1
    assert eager.engine.fusion == Fusion() and reference.engine.fusion == Fusion()
    for parent in (frozenset(), frozenset({3})):
        got, want = fused.children(parent, [0, 5]), eager.children(parent, [0, 5])
        for b in (0, 5):
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-5, rtol=1e-6)
            torch.testing.assert_close(got[b].loglikelihoods, reference.accuracy(parent | {b}).loglikelihoods,
                                       atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("chunk_elements", [1, 50, 1 << 26])
def test_target_logprobs_equal_log_softmax(chunk_elements):
    generator = torch.Generator().manual_seed(0)
    logits = (8 * torch.randn(7, 33, generator=generator)).bfloat16()
    targets = torch.randint(0, 33, (7,), generator=generator)
    want = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
    got = target_logprobs(logits, targets, chunk_elements=chunk_elements)
    assert got.dtype == torch.float32 and got.shape == (7,)
    torch.testing.assert_close(got, want, atol=0, rtol=0)   # row-wise: chunking changes nothing


def test_other_call_forms_and_variants_take_the_eager_code(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    norm = model.model.norm

    class GatedRMSNorm(type(norm)):   # Mamba2/Bamba style: forward(hidden_states, gate=None)
        def forward(self, hidden_states, gate=None):
            out = super().forward(hidden_states)
            return out if gate is None else out * torch.sigmoid(gate)

    norm.__class__ = GatedRMSNorm
    assert norm in fusable_norms(model)   # equal to F.rms_norm without a gate
    x, gate = torch.randn(3, 32), torch.randn(3, 32)
    with fused_kernels(Fusion(norms=[norm])):
        torch.testing.assert_close(norm(x, gate), GatedRMSNorm.forward(norm, x, gate))
        torch.testing.assert_close(norm(x, gate=gate), GatedRMSNorm.forward(norm, x, gate))
    norm.__class__ = GatedRMSNorm.__mro__[1]
    norm.variance_epsilon = 1e-5   # a different epsilon than the eager code uses: invisible at scale 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(norm), "forward", lambda self, x: self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        assert norm not in fusable_norms(model)   # the probe's small-scale rows show it


def test_rotary_only_for_the_transformers_signature():
    calls = []

    def q_only(q, k=None, cos=None, sin=None, unsqueeze_dim=1):   # another form: left alone
        calls.append(1)
        return q, k

    assert not fused_module._rotary_matches(q_only)
    import transformers.models.llama.modeling_llama as llama

    wrapped = fused_module._rotary_for(llama.apply_rotary_pos_emb)
    q, k, angles = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 5, 4)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    for got, want in zip(wrapped(q, k, cos=cos, sin=sin), llama.apply_rotary_pos_emb(q, k, cos, sin)):
        torch.testing.assert_close(got, want)   # keyword call: the eager function, same result
    for got, want in zip(wrapped(q.double(), k.double(), cos, sin), llama.apply_rotary_pos_emb(q.double(), k.double(), cos, sin)):
        torch.testing.assert_close(got, want)   # mixed dtypes: eager, which promotes
