"""Packed prefix-tree rows: layout, attention mask, and exactness against lm-eval's layout."""

from __future__ import annotations

import pytest
import torch
from helpers import ARCHS, CharTokenizer, byte_tokenizer, load

from layershear.data.benchmarks import MCItem, find_data_dir, load_split
from layershear.engine.config import EngineConfig
from layershear.engine.packing import _allowed, pack_requests, packable
from layershear.engine.requests import EncodedRequest, encode_requests
from layershear.engine.work import FlopModel
from layershear.scoring.scorer import Scorer


def _req(item: int, choice: int, ctx: list[int], cont: list[int]) -> EncodedRequest:
    return EncodedRequest(item, choice, tuple(ctx), tuple(cont))


def test_choices_share_their_context_and_mask_is_ancestor_or_self():
    # one question, two choices: context [5, 6], continuations [7, 9] and [8]
    reqs = [_req(0, 0, [5, 6], [7, 9]), _req(0, 1, [5, 6], [8])]
    (batch,) = pack_requests(reqs, max_length=64, row_tokens=0, batch_tokens=64)
    (row,) = batch.rows
    # inputs are context + continuation minus its last token: [5, 6, 7] and [5, 6]; the trie is 5 -> 6 -> 7
    assert row.tokens == (5, 6, 7) and row.positions == (0, 1, 2) and row.ends == (2, 2, 2)
    # request 0 scores 7 at node 1 (after 6) and 9 at node 2; request 1 scores 8 at node 1
    assert sorted(zip(batch.owners, batch.score_cols, batch.targets)) == [(0, 1, 7), (0, 2, 9), (1, 1, 8)]

    reqs = [_req(0, 0, [5, 6], [7, 1]), _req(0, 1, [5, 6], [8, 1]), _req(1, 0, [4], [3, 1])]
    (batch,) = pack_requests(reqs, max_length=64, row_tokens=8, batch_tokens=64)
    (row,) = batch.rows          # two tries in one row: [4, 3] and [5, 6, {7, 8}]
    assert row.tokens == (4, 3, 5, 6, 7, 8) and row.positions == (0, 1, 0, 1, 2, 2)
    allowed = _allowed(batch, torch.device("cpu"), window=None)[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0],
                       [0, 0, 1, 0, 0, 0],
                       [0, 0, 1, 1, 0, 0],
                       [0, 0, 1, 1, 1, 0],      # 7 sees 5, 6 and itself, not its sibling 8
                       [0, 0, 1, 1, 0, 1]]
    windowed = _allowed(batch, torch.device("cpu"), window=2)[0, 0].int().tolist()
    assert windowed[4] == [0, 0, 0, 1, 1, 0]    # position 2 sees positions 1 and 2 only


def test_without_sharing_each_request_is_its_own_path():
    reqs = [_req(0, 0, [5, 6], [7, 1]), _req(0, 1, [5, 6], [8, 1])]
    (shared,) = pack_requests(reqs, max_length=64, row_tokens=16, batch_tokens=64)
    (unshared,) = pack_requests(reqs, max_length=64, row_tokens=16, batch_tokens=64, share=False)
    assert shared.real_tokens == 4 and unshared.real_tokens == 6


def test_items_with_a_common_prefix_share_it_across_questions():
    prefix = list(range(10, 30))                       # e.g. few-shot examples or MMLU's subject line
    reqs = [_req(i, c, prefix + [40 + i], [60 + c, 1]) for i in range(3) for c in range(2)]
    (batch,) = pack_requests(reqs, max_length=256, row_tokens=256, batch_tokens=256)
    assert batch.real_tokens == 20 + 3 * (1 + 2)      # the prefix once, then each question and its choices


def test_rows_and_batches_cover_every_request_once():
    gen = torch.Generator().manual_seed(0)
    reqs = []
    for item in range(40):
        ctx = torch.randint(3, 100, (int(torch.randint(1, 30, (1,), generator=gen)),), generator=gen).tolist()
        for c in range(4):
            cont = torch.randint(3, 100, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen).tolist()
            reqs.append(_req(item, c, ctx, cont))
    batches = pack_requests(reqs, max_length=20, row_tokens=48, batch_tokens=96)   # some requests truncated
    seen = sorted(k for b in batches for k in b.requests)
    assert seen == list(range(len(reqs)))
    for b in batches:
        assert len(b.rows) * b.width <= 96 or len(b.rows) == 1
        assert all(len(r.tokens) <= 4 * 20 for r in b.rows)   # a row fits the largest item (4 truncated choices)
        for k, owner in enumerate(b.owners):          # one scored position per continuation token (after truncation)
            assert b.targets[k] in reqs[b.requests[owner]].continuation_ids
        assert sorted(set(b.owners)) == list(range(len(b.requests)))


def _items(n: int = 6) -> list[MCItem]:
    # contexts longer than the tiny sliding window (4); continuations with a common first character
    out = []
    for i in range(n):
        ctx = f"Question {i % 4}: which way{'?' * (i % 3)} now" + " and then" * (i % 2)
        out.append(MCItem("arc_easy", i, (ctx,) * 3, (" left", " left side", " up" * (1 + i % 2)), i % 3,
                          (4, 9, 3 * (1 + i % 2))))
    return out


LAYOUTS = {
    "share": EngineConfig(skip_prefix=False, pack=False),
    "pack": EngineConfig(skip_prefix=False, share_context=False, row_tokens=40),
    "share+pack, several rows": EngineConfig(skip_prefix=False, row_tokens=40),
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_packed_layouts_equal_lm_eval_layout(tiny_checkpoints, name):
    model = load(tiny_checkpoints(name))
    assert packable(model)
    items = _items()
    ref = Scorer(model, CharTokenizer(), items, batch_size=2, engine="reference", max_length=24).accuracy({1})
    for label, engine in LAYOUTS.items():
        scorer = Scorer(model, CharTokenizer(), items, batch_size=2, engine=engine, max_length=24)
        got = scorer.accuracy({1})
        torch.testing.assert_close(got.loglikelihoods, ref.loglikelihoods, atol=1e-4, rtol=1e-6, msg=label)
        assert got.correct == ref.correct
    assert scorer.engine.stats.real_tokens < Scorer(model, CharTokenizer(), items, engine="reference").engine.num_tokens


def test_unknown_architecture_falls_back_to_the_lm_eval_layout(tiny_checkpoints, monkeypatch, caplog):
    model = load(tiny_checkpoints("llama"))
    monkeypatch.setattr(model.config, "model_type", "some_new_llm")
    scorer = Scorer(model, CharTokenizer(), _items(), batch_size=2)
    assert not scorer.engine.packed and "scoring unpacked" in caplog.text
    ref = Scorer(model, CharTokenizer(), _items(), batch_size=2, engine="reference")
    torch.testing.assert_close(scorer.accuracy().loglikelihoods, ref.accuracy().loglikelihoods, atol=1e-4, rtol=1e-6)


def test_padding_under_ten_percent_on_the_shared_benchmark_mix():
    try:
        data_dir = find_data_dir()
    except Exception:
        pytest.skip("shared/data/benchmarks not found")
    items = [it for task in ("arc_easy", "arc_challenge", "hellaswag", "piqa", "openbookqa", "winogrande", "boolq")
             for it in load_split(task, "validation", source="local", data_dir=data_dir)[:60]]
    reqs = encode_requests(items, byte_tokenizer())
    longest = max(r.num_tokens for r in reqs)
    batches = pack_requests(reqs, max_length=2048, row_tokens=2048, batch_tokens=16 * longest)   # byte tokens: long
    computed = sum(len(b.rows) * b.width for b in batches)
    real = sum(b.real_tokens for b in batches)
    assert 1 - real / computed < 0.10
    assert sum(r.num_tokens for r in reqs) / real > 1.5           # shared contexts: far fewer tokens


def test_automatic_row_width_has_the_fewest_counted_flops(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    auto = Scorer(model, CharTokenizer(), _items(), batch_size=2)
    costs = {}
    for width in (0, 256, 512, 1024, 2048):
        fixed = Scorer(model, CharTokenizer(), _items(), batch_size=2, engine=EngineConfig(row_tokens=width))
        costs[width] = FlopModel.of(model).pass_flops(fixed.engine.batch_shapes, 6)
    assert auto.engine.row_tokens == min(costs, key=lambda w: (costs[w], w))
