"""Few-shot contexts: lm-eval's samplers, pinned to prompts rendered by the real lm-evaluation-harness 0.4.13.

``fewshot_lmeval.json`` was written by ``scripts/lmeval_fewshot_prompts.py`` (lm-eval's own
``ConfigurableTask.fewshot_context`` over the local files): ARC-Easy 25-shot (default sampler, seed
1234, pool = validation, the local fallback for ARC's train split), MMLU abstract_algebra 5-shot
(``first_n`` from dev) and GSM8K 5-shot from train.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from layershear.data.benchmarks import get_task, load_split
from layershear.data.benchmarks.fewshot import apply_fewshot
from layershear.data.calibration import build_calibration, build_eval, num_fewshot_of, with_fewshot
from layershear.data.recipes import load_calibration, load_eval_suite
from layershear.errors import BenchmarkError, RecipeError

LMEVAL = json.loads((Path(__file__).parent / "fewshot_lmeval.json").read_text())["tasks"]


def _contexts(task: str, split: str, n: int, docs: int = 3) -> list[str]:
    items, _, _ = with_fewshot(load_split(task, split, source="local"), split, n, source="local")
    return [(item.contexts[0] if hasattr(item, "contexts") else item.context) for item in items[:docs]]


def test_arc_25_shot_prompts_equal_lm_eval(data_dir: Path) -> None:
    got = _contexts("arc_easy", "test", 25)
    assert got == LMEVAL["arc_easy"]["contexts"]
    # checked by hand against lm-eval's rules: 25 "Question: ...\nAnswer: <gold text>" examples, each
    # followed by the fewshot_delimiter "\n\n", then the document's own text; no description
    first = got[0]
    assert first.count("\n\n") == 25 and first.count("Question: ") == 26
    assert first.endswith("\nAnswer:") and first.split("\n\n")[-1].startswith("Question: Which statement best explains")
    val = load_split("arc_easy", "validation", source="local")
    picked = random.Random(1234).sample(range(len(val)), 25)     # the first document's draw, as lm-eval's ContextSampler
    assert first.split("\n\n")[0] == val[picked[0]].shot()


def test_mmlu_5_shot_prompts_equal_lm_eval(data_dir: Path) -> None:
    got = _contexts("mmlu", "test", 5)
    assert got == LMEVAL["mmlu"]["contexts"]
    # description once, then the first 5 dev questions of the same subject with their letter answers
    assert got[0].startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                             "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n")
    assert got[0].count("The following are") == 1 and got[0].count("\nAnswer:") == 6
    assert len({c[:c.rindex("\n\n")] for c in got}) == 1             # first_n: one shared prefix per subject


def test_gsm8k_5_shot_prompts_equal_lm_eval(data_dir: Path) -> None:
    got = _contexts("gsm8k", "test", 5)
    assert got == LMEVAL["gsm8k"]["contexts"]
    assert got[0].count("Question: ") == 6 and got[0].count("#### ") == 5 and got[0].endswith("\nAnswer:")


@dataclass(frozen=True)
class _Doc:
    doc_id: int
    description: str = ""

    def shot(self) -> str:
        return f"q{self.doc_id} a{self.doc_id}"

    def with_fewshot(self, prefix: str) -> _Doc:
        return _Prompted(self.doc_id, self.description, prefix)


@dataclass(frozen=True)
class _Prompted(_Doc):
    prefix: str = ""


def test_default_sampler_draws_per_document_and_never_shows_a_document_itself() -> None:
    docs = [_Doc(i) for i in range(6)]
    out = apply_fewshot(docs, docs, 2, same_split=True, seed=7)
    rnd = random.Random(7)
    for doc, got in zip(docs, out):
        want = [d for d in rnd.sample(docs, 3) if d.doc_id != doc.doc_id][:2]
        assert got.prefix == "".join(d.shot() + "\n\n" for d in want)
        assert f"q{doc.doc_id} " not in got.prefix
    assert len({o.prefix for o in out}) > 1                      # examples differ from document to document
    other = apply_fewshot(docs, [_Doc(10 + i) for i in range(4)], 2, seed=7)
    rnd = random.Random(7)
    assert [o.prefix for o in other] == ["".join(d.shot() + "\n\n" for d in rnd.sample([_Doc(10 + i) for i in range(4)], 2))
                                         for _ in docs]


def test_first_n_uses_the_pool_of_the_same_description_and_errors_are_one_line() -> None:
    pool = [_Doc(10, "A"), _Doc(11, "B"), _Doc(12, "A"), _Doc(13, "A")]
    out = apply_fewshot([_Doc(0, "A"), _Doc(1, "B")], pool, 1, sampler="first_n")
    assert [o.prefix for o in out] == ["q10 a10\n\n", "q11 a11\n\n"]
    with pytest.raises(BenchmarkError, match="1 few-shot documents for 'B', fewer than the 2"):
        apply_fewshot([_Doc(1, "B")], pool, 2, sampler="first_n")
    with pytest.raises(BenchmarkError, match="Unknown few-shot sampler"):
        apply_fewshot([_Doc(0)], pool, 1, sampler="balanced")
    assert apply_fewshot([_Doc(0)], pool, 0) == [_Doc(0)]


def test_num_fewshot_rules_and_recipes(data_dir: Path) -> None:
    assert num_fewshot_of(get_task("gsm8k"), None) == 5 and num_fewshot_of(get_task("arc_easy"), None) == 0
    assert num_fewshot_of(get_task("arc_easy"), 3) == 3 and num_fewshot_of(get_task("arc_easy"), 3, 1) == 1
    assert num_fewshot_of(get_task("c4"), None, 5) == 0            # --num-fewshot skips tasks that take none
    with pytest.raises(RecipeError, match="c4 takes no few-shot examples"):
        num_fewshot_of(get_task("c4"), 2)
    calib = build_calibration(load_calibration("mmlu:4"), source="local", num_fewshot=5)
    assert calib.draws[0].num_fewshot == 5 and calib.draws[0].fewshot_split == "dev"
    assert all(item.contexts[0].count("\nAnswer:") == 6 for item in calib.items)
    # held-out documents keep the examples they get over the whole split, whatever is excluded
    suite = load_eval_suite("arc_easy:5")
    whole = build_eval(suite, source="local", num_fewshot=2)["arc_easy"]
    skipped = build_eval(suite, exclude={("arc_easy", "test"): frozenset({0, 1})}, source="local",
                         num_fewshot=2)["arc_easy"]
    assert [d.doc_id for d in skipped] == [2, 3, 4, 5, 6] and skipped[:3] == whole[2:5]
