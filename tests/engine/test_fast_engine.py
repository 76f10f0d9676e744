"""The fast engine (scored-positions LM head, cached-prefix block skipping) equals the reference engine."""

from __future__ import annotations

import pytest
import torch
from helpers import CharTokenizer, load, mc_items, rigged_piqa

from layershear.engine.config import EngineConfig
from layershear.errors import ScoringError
from layershear.model.arch import decoder_blocks
from layershear.scoring.scorer import Scorer
from layershear.search import GreedyPruner

ARCH_NAMES = ["llama", "gpt2", "gpt_neox", "gemma2_old", "gemma3_text", "qwen2_swa", "qwen3", "phi3", "olmo2"]


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_fast_children_equal_reference(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    items = mc_items()
    fast = Scorer(model, CharTokenizer(), items, batch_size=4, engine="fast")
    ref = Scorer(model, CharTokenizer(), items, batch_size=4, engine="reference")
    # three greedy-like steps: a full caching pass, then caches derived from the previous step's
    for parent in (frozenset(), frozenset({2}), frozenset({2, 4}), frozenset({0, 2, 4})):
        blocks = [b for b in range(6) if b not in parent]
        got, want = fast.children(parent, blocks), ref.children(parent, blocks)
        for b in blocks:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-6)
            assert got[b].correct == want[b].correct
    assert fast.engine.stats.block_tokens < ref.engine.stats.block_tokens
    assert fast.engine.stats.head_positions < ref.engine.stats.head_positions
    assert len(decoder_blocks(model)) == 6           # every block is back after the hooks and drops


@pytest.mark.parametrize("stack_tokens", [0, 16384])
def test_block_skipping_saves_about_half_of_the_block_work(tiny_checkpoints, stack_tokens):
    model = load(tiny_checkpoints("llama"))
    fast = Scorer(model, CharTokenizer(), mc_items(), batch_size=4, engine=EngineConfig(stack_tokens=stack_tokens))
    ref = Scorer(model, CharTokenizer(), mc_items(), batch_size=4, engine=EngineConfig(skip_prefix=False))  # same layout
    fast.children(frozenset(), range(6))
    ref.children(frozenset(), range(6))
    # reference: 6 candidates x 5 blocks; fast: 1 capture pass x 6 blocks + sum over b of (blocks after b)
    per_eval = ref.engine.stats.padded_tokens // 6             # padded tokens of one pass over the calibration set
    assert ref.engine.stats.block_tokens == per_eval * 6 * 5
    # caching pass: 6 blocks; candidate b < 5 runs blocks b+1..5; the last block's candidate runs that block
    # alone with its output bypassed (only the final norm and LM head count), or, stacked, joins the
    # others after the last block
    last = 0 if stack_tokens else 1
    assert fast.engine.stats.block_tokens == per_eval * (6 + 5 + 4 + 3 + 2 + 1 + last)
    assert fast.engine.stats.stacked_runs == (6 if stack_tokens else 0)
    # the next step derives its cache from this one: dropping block 2 reruns only blocks 3-5
    before = fast.engine.stats.block_tokens
    fast.children(frozenset({2}), [0, 1, 3, 4, 5])
    assert fast.engine.stats.block_tokens - before == per_eval * (3 + 4 + 3 + 2 + 1 + last)
    ref.children(frozenset({2}), [0, 1, 3, 4, 5])
    for b in (0, 1, 3, 4, 5):
        torch.testing.assert_close(fast.accuracy({2, b}).loglikelihoods, ref.accuracy({2, b}).loglikelihoods,
                                   atol=1e-4, rtol=1e-6)
    assert fast.engine.stats.cache_bytes > 0


def test_greedy_picks_the_same_blocks_with_both_engines(tiny_lm_dir):
    model, tokenizer, rigged = rigged_piqa(tiny_lm_dir)
    results = {}
    for engine in ("fast", "reference"):
        scorer = Scorer(model, tokenizer, rigged, batch_size=8, engine=engine)
        results[engine] = GreedyPruner(scorer).prune(2)
    assert results["fast"].removed == results["reference"].removed
    for a, b in zip(results["fast"].steps, results["reference"].steps):
        assert [c.relevance for c in a.candidates] == pytest.approx([c.relevance for c in b.candidates])


def test_unknown_engine_is_an_error(tiny_checkpoints):
    with pytest.raises(ScoringError, match="Unknown engine 'turbo'"):
        Scorer(load(tiny_checkpoints("llama")), CharTokenizer(), mc_items(), engine="turbo")


def test_lm_head_sees_only_the_scored_positions(tiny_checkpoints):
    model = load(tiny_checkpoints("gemma2_old"))          # final-logit softcapping runs after the head too
    items = mc_items()
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        fast = Scorer(model, CharTokenizer(), items, batch_size=4)
        lls = fast.engine.run()
    finally:
        handle.remove()
    # the choices of a document share the position predicting their first token: it goes through the head once
    scored = sum(len(set(zip(b.score_rows, b.score_cols))) for b in fast.engine.batches)
    assert scored < sum(len(r.continuation_ids) for r in fast.engine.requests)
    assert sum(shape[0] * shape[1] for shape in seen) == scored == fast.engine.stats.head_positions
    ref = Scorer(model, CharTokenizer(), items, batch_size=4, engine="reference").engine.run()
    torch.testing.assert_close(lls, ref, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("where", ["device", "host"])
def test_checkpointed_cache_gives_the_same_numbers_with_less_memory(tiny_checkpoints, where):
    from layershear.engine.prefix_cache import CachePlan

    model = load(tiny_checkpoints("qwen3"))
    items = mc_items()
    every = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=CachePlan("device", 1, 0, 0, 0))
    sparse = Scorer(model, CharTokenizer(), items, batch_size=4, cache_plan=CachePlan(where, 3, 0, 0, 0))
    ref = Scorer(model, CharTokenizer(), items, batch_size=4, engine="reference")
    for parent in (frozenset(), frozenset({3}), frozenset({1, 3}), frozenset({1, 3, 5})):
        blocks = [b for b in range(6) if b not in parent]
        got, want = sparse.children(parent, blocks), ref.children(parent, blocks)
        every.children(parent, blocks)
        for b in blocks:
            torch.testing.assert_close(got[b].loglikelihoods, want[b].loglikelihoods, atol=1e-4, rtol=1e-6)
    assert sparse.engine.stats.cache_bytes < every.engine.stats.cache_bytes
    assert every.engine.stats.block_tokens < sparse.engine.stats.block_tokens < ref.engine.stats.block_tokens


def test_cache_plan_follows_free_memory():
    from layershear.engine.prefix_cache import plan_cache

    gib = 2**30
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # 32 blocks x 1 GiB per block input; two caches are held while a step derives the next
    assert (p := plan_cache(gib, 32, cuda, free=(200 * gib, 100 * gib))).where == "device" and p.every == 1
    assert (p := plan_cache(gib, 32, cuda, free=(40 * gib, 200 * gib))).where == "host" and p.every == 1
    p = plan_cache(gib, 32, cuda, free=(40 * gib, 60 * gib))
    # every 2nd fits neither (32 GiB vs 20 / 30); every 3rd fits the host (22 GiB <= 30) before every 4th the device
    assert (p.where, p.every) == ("host", 3) and p.planned_bytes == 22 * gib <= p.budget_bytes
    assert "1 in 3 block inputs (checkpoints) on host" in p.describe()
    p = plan_cache(gib, 32, cpu, free=(20 * gib, 20 * gib))          # no host offload on the CPU
    assert (p.where, p.every) == ("device", 7)
    assert plan_cache(gib, 32, cpu, free=(0, 0)).every == 32         # nothing fits: only block 0's input
