"""Intervals over seeds and the verdicts drawn from them (torch-free).

Every number needle reports is a mean over seeds with a Student-t interval; every claim is decided
on paired per-seed differences: it holds when the interval lies above zero, fails when it lies
below, and stays undecided otherwise (also whenever fewer than two seeds give no interval).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"


class Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Mean of the finite ``values`` and its two-sided Student-t interval at ``confidence``.

    With fewer than two values there is no interval: the bounds are NaN (and so is the mean when
    there is no value at all)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def errorbar(confidence: float = 0.95):
    """The same interval as seaborn's ``errorbar=`` callable: values -> (low, high)."""

    def interval(values):
        result = t_interval(values, confidence)
        return result.low, result.high

    return interval


def verdict(low: float, high: float) -> str:
    """holds when the interval lies above zero, fails when below, undecided otherwise."""
    if low > 0:
        return HOLDS
    if high < 0:
        return FAILS
    return UNDECIDED  # includes NaN bounds: no interval, no decision


def bonferroni(confidence: float, comparisons: int) -> float:
    """Per-comparison confidence so that ``comparisons`` intervals hold jointly at ``confidence``."""
    return 1 - (1 - confidence) / max(comparisons, 1)
