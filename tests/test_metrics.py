"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from rag.eval.metrics import mrr_at, ndcg_at, recall_at

RANKED = [["a", "b", "c"], ["x", "y", "gold"], ["p", "q", "r"]]
GOLDS = ["a", "gold", "missing"]


def test_recall_mrr_and_ndcg_by_hand():
    assert recall_at(RANKED, GOLDS, 1) == pytest.approx(1 / 3)
    assert recall_at(RANKED, GOLDS, 3) == pytest.approx(2 / 3)
    assert mrr_at(RANKED, GOLDS, 3) == pytest.approx((1 + 1 / 3) / 3)
    assert ndcg_at(RANKED, GOLDS, 3) == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert ndcg_at(RANKED, GOLDS, 2) == pytest.approx(1 / 3)
    assert ndcg_at([], [], 10) == 0.0


def test_pass_at_k_matches_its_closed_form():
    from rag.eval.metrics import pass_at_k

    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 10) == 1.0 and pass_at_k(10, 0, 5) == 0.0
    # 1 - C(7,2)/C(10,2) = 1 - 21/45
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_ranking_scores_take_document_ids_or_hits_alike():
    from rag.eval.metrics import ranking_scores
    from rag.types import Chunk, Hit

    def hit(doc: str) -> Hit:
        return Hit(chunk=Chunk(id=f"{doc}#0", doc_id=doc, text="", start=0, end=0), score=0.0,
                   retriever="test")

    by_ids = ranking_scores(RANKED, GOLDS, depths=(1, 3))
    assert ranking_scores([[hit(d) for d in row] for row in RANKED], GOLDS, depths=(1, 3)) == by_ids
    assert by_ids["R@1"] == round(1 / 3, 4) and by_ids["R@3"] == round(2 / 3, 4)


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_data():
    from rag.eval.metrics import bootstrap_interval

    small = [1.0, 0.0] * 10
    large = [1.0, 0.0] * 1000
    lo, hi = bootstrap_interval(small)
    assert 0.2 < lo < 0.5 < hi < 0.8  # about 0.5 ± 1.96 · 0.5 / sqrt(20)
    big_lo, big_hi = bootstrap_interval(large)
    assert big_hi - big_lo < (hi - lo) / 5  # ~1/sqrt(100) as wide
    assert bootstrap_interval([0.25] * 5) == (0.25, 0.25)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_paired_bootstrap_interval_matches_the_normal_interval_of_a_known_paired_delta():
    from rag.eval.metrics import paired_bootstrap_interval

    # 400 items: the system alone right on 60, the baseline alone on 20, both or neither on 320.
    # Delta 0.1; sd of the differences sqrt(80/400 - 0.1**2), so 0.1 +- 1.96 * 0.0218.
    system = [1.0] * 60 + [0.0] * 20 + [1.0] * 100 + [0.0] * 220
    baseline = [0.0] * 60 + [1.0] * 20 + [1.0] * 100 + [0.0] * 220
    lo, hi = paired_bootstrap_interval(system, baseline)
    assert lo == pytest.approx(0.1 - 1.96 * (0.19 / 400) ** 0.5, abs=0.006)
    assert hi == pytest.approx(0.1 + 1.96 * (0.19 / 400) ** 0.5, abs=0.006)
    assert paired_bootstrap_interval(baseline, baseline) == (0.0, 0.0)
    with pytest.raises(ValueError, match="one per item"):
        paired_bootstrap_interval(system, baseline[1:])


def test_paired_difference_is_the_mean_delta_with_its_interval_rounded():
    from rag.eval.metrics import paired_bootstrap_interval, paired_difference

    system = [1.0] * 60 + [0.0] * 20 + [1.0] * 100 + [0.0] * 220  # as above: delta 0.1
    baseline = [0.0] * 60 + [1.0] * 20 + [1.0] * 100 + [0.0] * 220
    delta, interval = paired_difference(system, baseline)
    assert delta == 0.1
    assert interval == [round(x, 4) for x in paired_bootstrap_interval(system, baseline)]
    low, high = paired_difference(baseline, system, digits=2)[1]
    assert paired_difference(baseline, system)[0] == -0.1 and low < -0.1 < high < 0
    with pytest.raises(ValueError, match="one per item"):
        paired_difference(system, baseline[1:])
