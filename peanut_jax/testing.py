"""Small helpers shared by the test suite and the parity scripts."""

from __future__ import annotations

import numpy as np


def parity_error(actual, reference) -> float:
    """max |actual - reference| / max(1, max |reference|): the project's parity measure."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs reference {r.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - r)) / max(1.0, float(np.max(np.abs(r)))))


def assert_parity(actual, reference, tol: float = 2e-4, what: str = "output") -> float:
    """Raise unless parity_error(actual, reference) <= tol; returns the error."""
    err = parity_error(actual, reference)
    if not np.isfinite(err) or err > tol:
        raise AssertionError(f"{what}: max|Δ| relative to max(1,|ref|) = {err:.3e} > {tol:.1e}")
    return err
