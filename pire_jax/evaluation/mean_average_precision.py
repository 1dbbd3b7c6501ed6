"""Mean average precision with the revisitop semantics, for the old and the revisited protocol.

Semantics (Radenovic et al., CVPR 2018, revisitop `compute_map`):
  * junk images are removed from a query's ranking before AP is computed;
  * AP is the trapezoidal area under the precision-recall curve, with precision 1 at
    recall 0 when the first result is a positive;
  * a positive that never appears in the ranking contributes nothing, but still
    counts in the number of positives;
  * queries without positives are skipped (AP is NaN) and left out of the mean;
  * mP@k for a query is (# positives within the first k') / k', where
    k' = min(k, position of the last positive), so that a query with fewer than k
    positives is not penalised.
"""

from typing import Any, NamedTuple, Sequence

import numpy as np

from pire_jax.datasets import ground_truth as ground_truth_lib

DEFAULT_KAPPAS = (1, 5, 10)


class MapResult(NamedTuple):
    """Output of `compute_map`; fractions in 0..1, NaN for skipped queries.

    Attributes:
      map: mean AP over the queries that have positives.
      average_precisions: AP per query, shape (n_queries,).
      precision_at_k: mean mP@k per kappa, shape (n_kappas,).
      precision_at_k_per_query: shape (n_queries, n_kappas).
    """

    map: float
    average_precisions: np.ndarray
    precision_at_k: np.ndarray
    precision_at_k_per_query: np.ndarray


def average_precision(positive_ranks: np.ndarray, n_positives: int) -> float:
    """Compute trapezoidal AP from the 0-based ranks of the retrieved positives.

    Args:
      positive_ranks: sorted 0-based positions of the positives in the ranking, after
        junk removal.
      n_positives: number of positives in the ground truth (>= len(positive_ranks)).

    Returns:
      AP in 0..1.
    """
    if n_positives <= 0:
        raise ValueError(f"Invalid number of positives {n_positives}; expected at least 1.")
    ranks = np.asarray(positive_ranks, dtype=np.float64)
    found = np.arange(len(ranks), dtype=np.float64)
    # Precision just before (found / rank) and at (found + 1) / (rank + 1) each positive;
    # the first is 1 when the positive sits at rank 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        precision_before = np.where(ranks == 0, 1.0, found / ranks)
    precision_at = (found + 1.0) / (ranks + 1.0)
    return float(((precision_before + precision_at) / 2.0).sum() / n_positives)


def compute_map(
    ranks: np.ndarray, gnd: Sequence[dict[str, Any]], kappas: Sequence[int] = DEFAULT_KAPPAS
) -> MapResult:
    """Compute mAP and mP@k of a ranking against `ok`/`junk` ground truth.

    Args:
      ranks: int array (n_database, n_queries); column q lists database indices,
        most similar first (revisitop layout). A column may be a top-k prefix.
      gnd: one dict per query with `ok` (positive indices) and optionally `junk`.
      kappas: cut-offs k for mP@k.

    Returns:
      A `MapResult`.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(f"Invalid ranks of shape {ranks.shape}: expected (n_database, {len(gnd)}).")
    n_queries = len(gnd)
    average_precisions = np.full(n_queries, np.nan)
    precisions = np.full((n_queries, len(kappas)), np.nan)

    for query, judgement in enumerate(gnd):
        positives = np.asarray(judgement["ok"], dtype=np.int64)
        if positives.size == 0:
            continue
        junk = np.asarray(judgement.get("junk", []), dtype=np.int64)
        ranking = ranks[:, query]
        ranking = ranking[~np.isin(ranking, junk)]
        positive_ranks = np.flatnonzero(np.isin(ranking, positives))
        average_precisions[query] = average_precision(positive_ranks, positives.size)

        # 1-based positions; a query whose positives were never retrieved has mP@k 0.
        positions = positive_ranks + 1
        last = positions.max() if positions.size else 1
        for column, kappa in enumerate(kappas):
            cutoff = min(last, kappa)
            precisions[query, column] = np.count_nonzero(positions <= cutoff) / cutoff

    evaluated = ~np.isnan(average_precisions)
    if not evaluated.any():
        raise ValueError("No query has a positive in the ground truth, so mAP is undefined.")
    return MapResult(
        map=float(average_precisions[evaluated].mean()),
        average_precisions=average_precisions,
        precision_at_k=precisions[evaluated].mean(axis=0),
        precision_at_k_per_query=precisions,
    )


def _to_percent_list(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(value) else round(100.0 * float(value), 4) for value in values]


def evaluate_ranks(
    ranks: np.ndarray, ground_truth: ground_truth_lib.GroundTruth, kappas: Sequence[int] = DEFAULT_KAPPAS
) -> dict[str, Any]:
    """Evaluate a ranking under the dataset's protocol, with every figure in percent.

    Args:
      ranks: int array (n_database, n_queries), revisitop layout.
      ground_truth: the dataset's ground truth.
      kappas: cut-offs for mP@k.

    Returns:
      For the old protocol: {"map", "map_per_query", "mp@k": {k: value}}.
      For the revisited protocol: {"easy", "medium", "hard"}, each a dict as above,
      plus "map" and "map_per_query" copied from Medium, the setting revisitop
      reports first. Skipped queries have `None` in the per-query list.
    """
    results: dict[str, Any] = {}
    for view, gnd in ground_truth_lib.protocol_views(ground_truth).items():
        result = compute_map(ranks, gnd, kappas)
        summary = {
            "map": round(100.0 * result.map, 4),
            "map_per_query": _to_percent_list(result.average_precisions),
            "mp@k": {str(kappa): round(100.0 * float(value), 4) for kappa, value in zip(kappas, result.precision_at_k)},
        }
        if view == "map":
            results.update(summary)
        else:
            results[view] = summary
    if ground_truth.protocol == ground_truth_lib.REVISITED_PROTOCOL:
        results["map"] = results["medium"]["map"]
        results["map_per_query"] = results["medium"]["map_per_query"]
    return results
