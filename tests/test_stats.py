"""needle.stats: Student-t intervals over seeds, paired differences and the claim rules.

Expected intervals come from printed t tables (t_{0.975, 4} = 2.776, t_{0.975, 1} = 12.706,
t_{0.995, 4} = 4.604, t_{0.995, 9} = 3.250), so a test fails if the quantile, the standard error
or the degrees of freedom are wrong; tolerances are those of the printed tables.
"""

import math

import pytest

from needle import stats
from needle.stats import EVERY, FAILS, HOLDS, SINGLE, SOME, UNDECIDED, Outcome

TABLE = 1e-3  # t tables print three decimals


def test_the_interval_of_five_values_uses_t_with_four_degrees_of_freedom():
    # mean 3, sd sqrt(2.5), standard error sqrt(2.5 / 5) = 0.7071; 2.776 x 0.7071 = 1.963
    interval = stats.t_interval([1, 2, 3, 4, 5], 0.95)
    assert interval.n == 5
    assert interval.mean == pytest.approx(3.0)
    assert interval.low == pytest.approx(3 - 1.963, abs=TABLE)
    assert interval.high == pytest.approx(3 + 1.963, abs=TABLE)


def test_two_values_give_the_wide_interval_of_one_degree_of_freedom():
    # mean 1, standard error sqrt(2) / sqrt(2) = 1, t_{0.975, 1} = 12.706
    interval = stats.t_interval([0, 2], 0.95)
    assert (interval.low, interval.high) == pytest.approx((1 - 12.706, 1 + 12.706), abs=TABLE)


def test_the_confidence_level_sets_the_quantile():
    # ten values 0..9: mean 4.5, standard error sqrt(55 / 6 / 10) = 0.9574; t_{0.995, 9} = 3.250
    interval = stats.t_interval(range(10), 0.99)
    assert interval.high - interval.mean == pytest.approx(3.250 * 0.9574, abs=2 * TABLE)


def test_non_finite_values_are_left_out_and_fewer_than_two_give_no_interval():
    assert stats.t_interval([1, 2, 3, 4, 5, math.nan, math.inf]) == stats.t_interval(
        [1, 2, 3, 4, 5]
    )
    one = stats.t_interval([0.7])
    assert one.mean == 0.7 and one.n == 1
    assert math.isnan(one.low) and math.isnan(one.high)
    none = stats.t_interval([])
    assert none.n == 0 and math.isnan(none.mean)


def test_the_errorbar_callable_draws_the_summary_interval():
    interval = stats.t_interval([1, 2, 3, 4, 5], 0.9)
    assert stats.errorbar(0.9)([1, 2, 3, 4, 5]) == (interval.low, interval.high)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.1, 0.5, HOLDS), (-0.5, -0.1, FAILS), (-0.1, 0.1, UNDECIDED), (0.0, 0.2, UNDECIDED)],
)
def test_an_interval_decides_only_when_it_excludes_zero(low, high, expected):
    assert stats.verdict(low, high) == expected


def test_no_interval_decides_nothing():
    assert stats.verdict(math.nan, math.nan) == UNDECIDED


def test_bonferroni_divides_the_error_rate_by_the_number_of_comparisons():
    assert stats.bonferroni(0.95, 5) == pytest.approx(0.99)
    assert stats.bonferroni(0.95, 1) == pytest.approx(0.95)


# -- paired differences ----------------------------------------------------------------------------
def test_differences_are_matched_on_seed_whatever_the_order():
    first = {2: Outcome(0.9, False), 0: Outcome(0.8, False), 1: Outcome(0.7, False)}
    second = {0: Outcome(0.5, False), 1: Outcome(0.6, False), 2: Outcome(0.4, False)}
    paired = stats.paired_differences(first, second, diverged_value=0.1)
    assert paired.seeds == (0, 1, 2)
    assert paired.differences == pytest.approx((0.3, 0.1, 0.5))
    assert paired.n_diverged == 0 and paired.unpaired == ()


def test_a_diverged_run_enters_at_the_worst_value_against_its_own_arm():
    first = {0: Outcome(0.9, False), 1: Outcome(0.95, True)}  # its own accuracy ignored
    second = {0: Outcome(0.5, False), 1: Outcome(0.6, False)}
    paired = stats.paired_differences(first, second, diverged_value=0.1)
    assert paired.differences == pytest.approx((0.4, 0.1 - 0.6))
    assert paired.n_diverged == 1
    against_second = stats.paired_differences(second, first, diverged_value=0.1)
    assert against_second.differences == pytest.approx((-0.4, 0.6 - 0.1))


def test_a_seed_without_its_partner_is_reported_not_compared():
    first = {0: Outcome(0.9, False), 1: Outcome(0.8, False), 3: Outcome(0.8, False)}
    second = {0: Outcome(0.5, False), 2: Outcome(0.6, False)}
    paired = stats.paired_differences(first, second, diverged_value=0.1)
    assert paired.seeds == (0,)
    assert paired.unpaired == (1, 2, 3)


def test_a_healthy_run_without_a_value_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="seed 4"):
        stats.paired_differences(
            {4: Outcome(math.nan, False)}, {4: Outcome(0.5, False)}, diverged_value=0.1
        )


# -- claims over several relax times ---------------------------------------------------------------
CLEAR_WIN = [1.0, 1.1, 0.9, 1.0, 1.05]
CLEAR_LOSS = [-1.0, -1.1, -0.9, -1.0, -1.05]
# mean -2, standard error 0.7071: the 95 % interval [-3.963, -0.037] lies below 0, but the
# Bonferroni interval for 5 comparisons (99 %, t_{0.995, 4} = 4.604) is [-5.256, +1.256].
BARELY_BELOW = [0.0, -1.0, -2.0, -3.0, -4.0]
BARELY_ABOVE = [-value for value in BARELY_BELOW]
OVERLAP = [0.5, -0.5, 0.2, -0.2, 0.0]


def test_every_t_w_holds_when_every_unadjusted_interval_is_above_zero():
    tested, verdict = stats.decide([CLEAR_WIN, CLEAR_WIN, BARELY_ABOVE], EVERY, 0.95)
    assert verdict == HOLDS
    assert [one.verdict for one in tested] == [HOLDS, HOLDS, HOLDS]


def test_every_t_w_fails_only_when_a_bonferroni_interval_is_below_zero():
    assert stats.decide([CLEAR_WIN, CLEAR_WIN, CLEAR_LOSS], EVERY, 0.95)[1] == FAILS
    tested, verdict = stats.decide([*[CLEAR_WIN] * 4, BARELY_BELOW], EVERY, 0.95)
    assert tested[4].verdict == FAILS  # its own 95 % interval lies below 0 ...
    assert tested[4].adjusted_confidence == pytest.approx(0.99)
    assert tested[4].adjusted.high == pytest.approx(-2 + 4.604 * 0.7071, abs=2 * TABLE)
    assert verdict == UNDECIDED  # ... but not once five comparisons are accounted for
    assert stats.decide([BARELY_BELOW], EVERY, 0.95)[1] == FAILS  # alone, it decides


def test_some_t_w_holds_only_when_a_bonferroni_interval_is_above_zero():
    assert stats.decide([CLEAR_LOSS, CLEAR_WIN, OVERLAP], SOME, 0.95)[1] == HOLDS
    assert stats.decide([CLEAR_LOSS, BARELY_ABOVE, CLEAR_LOSS], SOME, 0.95)[1] == UNDECIDED
    assert stats.decide([BARELY_ABOVE], SOME, 0.95)[1] == HOLDS


def test_some_t_w_fails_when_every_unadjusted_interval_is_below_zero():
    assert stats.decide([CLEAR_LOSS, BARELY_BELOW, CLEAR_LOSS], SOME, 0.95)[1] == FAILS
    assert stats.decide([CLEAR_LOSS, OVERLAP], SOME, 0.95)[1] == UNDECIDED


def test_a_single_comparison_takes_its_interval_verdict():
    assert stats.decide([CLEAR_WIN], SINGLE, 0.95)[1] == HOLDS
    assert stats.decide([CLEAR_LOSS], SINGLE, 0.95)[1] == FAILS
    assert stats.decide([OVERLAP], SINGLE, 0.95)[1] == UNDECIDED
    with pytest.raises(ValueError, match="one set"):
        stats.decide([CLEAR_WIN, CLEAR_WIN], SINGLE, 0.95)


@pytest.mark.parametrize("rule", [SINGLE, EVERY, SOME])
def test_one_seed_decides_nothing(rule):
    tested, verdict = stats.decide([[0.5]], rule, 0.95)
    assert verdict == UNDECIDED
    assert math.isnan(tested[0].interval.low)


def test_no_comparison_at_all_is_undecided():
    assert stats.decide([], EVERY, 0.95) == ([], UNDECIDED)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown rule"):
        stats.decide([CLEAR_WIN], "most t_w", 0.95)
