"""Least-distance programming: the smallest vector that satisfies linear inequalities.

RDG and FMD change a few pixel blocks by the least amount that puts DoG values in a
required order. Because the DoG values are linear in the pixels, this is

    minimize ||y||_2   subject to   G y >= h.

Lawson and Hanson ("Solving Least Squares Problems", 1974, chapter 23) reduce it to a
non-negative least-squares problem on the transposed constraints, which scipy solves
exactly (active-set NNLS) in well under a millisecond for the sizes used here.
"""

import numpy as np
from scipy import optimize

# A residual this small relative to 1 means the NNLS fit is exact, i.e. the
# inequalities have no common solution.
_INFEASIBLE_RESIDUAL = 1e-9


def solve_least_distance(constraints: np.ndarray, bounds: np.ndarray) -> np.ndarray | None:
    """Return argmin ||y|| subject to constraints @ y >= bounds, or None when infeasible.

    Most inequalities of the attacks hold with room to spare, so the problem is solved
    on the violated ones first, and the inequalities that the solution breaks are added
    until it satisfies all of them. The result is the optimum of the full problem,
    because adding inequalities that the optimum of a relaxation already meets does
    not change it.

    Args:
      constraints: float array (m, n), the matrix G.
      bounds: float array (m,), the vector h.

    Returns:
      float64 array (n,), or None when no y satisfies all m inequalities.
    """
    constraints = np.asarray(constraints, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    if constraints.ndim != 2 or bounds.shape != (constraints.shape[0],):
        raise ValueError(
            f"Invalid least-distance problem: constraints {constraints.shape} and bounds {bounds.shape} "
            "must be (m, n) and (m,)."
        )
    size = constraints.shape[1]
    active = bounds > 0
    solution = np.zeros(size)
    for _ in range(len(bounds) + 1):
        if not np.any(active):
            return solution
        solution = _solve_all(constraints[active], bounds[active])
        if solution is None:
            return None
        violated = constraints @ solution < bounds - _TOLERANCE * (1.0 + np.abs(bounds))
        if not np.any(violated & ~active):
            return solution
        active |= violated
    return solution


# Relative slack below which an inequality counts as violated by a candidate solution.
_TOLERANCE = 1e-9


def _solve_all(constraints: np.ndarray, bounds: np.ndarray) -> np.ndarray | None:
    """Solve the least-distance program with every inequality, as Lawson and Hanson do."""
    count, size = constraints.shape
    # With E = [G^T; h^T] and f = (0, ..., 0, 1), solve min ||E u - f|| over u >= 0.
    # A non-zero residual r gives y = -r[:n] / r[n]; a zero residual means infeasible.
    stacked = np.vstack([constraints.T, bounds[None, :]])
    target = np.zeros(size + 1)
    target[-1] = 1.0
    weights, _ = optimize.nnls(stacked, target, maxiter=50 * (size + count))
    residual = stacked @ weights - target
    if np.linalg.norm(residual) < _INFEASIBLE_RESIDUAL or residual[-1] >= 0:
        return None
    return -residual[:size] / residual[-1]
