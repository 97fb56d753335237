"""Per-run outcomes, per-experiment summary and claim verdicts, computed from the tidy tables.

Conventions shared with `needle.plotting`:
- A run is one (experiment, seed, arm, relax_time); cnn and fcn runs have relax_time NaN.
- A run's *final* value is its value at its last logged epoch; *best* is the max over its logged
  epochs, for a relax run over epochs after the relax (epochs_since_relax > 0): at relax the
  eFCN computes exactly the CNN's function, so that row is the CNN's result, not the eFCN's.
- A run is *diverged* when its `diverged` metric is 1 at its last row. Diverged runs are excluded
  from every mean, sd, best and verdict, and counted separately (they are failures of the
  optimiser at that learning rate, not results).
- Means and sds are over seeds (sd with ddof=1; NaN with one seed).
"""

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from needle.atomic import atomic_path as atomic_output
from needle.atomic import atomic_write_text
from needle.errors import NeedleError

METRICS_COLUMNS = [
    "experiment",
    "dataset",
    "model",
    "seed",
    "arm",
    "relax_time",
    "epoch",
    "epochs_since_relax",
    "metric",
    "layer",
    "value",
]
LANDSCAPE_COLUMNS = ["experiment", "seed", "path", "alpha", "split", "loss", "accuracy"]
PARAMETER_COLUMNS = ["experiment", "dataset", "model", "width", "network", "parameters"]
RUN_KEYS = ["experiment", "seed", "arm", "relax_time"]
RELAX_ARMS = ("efcn", "elcn")

# Claim 3 threshold on the final pooled deviation ||W - P(W)|| / ||W|| over all conv-derived
# layers ("all"): 0.5 means at most half the weight norm lies off the CNN subspace, i.e. the
# eFCN is still mostly the CNN it came from. A judgement call, not a number from the paper.
DEFAULT_DEVIATION_THRESHOLD = 0.5


# ---------------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------------
def _check_columns(frame, required, what):
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise NeedleError(
            f"{what} lacks columns {missing}; expected the contract's columns {required}"
        )
    return frame


def read_tables(paths, required, what):
    """Read and concatenate CSVs (one path or several) and check they have `required` columns."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise NeedleError(
                f"{what} {path} does not exist; run the workflow stage that writes it first"
            )
        try:
            frame = pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a zero-byte file: a table with no rows
            frame = pd.DataFrame(columns=required)
        frames.append(_check_columns(frame, required, f"{what} {path}"))
    if not frames:
        raise NeedleError(f"no {what} given; pass at least one CSV path")
    return pd.concat(frames, ignore_index=True)


def read_metrics(paths):
    """The tidy metrics table(s) as one DataFrame (contract: results/<exp>/metrics.csv)."""
    return normalize_metrics(read_tables(paths, METRICS_COLUMNS, "metrics table"))


def normalize_metrics(metrics):
    """Check columns and give numeric columns numeric dtypes (CSV round trips keep them as text
    when a column is entirely empty)."""
    metrics = _check_columns(metrics, METRICS_COLUMNS, "metrics table")
    numeric = ("seed", "relax_time", "epoch", "epochs_since_relax", "value")
    if all(metrics[column].dtype == "float64" for column in numeric):
        return metrics  # already normalised: figures call this often, skip the copy
    metrics = metrics.copy()
    for column in numeric:
        # float64 even from nullable Int64 (the aggregator's relax_time): NA becomes NaN, which
        # groupby(dropna=False) and the isnan checks below treat as "no relax time".
        metrics[column] = pd.to_numeric(metrics[column], errors="coerce").astype("float64")
    unknown = set(metrics["arm"].dropna()) - {"cnn", "fcn", *RELAX_ARMS}
    if unknown:
        raise NeedleError(
            f"metrics table has unknown arms {sorted(unknown)}; arms are cnn, fcn, efcn, elcn"
        )
    return metrics


def write_text_atomic(path, text):
    atomic_write_text(path, text)


def write_csv_atomic(path, frame):
    with atomic_output(path) as temporary:
        frame.to_csv(temporary, index=False)


# ---------------------------------------------------------------------------------------------
# Per-run outcomes
# ---------------------------------------------------------------------------------------------
def run_outcomes(metrics):
    """One row per run: final/best test accuracy, final projected accuracy, final pooled
    deviation ("all" layer), last epoch, and whether the run diverged."""
    metrics = normalize_metrics(metrics)
    plain = metrics[metrics["layer"].isna()]
    last_epoch = metrics.groupby(RUN_KEYS, dropna=False)["epoch"].max().rename("last_epoch")

    def at_last(frame, name):
        frame = frame.join(last_epoch, on=RUN_KEYS)
        frame = frame[frame["epoch"] == frame["last_epoch"]]
        return frame.groupby(RUN_KEYS, dropna=False)["value"].last().rename(name)

    def metric(name):
        return plain[plain["metric"] == name]

    test = metric("test_accuracy")
    deviation_all = metrics[(metrics["metric"] == "deviation") & (metrics["layer"] == "all")]
    outcome = pd.concat(
        [
            metrics.groupby(RUN_KEYS, dropna=False)[["dataset", "model"]].first(),
            last_epoch,
            at_last(test, "final_test_accuracy"),
            test[~(test["epochs_since_relax"] <= 0)]  # NaN (cnn, fcn) kept
            .groupby(RUN_KEYS, dropna=False)["value"]
            .max()
            .rename("best_test_accuracy"),
            at_last(metric("projected_test_accuracy"), "final_projected_test_accuracy"),
            at_last(deviation_all, "final_deviation_all"),
            at_last(metric("diverged"), "diverged"),
        ],
        axis=1,
    ).reset_index()
    outcome["diverged"] = outcome["diverged"].fillna(0).astype(float) >= 0.5
    return outcome.sort_values(RUN_KEYS, na_position="first", ignore_index=True)


def arm_statistics(outcomes, value="final_test_accuracy"):
    """Mean, sd and count over seeds of `value` per (experiment, arm, relax_time), diverged runs
    excluded; `diverged` counts the excluded runs."""
    keys = ["experiment", "arm", "relax_time"]
    kept = outcomes[~outcomes["diverged"]]
    statistics = kept.groupby(keys, dropna=False)[value].agg(mean="mean", sd="std", n="count")
    diverged = outcomes[outcomes["diverged"]].groupby(keys, dropna=False).size().rename("diverged")
    table = statistics.join(diverged, how="outer").reset_index()
    table["n"] = table["n"].fillna(0).astype(int)
    table["diverged"] = table["diverged"].fillna(0).astype(int)
    return table.sort_values(keys, na_position="first", ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Summary and verdicts
# ---------------------------------------------------------------------------------------------
def _verdict(value):
    """A nullable boolean: NA where the data cannot decide the claim."""
    return pd.NA if value is None else bool(value)


def _summarize_experiment(experiment, outcomes, cnn_max_epoch, deviation_threshold):
    statistics = arm_statistics(outcomes)
    by_arm = {arm: statistics[statistics["arm"] == arm] for arm in ("cnn", "fcn", *RELAX_ARMS)}
    row = {
        "experiment": experiment,
        "dataset": outcomes["dataset"].iloc[0],
        "model": outcomes["model"].iloc[0],
    }
    for arm in ("cnn", "fcn"):
        found = by_arm[arm][by_arm[arm]["n"] > 0]
        row[f"{arm}_mean"] = found["mean"].iloc[0] if len(found) else np.nan
        row[f"{arm}_sd"] = found["sd"].iloc[0] if len(found) else np.nan
        row[f"{arm}_seeds"] = int(found["n"].iloc[0]) if len(found) else 0
    for arm in RELAX_ARMS:
        found = by_arm[arm][by_arm[arm]["n"] > 0]
        best = found.loc[found["mean"].idxmax()] if len(found) else None
        row[f"best_{arm}_tw"] = best["relax_time"] if best is not None else np.nan
        row[f"best_{arm}_mean"] = best["mean"] if best is not None else np.nan
        row[f"best_{arm}_sd"] = best["sd"] if best is not None else np.nan

    # Claim 4: every t_w with results beats the FCN (compared on means over seeds).
    efcn = by_arm["efcn"]
    tested = efcn[efcn["n"] > 0]
    worst = tested.loc[tested["mean"].idxmin()] if len(tested) else None
    decidable = worst is not None and not math.isnan(row["fcn_mean"])
    row["claim4_efcn_beats_fcn_every_tw"] = _verdict(
        worst["mean"] > row["fcn_mean"] if decidable else None
    )
    row["claim4_worst_efcn_tw"] = worst["relax_time"] if worst is not None else np.nan
    row["claim4_worst_efcn_mean"] = worst["mean"] if worst is not None else np.nan
    row["claim4_tw_without_results"] = " ".join(
        f"{t:g}" for t in efcn.loc[efcn["n"] == 0, "relax_time"]
    )

    # Claim 5: some intermediate t_w (0 < t_w < the CNN's last epoch) beats the CNN.
    intermediate = tested[(tested["relax_time"] > 0) & (tested["relax_time"] < cnn_max_epoch)]
    best = intermediate.loc[intermediate["mean"].idxmax()] if len(intermediate) else None
    decidable = best is not None and not math.isnan(row["cnn_mean"])
    row["claim5_intermediate_efcn_beats_cnn"] = _verdict(
        best["mean"] > row["cnn_mean"] if decidable else None
    )
    row["claim5_best_intermediate_tw"] = best["relax_time"] if best is not None else np.nan
    row["claim5_best_intermediate_mean"] = best["mean"] if best is not None else np.nan

    # Claim 3: the largest final pooled deviation over finished eFCN runs stays below threshold.
    finished = outcomes[(outcomes["arm"] == "efcn") & ~outcomes["diverged"]][
        "final_deviation_all"
    ].dropna()
    largest = finished.max() if len(finished) else np.nan
    row["claim3_deviation_small"] = _verdict(
        largest < deviation_threshold if len(finished) else None
    )
    row["claim3_max_final_deviation"] = largest
    row["claim3_threshold"] = deviation_threshold

    row["runs"] = len(outcomes)
    row["diverged_runs"] = int(outcomes["diverged"].sum())
    row["diverged_run_list"] = " ".join(
        f"{r.arm}/tw{r.relax_time:g}/seed{r.seed:g}"
        if not math.isnan(r.relax_time)
        else f"{r.arm}/seed{r.seed:g}"
        for r in outcomes[outcomes["diverged"]].itertuples()
    )
    return row


VERDICT_COLUMNS = [
    "claim3_deviation_small",
    "claim4_efcn_beats_fcn_every_tw",
    "claim5_intermediate_efcn_beats_cnn",
]


def summarize(metrics_df, deviation_threshold=DEFAULT_DEVIATION_THRESHOLD):
    """One row per experiment: CNN, FCN, best eFCN (and its t_w), best eLCN final test accuracy
    (mean, sd over seeds; fractions), claim verdicts with the numbers that decide them, and the
    count of diverged runs (excluded from everything else).

    Verdicts (nullable booleans; NA when the table lacks the arms that decide them):
    - claim3_deviation_small: max over finished eFCN runs of the final deviation of layer "all"
      < deviation_threshold (default 0.5, a fraction of ||W||).
    - claim4_efcn_beats_fcn_every_tw: min over t_w of mean final eFCN accuracy > mean FCN
      accuracy. t_w values whose runs all diverged are listed in claim4_tw_without_results.
    - claim5_intermediate_efcn_beats_cnn: max over 0 < t_w < (CNN's last epoch) of mean final
      eFCN accuracy > mean CNN accuracy.
    """
    outcomes = run_outcomes(metrics_df)
    if outcomes.empty:
        raise NeedleError("metrics table has no rows; run the metrics stage on finished runs first")
    metrics_epochs = normalize_metrics(metrics_df)
    rows = []
    for experiment, group in outcomes.groupby("experiment", sort=True):
        cnn_epochs = metrics_epochs.loc[
            (metrics_epochs["experiment"] == experiment) & (metrics_epochs["arm"] == "cnn"), "epoch"
        ]
        cnn_max_epoch = cnn_epochs.max() if len(cnn_epochs) else np.inf
        rows.append(_summarize_experiment(experiment, group, cnn_max_epoch, deviation_threshold))
    summary = pd.DataFrame(rows)
    for column in VERDICT_COLUMNS:
        summary[column] = summary[column].astype("boolean")
    return summary


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def format_accuracy(mean, sd=np.nan):
    """'74.3 ± 0.8 %' from fractions; '—' where there is no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)) or pd.isna(mean):
        return "—"
    if sd is None or pd.isna(sd):
        return f"{100 * mean:.1f} %"
    return f"{100 * mean:.1f} ± {100 * sd:.1f} %"


def _format_tw(value):
    return "—" if pd.isna(value) else f"{value:g}"


def _format_number(value):
    return "—" if pd.isna(value) else f"{value:.3f}"


def _format_verdict(value):
    return "undecided" if pd.isna(value) else ("**yes**" if value else "**no**")


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(summary):
    """A one-page markdown summary: accuracies per experiment, then one line per claim verdict
    with the numbers that decide it."""
    accuracy_rows = [
        [
            r["experiment"],
            f"{r['dataset']} / {r['model']}",
            format_accuracy(r["cnn_mean"], r["cnn_sd"]),
            format_accuracy(r["fcn_mean"], r["fcn_sd"]),
            f"{format_accuracy(r['best_efcn_mean'], r['best_efcn_sd'])} (t_w={_format_tw(r['best_efcn_tw'])})",
            f"{format_accuracy(r['best_elcn_mean'], r['best_elcn_sd'])} (t_w={_format_tw(r['best_elcn_tw'])})",
            f"{r['diverged_runs']} of {r['runs']}",
        ]
        for _, r in summary.iterrows()
    ]
    claim_rows = []
    for _, r in summary.iterrows():
        claim_rows.append(
            [
                r["experiment"],
                "3: eFCN stays close to the CNN subspace",
                _format_verdict(r["claim3_deviation_small"]),
                f"largest final deviation (all layers) {_format_number(r['claim3_max_final_deviation'])} "
                f"vs threshold {r['claim3_threshold']:g}",
            ]
        )
        untested = (
            f"; t_w without finished runs: {r['claim4_tw_without_results']}"
            if r["claim4_tw_without_results"]
            else ""
        )
        claim_rows.append(
            [
                r["experiment"],
                "4: eFCN beats the standard FCN at every t_w",
                _format_verdict(r["claim4_efcn_beats_fcn_every_tw"]),
                f"worst eFCN {format_accuracy(r['claim4_worst_efcn_mean'])} (t_w={_format_tw(r['claim4_worst_efcn_tw'])}) "
                f"vs FCN {format_accuracy(r['fcn_mean'])}{untested}",
            ]
        )
        claim_rows.append(
            [
                r["experiment"],
                "5: some intermediate t_w eFCN beats the CNN",
                _format_verdict(r["claim5_intermediate_efcn_beats_cnn"]),
                f"best intermediate eFCN {format_accuracy(r['claim5_best_intermediate_mean'])} "
                f"(t_w={_format_tw(r['claim5_best_intermediate_tw'])}) vs CNN {format_accuracy(r['cnn_mean'])}",
            ]
        )
    diverged = [
        f"- {r['experiment']}: {r['diverged_run_list']}"
        for _, r in summary.iterrows()
        if r["diverged_runs"]
    ]
    parts = [
        "# needle: summary",
        "",
        "Final test accuracy, mean ± sd over seeds. Best eFCN/eLCN: the relax time t_w with the "
        "highest mean. Diverged runs (diverged = 1 at their last logged epoch) are excluded from "
        "every number and verdict and only counted here.",
        "",
        markdown_table(
            [
                "experiment",
                "data / model",
                "CNN",
                "standard FCN",
                "best eFCN",
                "best eLCN",
                "diverged runs",
            ],
            accuracy_rows,
        ),
        "",
        "## Claims (verdicts computed from the numbers)",
        "",
        markdown_table(["experiment", "claim", "holds", "deciding numbers"], claim_rows),
        "",
        "Claim 5 counts only intermediate relax times, 0 < t_w < the CNN's last epoch. Claim 3's "
        "deviation is ‖W − P(W)‖ / ‖W‖ pooled over all conv-derived layers at the run's last epoch.",
    ]
    if diverged:
        parts += ["", "Diverged runs:", "", *diverged]
    return "\n".join(parts) + "\n"


def write_summary(
    metrics_df, csv_path, markdown_path, deviation_threshold=DEFAULT_DEVIATION_THRESHOLD
):
    """Compute `summarize` and write it as CSV and markdown (atomically); return the DataFrame."""
    summary = summarize(metrics_df, deviation_threshold=deviation_threshold)
    write_csv_atomic(csv_path, summary)
    write_text_atomic(markdown_path, summary_markdown(summary))
    return summary
