"""GSM8K, generative (layershear.scoring.generative): lm-eval's filters and exact_match, the 5-shot prompt,
evaluation, and the GenerativeScorer driving a greedy search on a tiny random model."""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers as tf
from helpers import load, run_cli

from layershear.data.benchmarks import MCItem, find_data_dir, get_task, load_split
from layershear.data.benchmarks.fewshot import apply_fewshot
from layershear.data.benchmarks.gsm8k import GenItem
from layershear.engine.generate import generate_until
from layershear.errors import BenchmarkError, ScoringError
from layershear.scoring.evaluation import evaluate_suite
from layershear.scoring.generative import (
    GenerativeScorer,
    evaluate_generative,
    exact_match,
    flexible_extract,
    is_generative,
    normalize,
    strict_match,
)
from layershear.search.greedy import GreedyPruner

needs_data = pytest.mark.skipif(find_data_dir() is None, reason="../shared/data/benchmarks not found")
WORDS = [str(d) for d in range(10)] + ["####", "Question", ":", "Answer", "$", ","] + [f"q{i}" for i in range(40)]
GEN = 16


pytestmark = pytest.mark.usefixtures("one_thread")


# --- filters and exact_match, pinned to lm-eval 0.4.13 (filters/extraction.py, api/metrics.py) -----------

@pytest.mark.parametrize(("text", "strict", "flexible"), [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18", "18"),
    ("#### 72", "72", "72"),
    ("The answer is $1,234.", "[invalid]", "$1,234."),       # group 1: 2+ chars of [$0-9.,]
    ("3 apples and 5 pears", "[invalid]", "5"),              # single digits: group 2, the last match
    ("#### -3.5, then #### 4", "-3.5,", "4"),                # strict: the first match; flexible: the last
    ("no number at all", "[invalid]", "[invalid]"),
    ("####72 (no space)", "[invalid]", "72"),
    ("total: -12 dollars", "[invalid]", "-12"),
    ("ends with a dot 7.", "[invalid]", "7."),
])
def test_filters(text: str, strict: str, flexible: str) -> None:
    assert strict_match(text) == strict
    assert flexible_extract(text) == flexible


@pytest.mark.parametrize(("prediction", "reference", "same"), [
    ("$1,234.", "He pays 1,234 in all.\n#### 1234", True),     # , and $ removed, final . removed
    ("18", "9 * 2 = 18\n#### 18", True),                      # (?s).*#### strips the worked solution
    ("[invalid]", "x\n#### 18", False),
    ("18.5", "#### 18", False),
    ("1.", "#### 1", True),
    ("A", "#### a", True),                                    # ignore_case
    ("18!", "#### 18", False),                                # ignore_punctuation: false
])
def test_exact_match(prediction: str, reference: str, same: bool) -> None:
    assert exact_match(prediction, reference) is same


def test_normalize_removes_up_to_the_last_marker() -> None:
    assert normalize("a #### b\n#### $1,000.") == "1000"      # greedy (?s).*: up to the last "#### "
    assert normalize("3.5.") == "3.5"                          # only the final dot


def test_is_generative_refuses_a_mixed_set() -> None:
    gen = GenItem("gsm8k", 0, "Question: q\nAnswer:", "#### 1")
    mc = MCItem("arc_easy", 0, ("c", "c"), (" a", " b"), 0, (1, 1))
    assert is_generative([gen]) and not is_generative([mc])
    with pytest.raises(ScoringError, match="mixes generative tasks \\(gsm8k\\)"):
        is_generative([gen, mc])


def test_genitem_checks_its_fields() -> None:
    with pytest.raises(BenchmarkError, match="description"):
        GenItem("gsm8k", 0, "Question:", "#### 1", description="Intro\n\n")
    with pytest.raises(BenchmarkError, match="stop string"):
        GenItem("gsm8k", 0, "Question:", "#### 1", until=("",))


# --- GSM8K documents and the 5-shot prompt ---------------------------------------------------------------

@needs_data
def test_gsm8k_documents_and_the_rendered_fewshot_prompt() -> None:
    spec = get_task("gsm8k")
    assert (spec.output_type, spec.fewshot_split, spec.num_fewshot, spec.eval_split) == ("generate_until", "train", 5, "test")
    test, train = load_split("gsm8k", "test", source="local"), load_split("gsm8k", "train", source="local")
    assert (len(test), len(train)) == (1319, 7473)
    doc = test[0]
    assert doc.context.startswith("Question: Janet\u2019s ducks lay 16 eggs per day.") and doc.context.endswith("market?\nAnswer:")
    assert doc.target.endswith("\n#### 18") and doc.until == ("Question:", "</s>", "<|im_end|>")
    # lm-eval's fewshot_context by hand, with the first two train documents as the examples
    prompt = doc.with_fewshot("".join(s.shot() + "\n\n" for s in train[:2])).context
    assert prompt == (
        "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?\nAnswer: Natalia sold 48/2 = <<48/2=24>>24 clips "
        "in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72\n\n"
        "Question: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much "
        "did she earn?\nAnswer: Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned "
        "0.2 x 50 = $<<0.2*50=10>>10.\n#### 10\n\n" + doc.context)
    # the default sampler: random.Random(1234).sample(train, 5) for the first test document
    shots = apply_fewshot(test[:1], train, 5)[0].context
    picks = random.Random(1234).sample(range(len(train)), 5)
    assert shots == "".join(train[i].shot() + "\n\n" for i in picks) + doc.context


# --- a tiny model that writes digits and "####" ---------------------------------------------------------

def _digit_tokenizer() -> tf.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, **{w: 4 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                      pad_token="<pad>")


@pytest.fixture(scope="module")
def digit_lm():
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=4 + len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return tf.LlamaForCausalLM(config).eval(), _digit_tokenizer()


@pytest.fixture(scope="module")
def rigged(digit_lm):
    """10 documents whose gold numbers are what the full model (docs 0, 5) or the model without block
    b (docs b+1, b+6) writes last, so that every model of the first greedy step is above r(D) = 0."""
    model, tok = digit_lm
    docs = [GenItem("gsm8k", i, f"Question : q{i} q{(3 * i) % 40} q{(7 * i) % 40}" + " q5" * (i % 3) + "\nAnswer :", "")
            for i in range(10)]
    texts = {r: generate_until(model, tok, [d.context for d in docs], until=["Question"], max_gen_toks=GEN,
                               removed=r)[0] for r in [(), (0,), (1,), (2,), (3,)]}
    sources = list(texts)
    return [GenItem(d.task, d.doc_id, d.context, f"so\n#### {flexible_extract(texts[sources[k % 5]][k])}")
            for k, d in enumerate(docs)]


def test_evaluate_generative_reports_both_filters(digit_lm, rigged) -> None:
    model, tok = digit_lm
    result = evaluate_generative(model, tok, rigged, max_gen_toks=GEN)
    assert result.task == "gsm8k" and result.num_docs == 10 and result.random == 0.0
    assert set(result.values) == set(result.stderrs) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert result.values["exact_match,flexible-extract"] >= 0.2
    # evaluate_suite sends generative tasks here, and ignores the log-likelihood engine setting
    assert evaluate_suite(model, tok, {"gsm8k": rigged}, max_gen_toks=GEN, engine="fast") == [result]


def test_generative_scorer_drives_greedy_search(digit_lm, rigged) -> None:
    model, tok = digit_lm
    scorer = GenerativeScorer(model, tok, rigged, objective="flexible-extract", batch_size=4, max_gen_toks=GEN)
    result = GreedyPruner(scorer).prune(2)
    assert len(set(result.removed)) == 2 and result.full.random == 0.0
    assert scorer.models_scored == 1 + 4 + 3                           # memoised: no model generated twice
    full = scorer.accuracy()
    assert full.accuracy == sum(full.correct) / 10 >= 0.2 and full.loglikelihoods is None
    first = result.steps[0]
    assert first.chosen.accuracy == max(c.accuracy for c in first.candidates) > 0
    # the scorer's numbers are those of a plain evaluation of the chosen model
    final = evaluate_generative(model, tok, rigged, removed=result.removed, batch_size=4, max_gen_toks=GEN)
    assert final.values["exact_match,flexible-extract"] == result.final.accuracy
    assert final.values["exact_match,strict-match"] == result.final.gold_prob    # the tie-breaker: the other filter
    cost = scorer.cost()
    assert cost["models_scored"] == 8 and len(cost["per_candidate"]) == 8
    assert cost["per_candidate"][0]["removed"] == [] and cost["per_candidate"][0]["prompt_tokens"] == scorer.engine.num_tokens
    assert cost["total"]["generated_tokens"] == sum(c["generated_tokens"] for c in cost["per_candidate"])
    assert scorer.measures_by_task() == {"gsm8k": "exact_match,flexible-extract"}
    assert scorer.score_blocks()[0].block_idx == 0 and scorer.models_scored == 8
    with pytest.raises(ScoringError, match="Unknown objective"):
        GenerativeScorer(model, tok, rigged, objective="acc")


# --- the CLI, end to end ---------------------------------------------------------------------------------

@needs_data
def test_cli_eval_gsm8k(tiny_lm_dir) -> None:
    result = run_cli("eval", tiny_lm_dir, "--tasks", "gsm8k:3", "--json", "-")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout[result.stdout.index("{"):])["results"][str(tiny_lm_dir)]
    assert row["task"] == "gsm8k" and row["num_docs"] == 3
    assert set(row["values"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}


def test_cli_prune_on_gsm8k(tiny_lm_dir, tmp_path) -> None:
    """Plumbing: calibration draw (5-shot from the same split), generation, search, export, record. The random
    byte model never writes "#### N", so strict-match gives "[invalid]"; rows whose gold is "#### [invalid]"
    count as right for every candidate (lm-eval compares the strings), which keeps relevance defined."""
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i if i % 2 else '[invalid]'}"}
            for i in range(12)]
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pruned"
    result = run_cli("prune", tiny_lm_dir, "--calib", "gsm8k:8", "--num-remove", "1", "--out", out,
                     "--data-dir", tmp_path, "--data-source", "local")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "layershear.json").read_text())
    assert record["calibration"]["measures"] == {"gsm8k": "exact_match,strict-match"}
    assert record["calibration"]["draws"][0]["num_fewshot"] == 5
    assert len(record["search"]["removed"]) == 1 and record["cost"]["kind"] == "generate_until"
    assert record["cost"]["models_scored"] == 5 and record["search"]["full"]["accuracy"] > 0
    assert load(out).config.num_hidden_layers == 3
