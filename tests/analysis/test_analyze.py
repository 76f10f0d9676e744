"""`layershear analyze` on a tiny model: every metric, the comparisons, and the report files."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import CharTokenizer, load, mc_items

from layershear.analysis.analyze import analyze
from layershear.analysis.report import write_analysis
from layershear.analysis.statistics import least_important_order
from layershear.cli.render import analysis_table
from layershear.scoring.accuracy import item_scores
from layershear.scoring.baselines import calibration_texts, cosine_scores
from layershear.scoring.scorer import Scorer
from layershear.search.baseline import remove_by_metric


def _rigged(model, items, task):
    """``items`` renamed to ``task``, gold = the model's own choice on 3 of 4 (above chance)."""
    scorer = Scorer(model, CharTokenizer(), items)
    picks = [int(s.argmax()) for s in item_scores(items, scorer.engine.run(), measures=scorer.measures)]
    return [dataclasses.replace(it, task=task, doc_id=100 + i, gold=p if i % 4 else (p + 1) % 3)
            for i, (it, p) in enumerate(zip(items, picks))]


@pytest.fixture(scope="module")
def setup(tiny_checkpoints):
    model = load(tiny_checkpoints("llama"))
    calib = _rigged(model, mc_items(12), "arc_easy")
    tasks = {"arc_easy": _rigged(model, mc_items(16)[4:], "arc_easy"), "openbookqa": _rigged(model, mc_items(8), "openbookqa")}
    return model, calib, tasks


def test_analysis_numbers_fit_together(setup, tmp_path):
    model, calib, tasks = setup
    a = analyze(model, CharTokenizer(), calib, tasks, max_remove=2, batch_size=4)
    assert set(a.scores) == {"accuracy", "cosine", "angular", "perplexity", "taylor"}
    assert all(len(s) == 6 for s in a.scores.values())
    # the accuracy drop of block b on a task is full accuracy minus accuracy without b, on the eval docs
    eval_items = [it for items in tasks.values() for it in items]
    scorer = Scorer(model, CharTokenizer(), eval_items)
    for b in (0, 3):
        ev = scorer.accuracy({b})
        for t in tasks:
            assert a.drop_by_task[t][b] == pytest.approx(a.full_accuracy_by_task[t] - ev.accuracy_by_task[t])
    # cosine per task is the cosine score on that task's texts
    assert a.cosine_by_task["openbookqa"] == pytest.approx(
        cosine_scores(model, CharTokenizer(), calibration_texts(tasks["openbookqa"]), batch_size=4))
    # one-shot cosine removal order = the two least important blocks by cosine on the calibration text
    assert a.orders["cosine"] == least_important_order(a.scores["cosine"])[:2]
    # pruning curves start at the full model and follow each order
    for metric, curve in a.curves.items():
        assert [k for k, _ in curve] == [0, 1, 2] and curve[0][1] == pytest.approx(scorer.accuracy().accuracy)
        assert curve[2][1] == pytest.approx(scorer.accuracy(a.orders[metric][:2]).accuracy)
    assert sum(map(sum, a.confusion)) == 6 and a.misjudgment["n"] == 6
    assert set(a.correlations["cosine_vs_drop_by_task"]) == set(tasks)

    paths = write_analysis(a, tmp_path, record={"command": "test"}, title="tiny")
    names = {p.name for p in paths}
    assert {"report.html", "report.json", "accuracy_drop_heatmap.png", "cosine_vs_drop.png", "rank_confusion.png",
            "pruning_curves.png"} <= names
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["analysis"]["removal_orders"]["cosine"] == a.orders["cosine"]
    assert "pruning_curves.png" in (tmp_path / "report.html").read_text()
    assert analysis_table(a).row_count > 5


def test_iterative_removal_rescores_the_smaller_model(setup):
    model, calib, _ = setup
    texts = calibration_texts(calib)
    removal = remove_by_metric("perplexity", model, CharTokenizer(), texts, num_remove=2, num_blocks=6, iterative=True,
                               batch_size=4)
    first, second = removal.removed
    assert first == least_important_order(removal.scores[0])[0]
    assert set(removal.scores[1]) == set(range(6)) - {first}          # rescored without the first block
    assert second == least_important_order(removal.scores[1])[0]
    one_shot = remove_by_metric("perplexity", model, CharTokenizer(), texts, num_remove=2, num_blocks=6, iterative=False,
                                batch_size=4)
    assert len(one_shot.scores) == 1 and one_shot.removed == tuple(least_important_order(one_shot.scores[0])[:2])
    assert torch.isfinite(torch.tensor(list(removal.scores[0].values()))).all()
