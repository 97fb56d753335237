"""An experiment's verdicts: each claim decided on paired per-seed differences, each arm's numbers.

Inputs are validated tables (needle.tables): the resolved settings, runs.csv (one row per run, its
readout computed), embedding.csv and, when a landscape was configured, landscape.csv. Outputs:
- the claims table (summary.csv, names.SUMMARY_COLUMNS): one row per (claim, comparison, relax
  time) with n, the paired mean difference, its interval, its Bonferroni-adjusted interval, the
  row's verdict and the claim's verdict (holds / fails / undecided / not tested);
- the arms table (arms.csv, names.ARM_SUMMARY_COLUMNS): each arm and relax time's readout test and
  validation accuracy over the runs that did not diverge, and the headline relax time of each
  relax arm, selected on validation accuracy only.

Rules (needle.stats): diverged runs stay out of every mean but enter every paired difference at
the measure's worst value (chance accuracy, deviation 1.0); a configured run that is absent is
listed, never silently dropped; a claim whose arms or relax times are not configured is "not
tested". The test set selects nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from needle import names, stats
from needle.errors import NeedleError

# Claim 1: the embedding computes the CNN's function up to float64 round-off. Differences are
# relative to the logits' scale, max(1, max |logit|), so large logits do not fail the check.
EXACTNESS_TOLERANCE = 1e-9
EXACTNESS_RULE = "every embedding within tolerance"
WORST_DEVIATION = 1.0  # ||W - P(W)|| / ||W|| cannot exceed it


@dataclass(frozen=True)
class PairedClaim:
    claim: str
    statement: str
    first: str  # the claim is "first - second > 0" on ``measure``
    second: str
    measure: str  # a runs.csv column
    rule: str  # stats.SINGLE, stats.EVERY or stats.SOME
    relax_times: str  # "none" (no relax arm), "all" configured, or "intermediate" (0 < t_w < CNN's)


PAIRED_CLAIMS = (
    PairedClaim(
        "2",
        "The CNN beats the standard FCN",
        names.CNN,
        names.FCN,
        "test_accuracy",
        stats.SINGLE,
        "none",
    ),
    PairedClaim(
        "3",
        "The eFCN stays closer to the CNN subspace than the standard FCN, at every t_w",
        names.FCN,
        names.EFCN,
        "deviation_max_layer",
        stats.EVERY,
        "all",
    ),
    PairedClaim(
        "4",
        "The eFCN beats the standard FCN at every t_w",
        names.EFCN,
        names.FCN,
        "test_accuracy",
        stats.EVERY,
        "all",
    ),
    PairedClaim(
        "5",
        "The eFCN beats the CNN given the same extra training, at some intermediate t_w",
        names.EFCN,
        names.CNN_CONTINUED,
        "test_accuracy",
        stats.SOME,
        "intermediate",
    ),
    PairedClaim(
        "elcn_vs_efcn",
        "The eLCN (locality kept, sharing released) beats the eFCN at every t_w",
        names.ELCN,
        names.EFCN,
        "test_accuracy",
        stats.EVERY,
        "all",
    ),
)
EXACTNESS_STATEMENT = "The embedding computes exactly the CNN's function"
BARRIER_STATEMENT = (
    "A train-loss barrier separates the eFCN's solution from the standard FCN's, at every t_w"
)
MEASURES = {
    "test_accuracy": "readout test accuracy",
    "deviation_max_layer": "deviation of the most deviating layer, final epoch",
}


class Summary(NamedTuple):
    claims: pd.DataFrame  # summary.csv
    arms: pd.DataFrame  # arms.csv


def summarize(
    settings: dict, runs: pd.DataFrame, embedding: pd.DataFrame, landscape: pd.DataFrame | None
) -> Summary:
    """Both tables of one experiment, from validated inputs (needle.tables.read_*)."""
    index = RunIndex(settings, runs)
    for table, what in ((embedding, "embedding.csv"), (landscape, "landscape.csv")):
        _check_experiment(settings, table, what)
    rows = _exactness_rows(settings, embedding)
    for claim in PAIRED_CLAIMS:
        rows += _paired_rows(claim, settings, index)
    rows += _barrier_rows(settings, landscape)
    claims = pd.DataFrame(rows, columns=list(names.SUMMARY_COLUMNS))
    for column in ("relax_time", "n", "n_diverged", "n_missing"):  # empty when not tested
        claims[column] = claims[column].astype("Int64")
    return Summary(claims, arms_table(settings, index))


def _check_experiment(settings, table, what) -> None:
    if table is None or table.empty:
        return
    others = sorted(set(table["experiment"]) - {settings["experiment"]})
    if others:
        raise NeedleError(
            f"{what} holds experiment {others[0]!r} but settings.json is for "
            f"{settings['experiment']!r}; pass the tables of one experiment"
        )


# -- the runs, indexed by (arm, relax time) --------------------------------------------------------
def configured_runs(settings: dict) -> list[tuple[str, int | None]]:
    """Every configured (arm, relax time): cnn and fcn without one, then each relax arm's."""
    relax = settings["relax"]
    keys = [(names.CNN, None), (names.FCN, None)]
    return keys + [
        (arm, time)
        for arm in names.RELAX_ARMS
        if arm in relax["arms"]
        for time in sorted(relax["relax_times"])
    ]


class RunIndex:
    """runs.csv checked against the settings and looked up by (arm, relax time) and seed."""

    def __init__(self, settings: dict, runs: pd.DataFrame):
        self.seeds = sorted(settings["seeds"])
        self.rows: dict[tuple[str, int | None], dict[int, pd.Series]] = {}
        _check_experiment(settings, runs, "runs.csv")
        readout = settings["comparison"]["readout_epochs"]
        other = runs.loc[runs["readout_epochs"] != readout, "readout_epochs"]
        if len(other):
            raise NeedleError(
                f"runs.csv was read out over {int(other.iloc[0])} epochs but the settings say "
                f"comparison.readout_epochs = {readout}; rerun aggregate_metrics"
            )
        configured = set(configured_runs(settings))
        for _, row in runs.iterrows():
            relax_time = None if pd.isna(row["relax_time"]) else int(row["relax_time"])
            key = (row["arm"], relax_time)
            if key not in configured or int(row["seed"]) not in self.seeds:
                raise NeedleError(
                    "runs.csv has a run the settings do not configure "
                    f"({describe_run(*key, int(row['seed']))}); "
                    "rerun aggregate_metrics for this experiment's settings"
                )
            self.rows.setdefault(key, {})[int(row["seed"])] = row

    def outcomes(self, arm: str, relax_time, measure: str) -> dict[int, stats.Outcome]:
        return {
            seed: stats.Outcome(float(row[measure]), bool(row["diverged"]))
            for seed, row in self.rows.get((arm, relax_time), {}).items()
        }

    def healthy(self, arm: str, relax_time, column: str) -> list[float]:
        """``column`` of the runs that did not diverge (the values every mean is taken over)."""
        rows = self.rows.get((arm, relax_time), {}).values()
        return [float(row[column]) for row in rows if not row["diverged"]]

    def missing(self, arm: str, relax_time) -> list[str]:
        present = self.rows.get((arm, relax_time), {})
        return [describe_run(arm, relax_time, seed) for seed in self.seeds if seed not in present]


def describe_run(arm: str, relax_time, seed: int) -> str:
    at = "" if relax_time is None else f" t_w={relax_time}"
    return f"{arm}{at} seed {seed}"


# -- claims 2-5 and eLCN vs eFCN: paired differences -----------------------------------------------
def not_tested_reason(claim: PairedClaim, settings: dict) -> str:
    """Why ``claim`` cannot be tested with these settings ("" when it can)."""
    arms = {names.CNN, names.FCN, *settings["relax"]["arms"]}
    absent = [names.ARM_LABELS[arm] for arm in (claim.first, claim.second) if arm not in arms]
    if absent:
        return f"no {' or '.join(absent)} arm configured (relax.arms)"
    if not claim_relax_times(claim, settings):
        return (
            f"no intermediate t_w configured (0 < t_w < cnn.epochs = {settings['cnn']['epochs']})"
        )
    return ""


def claim_relax_times(claim: PairedClaim, settings: dict) -> list[int | None]:
    if claim.relax_times == "none":
        return [None]
    times = sorted(settings["relax"]["relax_times"])
    if claim.relax_times == "intermediate":
        return [time for time in times if 0 < time < settings["cnn"]["epochs"]]
    return times


def _not_tested(claim: str, statement: str, reason: str) -> list[dict]:
    return [
        {
            "claim": claim,
            "statement": statement,
            "verdict": stats.NOT_TESTED,
            "claim_verdict": stats.NOT_TESTED,
            "note": reason,
        }
    ]


def _paired_rows(claim: PairedClaim, settings: dict, index: RunIndex) -> list[dict]:
    reason = not_tested_reason(claim, settings)
    if reason:
        return _with_experiment(settings, _not_tested(claim.claim, claim.statement, reason))
    confidence = settings["comparison"]["confidence"]
    chance = 1 / names.DATASETS[settings["dataset"]].num_classes
    worst = WORST_DEVIATION if claim.measure.startswith("deviation") else chance
    sides = []
    for time in claim_relax_times(claim, settings):
        first = (claim.first, time if claim.first in names.RELAX_ARMS else None)
        second = (claim.second, time if claim.second in names.RELAX_ARMS else None)
        sides.append((time, first, second))
    pairs = [
        stats.paired_differences(
            index.outcomes(*first, claim.measure),
            index.outcomes(*second, claim.measure),
            diverged_value=worst,
        )
        for _, first, second in sides
    ]
    tested, claim_verdict = stats.decide(
        [pair.differences for pair in pairs], claim.rule, confidence
    )
    note = ""
    if claim.relax_times == "intermediate":
        note = f"intermediate t_w only: 0 < t_w < {settings['cnn']['epochs']} (the CNN's epochs)"
    rows = []
    for (time, first, second), pair, test in zip(sides, pairs, tested):
        missing = index.missing(*first) + index.missing(*second)
        row = {
            "claim": claim.claim,
            "statement": claim.statement,
            "comparison": f"{claim.first} - {claim.second}",
            "relax_time": time,
            "measure": MEASURES[claim.measure],
            "n": test.interval.n,
            "n_diverged": pair.n_diverged,
            "n_missing": len(missing),
            "missing_runs": "; ".join(missing),
            "first_mean": _mean(index.healthy(*first, claim.measure)),
            "second_mean": _mean(index.healthy(*second, claim.measure)),
            **_interval_columns(test, confidence),
            "claim_rule": claim.rule,
            "claim_verdict": claim_verdict,
            "note": note,
        }
        if claim.claim == "3":  # the eFCN's pooled numbers beside its most deviating layer
            row["pooled_deviation"] = _mean(index.healthy(*second, "deviation"))
            row["displacement_offsubspace"] = _mean(
                index.healthy(*second, "displacement_offsubspace")
            )
        rows.append(row)
    return _with_experiment(settings, rows)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _interval_columns(test: stats.Tested, confidence: float) -> dict:
    return {
        "mean_difference": test.interval.mean,
        "ci_low": test.interval.low,
        "ci_high": test.interval.high,
        "confidence": confidence,
        "verdict": test.verdict,
        "adjusted_confidence": test.adjusted_confidence,
        "adjusted_ci_low": test.adjusted.low,
        "adjusted_ci_high": test.adjusted.high,
    }


def _with_experiment(settings: dict, rows: list[dict]) -> list[dict]:
    return [{"experiment": settings["experiment"], **row} for row in rows]


# -- claim 1: exactness of every embedding ---------------------------------------------------------
def _exactness_rows(settings: dict, embedding: pd.DataFrame) -> list[dict]:
    arms = [arm for arm in names.EMBEDDED_ARMS if arm in settings["relax"]["arms"]]
    if not arms:
        return _with_experiment(
            settings, _not_tested("1", EXACTNESS_STATEMENT, "no embedded arm configured")
        )
    times = sorted(settings["relax"]["relax_times"])
    rows = []
    for arm in arms:
        records = embedding[embedding["arm"] == arm]
        present = set(zip(records["seed"].astype(int), records["relax_time"].astype(int)))
        missing = [
            f"{arm} t_w={time} seed {seed} (embedding record)"
            for time in times
            for seed in sorted(settings["seeds"])
            if (seed, time) not in present
        ]
        scale = np.maximum(1.0, records["max_abs_logit"].to_numpy(dtype=float))
        # A checkpoint whose own logits are not finite (a diverged CNN) has nothing to match.
        checked = np.isfinite(scale)
        fp64 = np.nan_to_num(
            records["max_abs_logit_difference_fp64"].to_numpy(dtype=float) / scale, nan=np.inf
        )[checked]
        fp32 = np.nan_to_num(
            records["max_abs_logit_difference_fp32"].to_numpy(dtype=float) / scale, nan=np.inf
        )[checked]
        if (fp64 > EXACTNESS_TOLERANCE).any():
            verdict = stats.FAILS
        elif missing or not len(fp64):
            verdict = stats.UNDECIDED
        else:
            verdict = stats.HOLDS
        rows.append(
            {
                "claim": "1",
                "statement": EXACTNESS_STATEMENT,
                "comparison": f"{arm} logits vs cnn logits",
                "measure": "max |logit difference| / max(1, max |logit|) on held-out images",
                "n": int(checked.sum()),
                "n_diverged": int((~checked).sum()),
                "n_missing": len(missing),
                "missing_runs": "; ".join(missing),
                "verdict": verdict,
                "claim_rule": EXACTNESS_RULE,
                "exactness_fp64": float(fp64.max()) if len(fp64) else math.nan,
                "exactness_fp32": float(fp32.max()) if len(fp32) else math.nan,
                "exactness_tolerance": EXACTNESS_TOLERANCE,
                "note": "decided in float64; float32 reported",
            }
        )
    verdicts = {row["verdict"] for row in rows}
    claim_verdict = (
        stats.FAILS
        if stats.FAILS in verdicts
        else stats.HOLDS
        if verdicts == {stats.HOLDS}
        else stats.UNDECIDED
    )
    for row in rows:
        row["claim_verdict"] = claim_verdict
    return _with_experiment(settings, rows)


# -- claim 6: a train-loss barrier on the path from the eFCN to the standard FCN -------------------
def _barrier_rows(settings: dict, landscape: pd.DataFrame | None) -> list[dict]:
    times = sorted(settings["landscape"]["relax_times"])
    if not times:
        reason = "no landscape configured (landscape.relax_times is empty)"
        return _with_experiment(settings, _not_tested("6", BARRIER_STATEMENT, reason))
    if landscape is None:
        landscape = pd.DataFrame(columns=list(names.LANDSCAPE_COLUMNS))
    paths = landscape[(landscape["path_kind"] == "final_to_fcn") & (landscape["split"] == "train")]
    confidence = settings["comparison"]["confidence"]
    barriers, diverged, missing = [], [], []
    for time in times:
        values, broken, absent = [], 0, []
        for seed in sorted(settings["seeds"]):
            path = paths[(paths["seed"] == seed) & (paths["start_relax_time"] == time)]
            if path.empty:
                absent.append(f"landscape efcn t_w={time} -> fcn seed {seed}")
            elif path["diverged"].any():  # no basin to show: the least favourable barrier, none
                values.append(0.0)
                broken += 1
            else:
                path = path.sort_values("alpha")
                ends = max(path["loss"].iloc[0], path["loss"].iloc[-1])
                values.append(float(path["loss"].max() - ends))
        barriers.append(values)
        diverged.append(broken)
        missing.append(absent)
    tested, claim_verdict = stats.decide(barriers, stats.EVERY, confidence)
    rows = [
        {
            "claim": "6",
            "statement": BARRIER_STATEMENT,
            "comparison": "efcn final -> fcn final",
            "relax_time": time,
            "measure": "train loss: max along the path - the larger end",
            "n": test.interval.n,
            "n_diverged": broken,
            "n_missing": len(absent),
            "missing_runs": "; ".join(absent),
            **_interval_columns(test, confidence),
            "claim_rule": stats.EVERY,
            "claim_verdict": claim_verdict,
            "note": "a barrier is never negative: this claim holds or stays undecided",
        }
        for time, test, broken, absent in zip(times, tested, diverged, missing)
    ]
    return _with_experiment(settings, rows)


# -- arms.csv --------------------------------------------------------------------------------------
def arms_table(settings: dict, index: RunIndex) -> pd.DataFrame:
    """Readout accuracies per (arm, relax time) over the runs that did not diverge, and the
    headline relax time of each relax arm: the highest mean validation accuracy, a diverged run
    counted at chance. No validation split: nothing is selected."""
    confidence = settings["comparison"]["confidence"]
    chance = 1 / names.DATASETS[settings["dataset"]].num_classes
    rows, scores = [], {}
    for arm, time in configured_runs(settings):
        test = stats.t_interval(index.healthy(arm, time, "test_accuracy"), confidence)
        validation = stats.t_interval(index.healthy(arm, time, "validation_accuracy"), confidence)
        outcomes = index.outcomes(arm, time, "validation_accuracy")
        rows.append(
            {
                "experiment": settings["experiment"],
                "arm": arm,
                "relax_time": time,
                "n": len(index.healthy(arm, time, "test_accuracy")),
                "n_diverged": sum(outcome.diverged for outcome in outcomes.values()),
                "n_missing": len(index.missing(arm, time)),
                "test_accuracy": test.mean,
                "test_accuracy_low": test.low,
                "test_accuracy_high": test.high,
                "validation_accuracy": validation.mean,
                "validation_accuracy_low": validation.low,
                "validation_accuracy_high": validation.high,
                "confidence": confidence,
                "selected_on_validation": False,
            }
        )
        if arm in names.RELAX_ARMS and outcomes and settings["validation_size"] > 0:
            values = [chance if o.diverged else o.value for o in outcomes.values()]
            if all(math.isfinite(value) for value in values):
                scores.setdefault(arm, []).append((float(np.mean(values)), -time, len(rows) - 1))
    for candidates in scores.values():
        rows[max(candidates)[2]]["selected_on_validation"] = True  # ties: the earliest t_w
    table = pd.DataFrame(rows, columns=list(names.ARM_SUMMARY_COLUMNS))
    table["relax_time"] = table["relax_time"].astype("Int64")
    return table
