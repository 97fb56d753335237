"""Intervals over seeds and the verdicts drawn from them (torch-free).

Every number needle reports is a mean over seeds with a Student-t interval; every claim is decided
on paired per-seed differences: it holds when the interval lies above zero, fails when it lies
below, and stays undecided otherwise (also whenever fewer than two seeds give no interval).

A diverged run is never dropped from a comparison: it enters its pair at the worst value of the
measure (chance accuracy, or deviation 1.0), so it counts against its own arm.

A claim over several relax times t_w is decided by one of two rules:
- "every t_w" holds when every unadjusted interval lies above zero (an intersection-union test
  needs no adjustment) and fails when some Bonferroni-adjusted interval lies below zero;
- "some t_w" holds when some Bonferroni-adjusted interval lies above zero and fails when every
  unadjusted interval lies below zero (the same two tests applied to the negated claim).
A claim without relax times ("single comparison") takes the verdict of its one interval, as
both rules do with one relax time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
NOT_TESTED = "not tested"  # the claim's arms or relax times are not configured
VERDICTS = (HOLDS, FAILS, UNDECIDED, NOT_TESTED)

SINGLE = "single comparison"
EVERY = "every t_w (intersection-union)"
SOME = "some t_w (Bonferroni)"
RULES = (SINGLE, EVERY, SOME)


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
    # scipy on first use: needle.tables imports this module, and every training job writes its
    # table through needle.tables; importing scipy.stats would cost each of them about a second.
    from scipy import stats as scipy_stats

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


# -- paired per-seed differences -------------------------------------------------------------------
class Outcome(NamedTuple):
    """One run's value of the compared measure, and whether the run diverged."""

    value: float
    diverged: bool


class Paired(NamedTuple):
    """The per-seed differences first - second over the seeds both arms have."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    n_diverged: int  # diverged runs among the pairs, entered at the measure's worst value
    unpaired: tuple[int, ...]  # seeds that only one of the two arms has: reported, not compared


def paired_differences(
    first: Mapping[int, Outcome], second: Mapping[int, Outcome], *, diverged_value: float
) -> Paired:
    """Differences first - second matched on seed; a diverged run counts as ``diverged_value``.

    ``diverged_value`` is the measure's worst value for the arm that diverged (chance accuracy
    1 / classes, or deviation 1.0), so the run counts against its own arm. A run that did not
    diverge must have a finite value: a missing readout is a bad table, never a silent zero.
    """
    seeds = tuple(sorted(set(first) & set(second)))
    unpaired = tuple(sorted(set(first) ^ set(second)))

    def value(outcome: Outcome, seed: int) -> float:
        if outcome.diverged:
            return diverged_value
        if not math.isfinite(outcome.value):
            raise ValueError(f"seed {seed}: a run that did not diverge has no value")
        return outcome.value

    differences = tuple(value(first[seed], seed) - value(second[seed], seed) for seed in seeds)
    n_diverged = sum(first[seed].diverged + second[seed].diverged for seed in seeds)
    return Paired(seeds, differences, int(n_diverged), unpaired)


# -- one claim over several relax times -----------------------------------------------------------
class Tested(NamedTuple):
    """One comparison of a claim: its interval, its Bonferroni-adjusted interval, its verdict."""

    interval: Interval
    adjusted: Interval
    adjusted_confidence: float
    verdict: str  # of the unadjusted interval


def decide(
    differences: Sequence[Sequence[float]], rule: str, confidence: float
) -> tuple[list[Tested], str]:
    """Test each set of paired differences (one per relax time) and decide the claim by ``rule``.

    Returns the per-comparison results and the claim's verdict (see the module docstring). With
    no comparison at all the claim is undecided.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    if rule == SINGLE and len(differences) != 1:
        raise ValueError(
            f"a single comparison needs one set of differences, got {len(differences)}"
        )
    adjusted_confidence = bonferroni(confidence, len(differences))
    tested = []
    for values in differences:
        interval = t_interval(values, confidence)
        adjusted = t_interval(values, adjusted_confidence)
        tested.append(
            Tested(interval, adjusted, adjusted_confidence, verdict(interval.low, interval.high))
        )
    if not tested:
        return tested, UNDECIDED
    unadjusted_holds = all(one.interval.low > 0 for one in tested)
    unadjusted_fails = all(one.interval.high < 0 for one in tested)
    if rule in (SINGLE, EVERY):
        if unadjusted_holds:
            return tested, HOLDS
        if any(one.adjusted.high < 0 for one in tested):
            return tested, FAILS
        return tested, UNDECIDED
    if any(one.adjusted.low > 0 for one in tested):
        return tested, HOLDS
    if unadjusted_fails:
        return tested, FAILS
    return tested, UNDECIDED
