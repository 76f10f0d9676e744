"""The Scorer's batched log-likelihoods and accuracies equal a per-example reference computation."""

from __future__ import annotations

import pytest
import torch
from helpers import load

from layershear.data.benchmarks import find_data_dir, load_split
from layershear.engine.requests import encode_requests
from layershear.errors import LayershearError
from layershear.export.exporter import Exporter
from layershear.scoring.scorer import Scorer

pytestmark = pytest.mark.skipif(find_data_dir() is None, reason="../shared/data/benchmarks not found")


@pytest.fixture(scope="module")
def items():
    # 4-choice (ARC), 2-choice (PIQA), multiple-context (WinoGrande) and a long-context task (HellaSwag)
    out = []
    for task, split in [("arc_easy", "test"), ("piqa", "validation"), ("winogrande", "validation"),
                        ("hellaswag", "validation")]:
        out += load_split(task, split, source="local")[:5]
    return out


def _reference_lls(model, tokenizer, items) -> list[float]:
    """lm-eval's recipe, one (context, continuation) at a time, no batching, no padding."""
    out = []
    for item in items:
        for ctx, cont in zip(item.contexts, item.continuations):
            n = len(ctx) - len(ctx.rstrip())
            if n:
                ctx, cont = ctx[:-n], ctx[-n:] + cont
            whole = tokenizer(ctx + cont, add_special_tokens=False)["input_ids"]
            ctx_ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
            cont_ids = whole[len(ctx_ids):]
            with torch.no_grad():
                logits = model(torch.tensor([whole[:-1]])).logits[0].double()
            logprobs = torch.log_softmax(logits, -1)
            positions = range(len(whole) - 1 - len(cont_ids), len(whole) - 1)
            out.append(sum(float(logprobs[p, t]) for p, t in zip(positions, cont_ids)))
    return out


@pytest.mark.parametrize("drop", [(), (1,), (0, 2)])
def test_scorer_equals_per_example_reference(tiny_lm_dir, tmp_path, items, drop):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = load(tiny_lm_dir)
    scorer = Scorer(model, tokenizer, items, batch_size=4)
    lls = scorer.engine.run(drop)
    ref_dir = tiny_lm_dir if not drop else Exporter(tiny_lm_dir).export(drop, tmp_path / "pruned")
    ref = torch.tensor(_reference_lls(load(ref_dir), tokenizer, items), dtype=torch.float64)
    torch.testing.assert_close(lls, ref, atol=1e-4, rtol=1e-6)
    ev = scorer.accuracy(drop)
    # the same per-item decision from the reference numbers
    k, expected = 0, []
    for item, metric in zip(items, scorer.measures):
        s = ref[k:k + item.num_choices]
        if metric == "acc_norm":
            s = s / torch.tensor(item.choice_lengths, dtype=torch.float64)
        expected.append(int(torch.argmax(s)) == item.gold)
        k += item.num_choices
    assert list(ev.correct) == expected
    assert ev.accuracy == pytest.approx(sum(expected) / len(expected))
    assert scorer.measures[:5] == ["acc_norm"] * 5 and scorer.measures[10:15] == ["acc"] * 5   # arc / winogrande


def test_batch_size_does_not_change_fp32_results(tiny_lm_dir, items):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = load(tiny_lm_dir)
    a = Scorer(model, tokenizer, items, batch_size=1).engine.run()
    b = Scorer(model, tokenizer, items, batch_size=7).engine.run()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-6)


def test_evaluations_are_memoised_and_restore_the_model(tiny_lm_dir, items):
    from transformers import AutoTokenizer

    model = load(tiny_lm_dir)
    scorer = Scorer(model, AutoTokenizer.from_pretrained(tiny_lm_dir), items[:4], batch_size=8)
    first = scorer.accuracy({1})
    assert scorer.accuracy([1]) is first and scorer.models_scored == 1
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4


def test_truncation_and_empty_context(tiny_lm_dir):
    from transformers import AutoTokenizer

    from layershear.data.benchmarks import MCItem

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    item = MCItem("piqa", 0, ("", "abc " * 50), (" yes", " no"), 0, (3, 2))
    requests = encode_requests([item], tokenizer)
    assert requests[0].context_ids == (tokenizer.bos_token_id,)      # empty context -> prefix token
    assert tokenizer.decode(list(requests[1].continuation_ids)) == "  no"   # trailing space moved over
    scorer = Scorer(load(tiny_lm_dir), tokenizer, [item], max_length=16)
    assert torch.isfinite(scorer.engine.run()).all()


def test_empty_calibration_set_is_an_error(tiny_lm_dir):
    with pytest.raises(LayershearError, match="calibration set is empty"):
        Scorer(None, None, [])


def test_continuation_longer_than_max_length_is_an_error(tiny_lm_dir):
    from transformers import AutoTokenizer

    from layershear.data.benchmarks import MCItem
    from layershear.errors import ScoringError

    item = MCItem("piqa", 0, ("Q:", "Q:"), (" " + "x" * 40, " y"), 0, (40, 1))
    with pytest.raises(ScoringError, match="raise --max-length"):
        Scorer(load(tiny_lm_dir), AutoTokenizer.from_pretrained(tiny_lm_dir), [item], max_length=16)


def test_default_max_length_follows_the_model_config(tiny_checkpoints):
    from layershear.engine.requests import default_max_length

    assert default_max_length(load(tiny_checkpoints("gpt2"))) == 64          # n_positions
    assert default_max_length(load(tiny_checkpoints("llama"))) == 2048       # max_position_embeddings
