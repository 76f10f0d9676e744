"""The statistics of scripts/compare_dtypes.py: which reversed candidate pairs count as ties."""

from __future__ import annotations

import sys

import pytest
from helpers import SCRIPTS_DIR

sys.path.insert(0, str(SCRIPTS_DIR))
from compare_dtypes import compare_step, mcnemar_p


@pytest.mark.parametrize(("only_a", "only_b", "both", "want"), [
    (10, 10, 5, 1.0),               # as many documents each way: no evidence of a difference
    (10, 0, 0, 2 / 2**10),          # binomial sign test, two-sided: 2 x (1/2)^10
    (3, 0, 40, 0.25),               # three discordant documents can never be significant
    (0, 0, 7, 1.0),                 # identical predictions
])
def test_mcnemar_exact(only_a, only_b, both, want):
    right_a = (True,) * only_a + (False,) * only_b + (True,) * both
    right_b = (False,) * only_a + (True,) * only_b + (True,) * both
    assert mcnemar_p(right_a, right_b) == pytest.approx(want)
    assert mcnemar_p(right_b, right_a) == pytest.approx(want)


def test_reversed_pairs_split_into_ties_and_significant():
    # 20 documents; block 0 is right on all, block 1 on 15 (5 discordant), block 2 on 8 (12 discordant)
    correct = {0: (True,) * 20, 1: (True,) * 15 + (False,) * 5, 2: (True,) * 8 + (False,) * 12}
    fp32 = {0: 0.0, 1: 0.5, 2: 1.2}          # relevance: removing 0 hurts least
    bf16 = {0: 0.6, 1: 0.58, 2: 0.55}        # bf16 reverses the whole order
    out = compare_step(fp32, bf16, noise=0.1, tie_docs=2.0, correct=correct)
    assert out["spearman"] == pytest.approx(-1.0)
    assert out["reversed_pairs"] == 3       # (0, 1), (0, 2) and (1, 2)
    assert out["swapped_outside_ties"] == [(0, 1), (0, 2), (1, 2)]   # all more than 2 documents apart
    # (0, 2): 12 documents to 0, p = 2^-11; (1, 2): 7 to 0, p = 2^-6; (0, 1): 5 to 0, p = 2^-4 > 0.05, a tie
    assert out["swapped_significant"] == [(0, 2, pytest.approx(2 ** -11)), (1, 2, pytest.approx(2 ** -6))]
