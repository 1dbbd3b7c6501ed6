"""compute_map against hand-computed values, with junk, truncated rankings and skipped queries."""

import numpy as np
import pytest

from pire_jax.datasets import ground_truth as ground_truth_lib
from pire_jax.evaluation import average_precision, compute_map, evaluate_ranks


def _ranks(*columns):
    return np.stack([np.asarray(column) for column in columns], axis=1)


def test_average_precision_first_and_third():
    # Positives at ranks 0 and 2 of 2 positives: (1 + 1)/2 * 1/2 + (1/2 + 2/3)/2 * 1/2.
    expected = 0.5 + (0.5 + 2.0 / 3.0) / 4.0
    assert average_precision(np.array([0, 2]), 2) == pytest.approx(expected)


def test_average_precision_counts_unretrieved_positives():
    # One of three positives retrieved, at rank 0: (1 + 1)/2 / 3.
    assert average_precision(np.array([0]), 3) == pytest.approx(1.0 / 3.0)


def test_compute_map_removes_junk_before_ap():
    # Database 0..4; ranking 0 1 2 3 4; positives {1, 3}; junk {2}.
    # After removing junk the ranking is 0 1 3 4, so the positives sit at ranks 1 and 2:
    # AP = ((0/1 + 1/2)/2 + (1/2 + 2/3)/2) / 2 = 5/12.
    result = compute_map(_ranks([0, 1, 2, 3, 4]), [{"ok": [1, 3], "junk": [2]}], kappas=(1, 2, 5))
    assert result.map == pytest.approx(5.0 / 12.0)
    assert result.average_precisions[0] == pytest.approx(5.0 / 12.0)
    # 1-based positions 2 and 3: mP@1 = 0/1, mP@2 = 1/2, mP@5 uses k' = 3: 2/3.
    np.testing.assert_allclose(result.precision_at_k, [0.0, 0.5, 2.0 / 3.0])


def test_compute_map_without_junk_differs():
    result = compute_map(_ranks([0, 1, 2, 3, 4]), [{"ok": [1, 3], "junk": []}])
    # Positives at ranks 1 and 3: ((0 + 1/2)/2 + (1/3 + 2/4)/2) / 2.
    expected = ((0.0 + 0.5) / 2.0 + (1.0 / 3.0 + 0.5) / 2.0) / 2.0
    assert result.map == pytest.approx(expected)


def test_compute_map_positives_outside_top_k():
    # The ranking is cut at 3 results and one of the two positives is not among them.
    result = compute_map(_ranks([4, 0, 2]), [{"ok": [2, 3], "junk": []}], kappas=(1, 5))
    # Positive 2 at rank 2 of 2 positives: (0/2 + 1/3)/2 / 2.
    assert result.map == pytest.approx((1.0 / 3.0) / 4.0)
    # k' = min(k, last positive position 3): mP@1 = 0, mP@5 = 1/3.
    np.testing.assert_allclose(result.precision_at_k, [0.0, 1.0 / 3.0])


def test_compute_map_all_positives_in_top_k():
    result = compute_map(_ranks([2, 3, 0, 1]), [{"ok": [2, 3]}], kappas=(1, 5))
    assert result.map == pytest.approx(1.0)
    np.testing.assert_allclose(result.precision_at_k, [1.0, 1.0])


def test_compute_map_skips_query_without_positives():
    gnd = [{"ok": [0], "junk": []}, {"ok": [], "junk": [1]}]
    result = compute_map(_ranks([0, 1, 2], [2, 1, 0]), gnd)
    assert result.map == pytest.approx(1.0)
    assert np.isnan(result.average_precisions[1])


def test_compute_map_no_positives_anywhere_raises():
    with pytest.raises(ValueError, match="No query has a positive"):
        compute_map(_ranks([0, 1]), [{"ok": [], "junk": []}])


def test_compute_map_rejects_wrong_shape():
    with pytest.raises(ValueError, match="Invalid ranks"):
        compute_map(np.zeros((3, 2), dtype=int), [{"ok": [0]}])


def test_evaluate_ranks_revisited_protocol():
    # Database 0..5; easy {0}, hard {1}, junk {2}. Ranking: 1 2 0 3 4 5.
    raw = {
        "imlist": [f"image_{index}" for index in range(6)],
        "qimlist": ["query"],
        "gnd": [{"bbx": [0, 0, 10, 10], "easy": np.array([0]), "hard": np.array([1]), "junk": np.array([2])}],
    }
    ground_truth = ground_truth_lib.parse_ground_truth(raw)
    results = evaluate_ranks(_ranks([1, 2, 0, 3, 4, 5]), ground_truth)
    # Easy: junk {2, 1} removed -> 0 3 4 5, positive 0 at rank 0: AP 1.
    assert results["easy"]["map"] == pytest.approx(100.0)
    # Medium: junk {2} removed -> 1 0 3 4 5, positives at 0 and 1: AP 1.
    assert results["medium"]["map"] == pytest.approx(100.0)
    # Hard: junk {2, 0} removed -> 1 3 4 5, positive 1 at rank 0: AP 1.
    assert results["hard"]["map"] == pytest.approx(100.0)
    assert results["map"] == results["medium"]["map"]


def test_evaluate_ranks_revisited_hard_differs():
    raw = {
        "imlist": [f"image_{index}" for index in range(4)],
        "qimlist": ["query"],
        "gnd": [{"bbx": None, "easy": [0], "hard": [3], "junk": []}],
    }
    ground_truth = ground_truth_lib.parse_ground_truth(raw)
    results = evaluate_ranks(_ranks([0, 1, 2, 3]), ground_truth)
    assert results["easy"]["map"] == pytest.approx(100.0)
    # Hard: easy image 0 becomes junk -> 1 2 3, positive 3 at rank 2: (0/2 + 1/3)/2 = 1/6.
    assert results["hard"]["map"] == pytest.approx(100.0 / 6.0, abs=1e-3)


def test_evaluate_ranks_old_protocol_percent_and_none():
    raw = {"imlist": ["a", "b", "c"], "qimlist": ["q1", "q2"], "gnd": [{"bbx": None, "ok": [1], "junk": []}, {"bbx": None, "ok": [], "junk": []}]}
    ground_truth = ground_truth_lib.parse_ground_truth(raw)
    results = evaluate_ranks(_ranks([0, 1, 2], [0, 1, 2]), ground_truth)
    # Positive at rank 1 of 1: (0/1 + 1/2)/2 = 1/4.
    assert results["map"] == pytest.approx(25.0)
    assert results["map_per_query"] == [pytest.approx(25.0), None]
