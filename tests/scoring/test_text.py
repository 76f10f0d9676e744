"""Text corpora scored by next-token accuracy and token perplexity (layershear.scoring.text)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CharTokenizer, load

from layershear.data.benchmarks.text import TextDoc, wikitext_articles, wikitext_detokenize
from layershear.engine.forward import target_logprobs
from layershear.engine.requests import greedy_target
from layershear.errors import ScoringError
from layershear.scoring.evaluation import evaluate_items
from layershear.scoring.scorer import Scorer
from layershear.scoring.text import token_items

DOCS = [TextDoc("c4", 0, "the cat sat on the mat and the dog sat on the log"),
        TextDoc("c4", 1, "a b a b a b a b"), TextDoc("c4", 2, "xyz")]


def _direct(model, docs, chunk: int, removed=()) -> tuple[float, float, int]:
    """Top-1 hits and perplexity computed by hand: one forward per chunk, BOS first."""
    tok = CharTokenizer()
    keep = [b for b in range(model.config.num_hidden_layers) if b not in removed]
    from layershear.model.surgery import remove_blocks

    hits = n = 0
    nll = 0.0
    with remove_blocks(model, removed), torch.no_grad():
        for doc in docs:
            ids = tok([doc.text])["input_ids"][0]
            for start in range(0, len(ids), chunk):
                x = torch.tensor([[tok.bos_token_id, *ids[start:start + chunk]]])
                logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
                target = x[0, 1:]
                hits += int((logp.argmax(-1) == target).sum())
                nll -= float(logp[torch.arange(len(target)), target].sum())
                n += len(target)
    assert keep
    return hits / n, math.exp(nll / n), n


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_next_token_accuracy_and_perplexity_equal_a_direct_computation(tiny_checkpoints, arch):
    model = load(tiny_checkpoints(arch))
    for removed in ((), (1,)):
        want_acc, want_ppl, n = _direct(model, DOCS, chunk=5, removed=removed)
        for engine in ("fast", "reference"):
            got = Scorer(model, CharTokenizer(), DOCS, chunk_tokens=5, engine=engine).accuracy(removed)
            assert len(got.correct) == n                       # every token is one item
            assert got.accuracy == pytest.approx(want_acc, abs=1e-12)
            assert got.perplexity_by_task["c4"] == pytest.approx(want_ppl, rel=1e-4)
            assert got.random == pytest.approx(1 / model.config.vocab_size)


def test_chunks_tokens_and_the_two_requests_of_a_token():
    items = token_items(DOCS[:1], CharTokenizer(), vocab_size=128, chunk_tokens=20)
    assert [len(doc) for doc in items] == [len(DOCS[0].text)]
    chunks = {(t.chunk, t.chunk_ids) for t in items[0]}
    assert [len(ids) for _, ids in sorted(chunks)] == [21, 21, 10]      # 49 characters: 20 + 20 + 9, BOS first
    token = items[0][20]                                               # the first token of the second chunk
    assert (token.chunk, token.position, token.chunk_ids[0]) == (1, 0, CharTokenizer.bos_token_id)
    hit, ll = token.requests(7)
    assert hit.greedy and not ll.greedy and hit.token_ids == ll.token_ids == ((1,), (token.target,))
    with pytest.raises(Exception, match="chunk_tokens must be >= 1"):
        token_items(DOCS, CharTokenizer(), vocab_size=128, chunk_tokens=0)


def test_greedy_targets_give_top1_hits_and_shared_rows_are_scored_once():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 3.0]])
    targets = torch.tensor([1, greedy_target(1), greedy_target(2), greedy_target(0), 2])
    got = target_logprobs(logits, targets, index=torch.tensor([0, 0, 0, 1, 1]))
    lsm = torch.log_softmax(logits, -1)
    torch.testing.assert_close(got, torch.tensor([float(lsm[0, 1]), 1.0, 0.0, 1.0, float(lsm[1, 2])]))


def test_relevance_on_text_is_undefined_at_chance_and_evaluation_reports_perplexity(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))                 # random weights: no token right, at r(D) = 1/128
    scorer = Scorer(model, CharTokenizer(), DOCS, chunk_tokens=6)
    assert scorer.accuracy().accuracy == 0 and not scorer.accuracy().above_random
    with pytest.raises(ScoringError, match="not above random"):
        scorer.score_blocks()
    result = evaluate_items(model, CharTokenizer(), DOCS)
    assert result.num_docs == 3 and set(result.values) == {"acc", "perplexity"}
    assert result.values["perplexity"] > 1 and result.random == pytest.approx(1 / 128)


def test_a_real_model_predicts_c4_text_and_its_blocks_get_relevances(smollm2_dir, data_dir):
    from layershear.data.benchmarks import load_split
    from layershear.model.loading import load_model

    model, tokenizer = load_model(str(smollm2_dir), dtype="fp32")
    docs = load_split("c4", "validation", source="local")[:1]
    scorer = Scorer(model, tokenizer, docs, chunk_tokens=32)
    full = scorer.accuracy()
    assert full.above_random and full.accuracy > 0.2 and full.perplexity_by_task["c4"] < 200
    scores = scorer.score_blocks()
    assert len(scores) == 30 and max(s.relevance for s in scores) > 0.2     # some block matters


def test_wikitext_detokenizer_and_articles(tmp_path):
    assert wikitext_detokenize(" = = Career = = \n In 2000 , a guest @-@ starring role ( 1 @.@ 5 m ) . \n") == \
        " == Career ==\nIn 2000, a guest-starring role (1.5 m).\n"
    raw = tmp_path / "wiki.txt"
    raw.write_text(" \n = First = \n \n text one \n = = Sub = = \n more \n = Second = \n text two \n")
    pages = wikitext_articles(raw)
    assert [p["page"].splitlines()[0] for p in pages] == [" = First = ", " = Second = "]


def test_a_generative_document_has_no_loglikelihood_requests(data_dir):
    from layershear.data.benchmarks import load_split
    from layershear.engine.requests import requests_of

    with pytest.raises(ScoringError, match="generative task .* no log-likelihood requests"):
        requests_of(load_split("gsm8k", "test", source="local")[:1])
