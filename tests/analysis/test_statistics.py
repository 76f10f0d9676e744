"""Relevance analysis (correlation, rank confusion, misjudgment, task dependence), plots and the HTML report."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from layershear.analysis import html as html_report
from layershear.analysis import plots
from layershear.analysis import statistics as analysis
from layershear.errors import LayershearError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- correlation


def test_correlation_matches_hand_computation():
    # x = 1,2,3,4 (mean 2.5); y = 2,4,5,4 (mean 3.75)
    # dx = -1.5,-.5,.5,1.5; dy = -1.75,.25,1.25,.25 -> Sxy = 3.5, Sxx = 5, Syy = 4.75
    # Pearson r = 3.5 / sqrt(5 * 4.75) = 7 / sqrt(95) = 0.718185
    # ranks(y) = 1, 2.5, 4, 2.5 -> Sxy = 3, Syy = 4.5 -> Spearman rho = 3 / sqrt(5 * 4.5) = 2 / sqrt(10) = 0.632456
    # With n = 4 the t test has 2 degrees of freedom, whose two-sided p is 1 - |t| / sqrt(2 + t^2) = 1 - |r|.
    x = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 9: 100.0}  # block 9 is not in y and is ignored
    y = {0: 2.0, 1: 4.0, 2: 5.0, 3: 4.0}
    c = analysis.correlation(x, y)
    assert c.n == 4
    assert c.pearson_r == pytest.approx(7 / math.sqrt(95))
    assert c.spearman_rho == pytest.approx(2 / math.sqrt(10))
    assert c.pearson_p == pytest.approx(1 - 7 / math.sqrt(95))
    assert c.spearman_p == pytest.approx(1 - 2 / math.sqrt(10))


@pytest.mark.parametrize(
    ("x", "y", "n"),
    [
        ({0: 1.0, 1: 2.0}, {0: 3.0, 1: 1.0}, 2),  # fewer than 3 blocks
        ({0: 1.0, 1: 2.0, 2: 3.0}, {0: 5.0, 1: 5.0, 2: 5.0}, 3),  # constant input
        ({0: 1.0, 1: 2.0, 2: math.nan}, {0: 1.0, 1: 2.0, 2: 3.0}, 2),  # NaN block dropped -> too few
        ({}, {}, 0),
    ],
)
def test_correlation_is_nan_when_undefined(x, y, n):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy warning may leak
        c = analysis.correlation(x, y)
    assert c.n == n
    assert all(math.isnan(v) for v in (c.pearson_r, c.pearson_p, c.spearman_rho, c.spearman_p))
    assert c.to_dict() == {"pearson_r": None, "pearson_p": None, "spearman_rho": None, "spearman_p": None, "n": n}


# ---------------------------------------------------------------- ranks


def test_least_important_order_ascending_with_index_ties():
    assert analysis.least_important_order({3: 0.5, 1: 0.5, 2: 0.1, 0: 0.9}) == [2, 1, 3, 0]
    with pytest.raises(LayershearError, match="not finite"):
        analysis.least_important_order({0: 1.0, 1: math.nan})


def test_rank_confusion_hand_example():
    reference = {0: 0.3, 1: 0.1, 2: 0.2}  # least -> most important: 1, 2, 0
    other = {0: 0.1, 1: 0.2, 2: 0.3, 7: 9}  # least -> most important: 0, 1, 2 (block 7 not common)
    # row 0 = block 1 -> other rank 1; row 1 = block 2 -> rank 2; row 2 = block 0 -> rank 0
    conf = analysis.rank_confusion(reference, other)
    np.testing.assert_array_equal(conf, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert conf.dtype.kind == "i"


def test_rank_confusion_identity_when_orders_agree():
    reference = {b: float(b) for b in range(4)}
    other = {b: 10.0 * b - 3 for b in range(4)}  # same order, different scale
    np.testing.assert_array_equal(analysis.rank_confusion(reference, other), np.eye(4, dtype=int))
    assert analysis.rank_confusion({}, {}).shape == (0, 0)


def test_misjudgment_adjacent_swap():
    reference = {b: float(b) for b in range(8)}
    other = {**reference, 3: 4.0, 4: 3.0}  # blocks 3 and 4 swap ranks: 2 of 8 blocks, each off by 1
    m = analysis.misjudgment(reference, other)
    assert (m.rate, m.major_rate, m.major_threshold, m.n) == (2 / 8, 0.0, 2, 8)  # default threshold ceil(8/4) = 2


def test_misjudgment_reversal():
    reference = {b: float(b) for b in range(4)}
    other = {b: -float(b) for b in range(4)}  # rank distances 3, 1, 1, 3
    m = analysis.misjudgment(reference, other)
    assert (m.rate, m.major_rate, m.major_threshold, m.n) == (1.0, 1.0, 1, 4)  # default threshold ceil(4/4) = 1
    assert analysis.misjudgment(reference, other, major=3).major_rate == 0.5
    assert analysis.misjudgment(reference, reference).to_dict() == {"rate": 0.0, "major_rate": 0.0, "major_threshold": 1, "n": 4}
    with pytest.raises(LayershearError, match="major=0"):
        analysis.misjudgment(reference, other, major=0)


# ---------------------------------------------------------------- task dependence


def test_zscore_by_task_by_hand():
    z = analysis.zscore_by_task({"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {0: 5.0, 1: 5.0, 2: 5.0}})
    s = math.sqrt(2 / 3)  # population std of 1, 2, 3
    assert z["a"] == pytest.approx({0: -1 / s, 1: 0.0, 2: 1 / s})
    assert z["b"] == {0: 0.0, 1: 0.0, 2: 0.0}


def _per_task_data(num_blocks: int = 10, tasks: tuple[str, ...] = ("arc_easy", "hellaswag", "piqa", "openbookqa")):
    base = [0.9 - 0.05 * b + 0.01 * (b % 3) for b in range(num_blocks)]
    # cosine: the same block pattern on every task up to a per-task affine map -> identical z-scores
    cosine = {t: {b: base[b] * (1 + i) + i for b in range(num_blocks)} for i, t in enumerate(tasks)}
    # accuracy drop: a different block pattern on every task
    drop = {t: {b: 0.02 * math.sin(1.3 * b * (i + 1) + i) for b in range(num_blocks)} for i, t in enumerate(tasks)}
    return drop, cosine


def test_task_dependence_detects_task_dependent_drops():
    drop, cosine = _per_task_data()
    td = analysis.task_dependence(drop, cosine)
    assert td.tasks == ("arc_easy", "hellaswag", "piqa", "openbookqa")
    assert td.n_blocks == 10 and set(td.accuracy_variance) == set(range(10))
    assert max(td.cosine_variance.values()) == pytest.approx(0.0, abs=1e-12)
    assert td.mean_accuracy_variance > td.mean_cosine_variance
    assert td.p_value < 0.05
    d = td.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_task_dependence_all_differences_zero_gives_nan():
    drop, _ = _per_task_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        td = analysis.task_dependence(drop, drop)
    assert math.isnan(td.statistic) and math.isnan(td.p_value)
    assert td.to_dict()["p_value"] is None


def test_task_dependence_needs_two_common_tasks():
    drop, cosine = _per_task_data()
    with pytest.raises(LayershearError, match="2 tasks"):
        analysis.task_dependence({"arc_easy": drop["arc_easy"]}, cosine)
    with pytest.raises(LayershearError, match="2 tasks"):
        analysis.task_dependence({"piqa": drop["piqa"], "x": drop["piqa"]}, {"piqa": cosine["piqa"], "y": cosine["piqa"]})


# ---------------------------------------------------------------- plots and report


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 100
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plots_write_pngs(tmp_path):
    drop, cosine = _per_task_data(num_blocks=6, tasks=("arc_easy", "piqa"))
    _assert_png(plots.heatmap_drop(drop, tmp_path / "heatmap.png"))
    _assert_png(plots.scatter_cosine_vs_drop(cosine["piqa"], drop["piqa"], tmp_path / "scatter.png", r=-0.46))
    conf = analysis.rank_confusion(drop["piqa"], cosine["piqa"])
    _assert_png(plots.confusion_matrix(conf, tmp_path / "sub" / "confusion.png"))
    curves = {"accuracy": [(0, 0.70), (1, 0.69), (2, 0.66)], "cosine": [(0, 0.70), (2, 0.55), (1, 0.64)]}
    _assert_png(plots.pruning_curves(curves, tmp_path / "curves.png", random=0.25))
    with pytest.raises(LayershearError, match="2-D"):
        plots.confusion_matrix(np.zeros(3), tmp_path / "bad.png")


def test_write_report_escapes_text_and_links_images(tmp_path):
    path = html_report.write_report(
        tmp_path / "out",
        title="Pythia <410m> & cosine",
        summary={"Pearson R": "-0.46", "note": "a < b"},
        tables=[("Blocks & scores", ["block", "drop"], [["0", "<b>1.2</b>"], ["1", "0.3 & more"]])],
        images=[("Accuracy drop heatmap", "heatmap.png"), ("Scatter", "scatter.png")],
    )
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert "Pythia &lt;410m&gt; &amp; cosine" in text and "<410m>" not in text
    assert "&lt;b&gt;1.2&lt;/b&gt;" in text and "0.3 &amp; more" in text and "Blocks &amp; scores" in text
    assert "<dt>note</dt><dd>a &lt; b</dd>" in text
    assert '<img src="heatmap.png" alt="Accuracy drop heatmap">' in text and 'src="scatter.png"' in text
    assert "<figcaption>Scatter</figcaption>" in text
    assert "<script" not in text and "http" not in text


def test_write_report_rejects_bad_inputs(tmp_path):
    with pytest.raises(LayershearError, match=r"row 0 has 1 cells.*not a file name relative"):
        html_report.write_report(tmp_path, title="t", summary={}, tables=[("c", ["a", "b"], [["1"]])], images=[("x", "/abs/x.png")])
