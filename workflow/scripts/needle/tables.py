"""Read and validate every table a later stage reads; write the ones a stage writes row by row;
build an experiment's tables from its runs.

A table that breaks the contract is refused with one line naming the file and the problem, never a
traceback and never a run that silently drops out of the results. Checked on read: the columns,
numbers where numbers belong, ranges (accuracies in [0, 1], losses and distances >= 0), one row
per epoch with consecutive epochs, and NaN or infinity only where the contract allows them: the
validation columns of an experiment without a validation split, and the rows of a diverged run.

Built here: the tidy table (names.TIDY_COLUMNS), the per-run outcomes of runs.csv
(names.OUTCOME_COLUMNS, with the readout rule) and the concatenated landscape and embedding tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from needle import names, stats
from needle.atomic import atomic_write_text
from needle.errors import NeedleError
from needle.schedule import checkpoint_epochs
from needle.schema import experiment_default

RERUN_JOB = "delete it and rerun snakemake to write it again"
RERUN_AGGREGATE = "rerun the aggregate_metrics rule (snakemake --forcerun aggregate_metrics)"
# Fractions of a norm are <= 1 exactly; float32 arithmetic may overshoot by a few ulps.
FRACTION_SLACK = 1e-6


class _Table:
    """One file being read: every problem becomes a NeedleError naming the file and the fix."""

    def __init__(self, path, what: str, fix: str):
        self.path, self.what, self.fix = Path(path), what, fix

    def fail(self, problem: str) -> NeedleError:
        return NeedleError(f"{self.what} {self.path}: {problem}; {self.fix}")

    def read(
        self, columns: Sequence[str], *, text: Iterable[str] = (), allow_no_rows: bool = False
    ) -> pd.DataFrame:
        """The CSV with exactly ``columns`` (any order; ``text`` ones read as text), or one line
        saying why not."""
        if not self.path.is_file():
            raise self.fail("does not exist")
        try:
            frame = pd.read_csv(self.path, dtype=dict.fromkeys(text, str))
        except pd.errors.EmptyDataError:
            raise self.fail("is empty (no header, no rows)") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            reason = str(error).strip().splitlines()[0]
            raise self.fail(f"is not a well-formed CSV ({reason})") from None
        self.require_columns(frame, columns)
        if frame.empty and not allow_no_rows:
            raise self.fail("has a header but no rows")
        return frame

    def read_json(self):
        """The JSON document, or one line saying why not."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self.fail("does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise self.fail(f"is not JSON ({error})") from None

    def require_columns(self, frame: pd.DataFrame, columns: Sequence[str]) -> None:
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise self.fail(f"lacks column(s) {', '.join(missing)}")
        unexpected = [column for column in frame.columns if column not in columns]
        if unexpected:
            raise self.fail(f"has unexpected column(s) {', '.join(map(str, unexpected))}")

    def numbers(self, frame: pd.DataFrame, columns: Iterable[str]) -> None:
        """Convert ``columns`` to float in place; a value that is not a number is refused."""
        for column in columns:
            raw = frame[column]
            if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
                frame[column] = raw.astype(float)  # the CSV reader parsed every value as a number
                continue
            numbers = pd.to_numeric(raw.astype(object), errors="coerce")
            bad = (numbers.isna() & raw.notna()).to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise self.fail(
                    f"column {column} has a non-numeric value {raw.iloc[row]!r}{_at(row)}"
                )
            frame[column] = numbers.astype(float)

    def integers(self, frame: pd.DataFrame, column: str, *, minimum: int, empty_ok=False) -> None:
        """Whole numbers >= ``minimum`` (int64), or also empty where ``empty_ok`` (Int64)."""
        values = frame[column].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(values) & (values == np.round(values)) & (values >= minimum)
        if empty_ok:
            ok |= np.isnan(values)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            needed = f"whole numbers >= {minimum}" + (" or empty" if empty_ok else "")
            raise self.fail(f"column {column} holds {_show(values[row])}{_at(row)}: needs {needed}")
        frame[column] = frame[column].astype("Int64" if empty_ok else "int64")

    def within(self, frame: pd.DataFrame, columns: Sequence[str], low: float, high: float) -> None:
        """Finite values of ``columns`` lie in [low, high]."""
        if not columns:
            return
        values = frame[list(columns)].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            bad = np.isfinite(values) & ((values < low) | (values > high))
        if bad.any():
            row, column = np.argwhere(bad)[0]
            span = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
            raise self.fail(
                f"column {columns[column]} holds {_show(values[row, column])}{_at(row)}: "
                f"must be {span}"
            )

    def finite(self, frame, columns: Sequence[str], *, where, reason: str) -> None:
        """Every value of ``columns`` on the rows ``where`` selects is a finite number."""
        if not columns:
            return
        values = frame[list(columns)].to_numpy(dtype=float)
        bad = ~np.isfinite(values) & np.asarray(where, dtype=bool)[:, None]
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise self.fail(f"column {columns[column]} is {values[row, column]}{_at(row)} {reason}")

    def one_of(self, frame, column, allowed) -> None:
        bad = ~frame[column].isin(allowed)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise self.fail(
                f"column {column} holds {_show(frame[column].iloc[row])}{_at(row)}; "
                f"expected one of {', '.join(map(str, allowed))}"
            )


def _at(row: int) -> str:
    return f" on line {row + 2}"  # line 1 is the header


def _show(value) -> str:
    """A cell as the file shows it: 7 rather than np.float64(7.0), text quoted."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return np.format_float_positional(float(value), trim="-")
    return repr(str(value))


# -- per-run metrics (one CSV per run, one row per epoch) ------------------------------------------
class Run(NamedTuple):
    """Which run a per-run table belongs to: relax_time is None for cnn and fcn."""

    seed: int
    arm: str
    relax_time: int | None


def _conv_layers(columns: Iterable[str]) -> tuple[str, ...]:
    """The conv-derived layers named by the "<metric>/<layer>" columns (the pooled one left out)."""
    layers = {column.split("/", 1)[1] for column in columns if "/" in column}
    return tuple(sorted(layers - {names.POOLED_LAYER}))


def read_run_metrics(path, run: Run) -> pd.DataFrame:
    """One run's per-epoch CSV, validated against the contract for ``run``'s arm."""
    table = _Table(path, f"{run.arm} metrics", RERUN_JOB)
    layers = _conv_layers(_header(table)) if run.arm in names.DENSE_ARMS else ()
    frame = table.read(names.run_columns(layers))
    table.numbers(frame, frame.columns)
    for column in names.EPOCH_COLUMNS:
        table.integers(frame, column, minimum=0)
    start = run.relax_time if run.arm in names.RELAX_ARMS else 0
    epochs = frame["epoch"].to_numpy(dtype=int)
    if epochs[0] != start:
        raise table.fail(f"starts at epoch {epochs[0]}, expected {start} (the run's start)")
    steps = np.diff(epochs)
    if (steps != 1).any():
        row = int(np.flatnonzero(steps != 1)[0]) + 1
        if steps[row - 1] == 0:
            problem = f"repeats epoch {epochs[row]}"
        elif steps[row - 1] < 0:
            problem = f"goes back to epoch {epochs[row]}"
        else:
            problem = f"jumps from epoch {epochs[row - 1]} to {epochs[row]}"
        raise table.fail(f"{problem}{_at(row)}: one row per epoch, in order, is needed")
    since = frame["epochs_since_relax"].to_numpy(dtype=int)
    if (since != epochs - start).any():
        row = int(np.flatnonzero(since != epochs - start)[0])
        raise table.fail(
            f"epochs_since_relax is {since[row]}{_at(row)}, expected {epochs[row] - start}"
        )
    _check_divergence_codes(table, frame)
    _check_run_values(table, frame)
    return frame


def _header(table: _Table) -> list[str]:
    try:
        return list(pd.read_csv(table.path, nrows=0).columns)
    except (OSError, ValueError, UnicodeDecodeError):
        return []  # table.read reports the file's problem


def _check_divergence_codes(table: _Table, frame: pd.DataFrame) -> None:
    table.one_of(frame, names.DIVERGED, [0, *names.DIVERGENCE_REASONS])
    codes = frame[names.DIVERGED].to_numpy(dtype=int)
    if (np.diff((codes != 0).astype(int)) < 0).any():
        row = int(np.flatnonzero(np.diff((codes != 0).astype(int)) < 0)[0]) + 1
        raise table.fail(f"a diverged run returns to diverged = 0{_at(row)}")
    frame[names.DIVERGED] = codes


TEST_COLUMNS = ("test_loss", "test_accuracy", "projected_test_loss", "projected_test_accuracy")


def _check_run_values(table: _Table, frame: pd.DataFrame) -> None:
    """Ranges everywhere; finite values everywhere a run has not diverged, except an absent
    validation split (a validation column that is empty on every row) and the test columns of
    epochs that do not evaluate the test set (comparison.test_every_epoch off: only the start and
    the readout epochs do; the readout checks that its epochs have them)."""
    healthy = (frame[names.DIVERGED] == 0).to_numpy()
    validation = [column for column in frame.columns if column.startswith("validation_")]
    no_split = frame[validation].isna().all().all()
    tested = [column for column in frame.columns if column in TEST_COLUMNS]
    checked = [
        column
        for column in frame.columns
        if not (no_split and column in validation) and column not in tested
    ]
    table.finite(frame, checked, where=healthy, reason="though the run has not diverged")
    ends = np.zeros(len(frame), dtype=bool)
    ends[[0, -1]] = True  # the start and the last epoch always evaluate the test set
    table.finite(frame, tested, where=healthy & ends, reason="though the run has not diverged")
    metric = {column: column.split("/", 1)[0] for column in frame.columns}
    table.within(frame, [c for c in frame.columns if c.endswith("accuracy")], 0.0, 1.0)
    table.within(
        frame,
        [c for c in frame.columns if c.endswith("loss") or metric[c] == "distance_from_start"],
        0.0,
        math.inf,
    )
    layered = [c for c in frame.columns if metric[c] in names.LAYER_METRICS]
    table.within(frame, layered, 0.0, 1.0 + FRACTION_SLACK)


# -- writing the rows of a stage ------------------------------------------------------------------
def write_rows(path, columns, rows: list[dict]) -> None:
    """A table a stage writes row by row (a run's metrics, an embedding record, landscape rows):
    a CSV with exactly ``columns``, written atomically; NaN and missing values are empty cells,
    floats are written in full (shortest round-trip repr)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: "" if isinstance(value, float) and math.isnan(value) else value
                for key, value in row.items()
            }
        )
    atomic_write_text(path, buffer.getvalue())


# -- the tidy table --------------------------------------------------------------------------------
def tidy_table(runs: Sequence[tuple[Run, pd.DataFrame]], *, experiment, dataset, model):
    """Every run's rows, long: one per (run, epoch, metric[, layer]), "deviation/conv1" becoming
    metric deviation, layer conv1; sorted by seed, arm (names.ARMS), relax time, epoch, metric."""
    by_columns: dict[tuple, list[pd.DataFrame]] = {}  # one melt per column set: dense or not
    for run, frame in runs:
        identity = {"seed": run.seed, "arm": run.arm, "relax_time": run.relax_time}
        by_columns.setdefault(tuple(frame.columns), []).append(frame.assign(**identity))
    keys = ["seed", "arm", "relax_time", *names.EPOCH_COLUMNS]
    long = pd.concat(
        [
            pd.concat(frames, ignore_index=True).melt(
                id_vars=keys, var_name="column", value_name="value"
            )
            for frames in by_columns.values()
        ],
        ignore_index=True,
    )
    metric_layer = long["column"].str.split("/", n=1, expand=True).reindex(columns=[0, 1])
    table = long.assign(
        experiment=experiment,
        dataset=dataset,
        model=model,
        relax_time=long["relax_time"].astype("Int64"),
        arm=pd.Categorical(long["arm"], categories=names.ARMS, ordered=True),
        metric=metric_layer[0],
        layer=metric_layer[1],
        value=long["value"].astype(float),
    )[list(names.TIDY_COLUMNS)]
    table = table.sort_values(
        ["seed", "arm", "relax_time", "epoch", "metric", "layer"],
        kind="stable",
        na_position="first",
    )
    return table.assign(arm=table["arm"].astype(str)).reset_index(drop=True)


TIDY_TEXT = ("experiment", "dataset", "model", "arm", "metric", "layer")


def read_tidy(path) -> pd.DataFrame:
    """results/<e>/metrics.csv: numbers numeric, arms known; relax_time, layer NaN where empty."""
    table = _Table(path, "tidy metrics table", RERUN_AGGREGATE)
    frame = table.read(names.TIDY_COLUMNS, text=TIDY_TEXT)
    table.numbers(frame, ["seed", "relax_time", "epoch", "epochs_since_relax", "value"])
    table.integers(frame, "seed", minimum=0)
    table.integers(frame, "epoch", minimum=0)
    table.integers(frame, "relax_time", minimum=0, empty_ok=True)
    table.one_of(frame, "arm", names.ARMS)
    return frame


# -- per-run outcomes: runs.csv --------------------------------------------------------------------
def run_outcome(
    frame: pd.DataFrame,
    run: Run,
    *,
    experiment: str,
    dataset: str,
    model: str,
    readout_epochs: int,
) -> dict:
    """The row of runs.csv for one validated per-run table.

    Readout: the mean over the run's last ``readout_epochs`` logged epochs after its start
    (epochs_since_relax >= 1: a relax run's start row is the CNN's own), fewer if it has fewer.
    """
    readout = frame[frame["epochs_since_relax"] >= 1].tail(readout_epochs)
    first, last = frame.iloc[0], frame.iloc[-1]
    code = int(last[names.DIVERGED])
    if code == 0 and readout["test_accuracy"].isna().any():
        raise NeedleError(
            f"the {run.arm} run of seed {run.seed} has no test accuracy at some of its last "
            f"{readout_epochs} epochs: it was trained with fewer readout epochs; rerun it with "
            "the experiment's comparison.readout_epochs"
        )
    dense = run.arm in names.DENSE_ARMS

    def mean(column):
        return float(readout[column].mean()) if len(readout) else math.nan

    row = {
        "experiment": experiment,
        "dataset": dataset,
        "model": model,
        "seed": run.seed,
        "arm": run.arm,
        "relax_time": run.relax_time,
        "num_classes": names.DATASETS[dataset].num_classes,
        "last_epoch": int(last["epoch"]),
        "diverged": int(code != 0),
        "divergence_reason": names.DIVERGENCE_REASONS.get(code, ""),
        "readout_epochs": readout_epochs,
        "test_accuracy": mean("test_accuracy"),
        "test_loss": mean("test_loss"),
        "validation_accuracy": mean("validation_accuracy"),
        "final_test_accuracy": float(last["test_accuracy"]),
        "start_test_accuracy": float(first["test_accuracy"]),
        "projected_test_accuracy": mean("projected_test_accuracy") if dense else math.nan,
    }
    for metric in names.LAYER_METRICS:
        row[metric] = float(last[f"{metric}/{names.POOLED_LAYER}"]) if dense else math.nan
    per_layer = {
        column.split("/", 1)[1]: float(last[column])
        for column in frame.columns
        if dense
        and column.startswith("deviation/")
        and not column.endswith(f"/{names.POOLED_LAYER}")
    }
    finite = {layer: value for layer, value in per_layer.items() if math.isfinite(value)}
    largest = max(finite, key=finite.get) if finite else ""
    row["deviation_max_layer"] = finite[largest] if finite else math.nan
    row["deviation_max_layer_name"] = largest
    return row


def runs_table(outcomes: Iterable[dict]) -> pd.DataFrame:
    """runs.csv: one row per run, ordered by arm (names.ARMS), relax time and seed."""
    table = pd.DataFrame(list(outcomes), columns=list(names.OUTCOME_COLUMNS))
    table["relax_time"] = table["relax_time"].astype("Int64")
    order = table["arm"].map({arm: index for index, arm in enumerate(names.ARMS)})
    table = table.assign(_order=order).sort_values(
        ["_order", "relax_time", "seed"], kind="stable", na_position="first"
    )
    return table.drop(columns="_order").reset_index(drop=True)


OUTCOME_TEXT = (
    "experiment",
    "dataset",
    "model",
    "arm",
    "divergence_reason",
    "deviation_max_layer_name",
)


def read_runs(path) -> pd.DataFrame:
    """runs.csv, validated: one row per (seed, arm, relax time), a readout for every healthy run."""
    table = _Table(path, "runs table", RERUN_AGGREGATE)
    frame = table.read(names.OUTCOME_COLUMNS, text=OUTCOME_TEXT)
    table.numbers(frame, [column for column in names.OUTCOME_COLUMNS if column not in OUTCOME_TEXT])
    for column in ("seed", "last_epoch", "diverged", "readout_epochs"):
        table.integers(frame, column, minimum=0)
    table.integers(frame, "num_classes", minimum=2)
    table.one_of(frame, "arm", names.ARMS)
    table.one_of(frame, "diverged", [0, 1])
    relax = frame["arm"].isin(names.RELAX_ARMS)
    table.integers(frame, "relax_time", minimum=0, empty_ok=True)
    wrong = relax == frame["relax_time"].isna()
    if wrong.any():
        row = int(np.flatnonzero(wrong.to_numpy())[0])
        raise table.fail(
            f"the {frame['arm'].iloc[row]} run{_at(row)} has a wrong relax_time "
            "(empty exactly for cnn and fcn)"
        )
    duplicate = frame.duplicated(["seed", "arm", "relax_time"])
    if duplicate.any():
        row = int(np.flatnonzero(duplicate.to_numpy())[0])
        raise table.fail(f"lists the run{_at(row)} twice")
    healthy = frame["diverged"] == 0
    table.finite(frame, ["test_accuracy"], where=healthy, reason="though the run has not diverged")
    dense = healthy & frame["arm"].isin(names.DENSE_ARMS)
    table.finite(
        frame,
        ["deviation_max_layer", *names.LAYER_METRICS],
        where=dense,
        reason="though the dense run has not diverged",
    )
    table.within(frame, [c for c in frame.columns if c.endswith("accuracy")], 0.0, 1.0)
    frame["divergence_reason"] = frame["divergence_reason"].fillna("")
    frame["deviation_max_layer_name"] = frame["deviation_max_layer_name"].fillna("")
    return frame


# -- the summary's tables: summary.csv and arms.csv -----------------------------------------------
RERUN_SUMMARY = "rerun the summarize rule (snakemake --forcerun summarize)"


def read_claims(path) -> pd.DataFrame:
    """summary.csv: claim ids as text (names.CLAIMS), verdicts among stats.VERDICTS."""
    table = _Table(path, "summary table", RERUN_SUMMARY)
    text = ("experiment", "claim", "statement", "comparison", "measure", "missing_runs")
    frame = table.read(
        names.SUMMARY_COLUMNS, text=(*text, "verdict", "claim_rule", "claim_verdict", "note")
    )
    table.one_of(frame, "claim", names.CLAIMS)
    table.one_of(frame, "verdict", stats.VERDICTS)
    table.one_of(frame, "claim_verdict", stats.VERDICTS)
    for column in ("relax_time", "n", "n_diverged", "n_missing"):
        table.numbers(frame, [column])
        table.integers(frame, column, minimum=0, empty_ok=True)
    for column in ("missing_runs", "note", "comparison", "measure", "claim_rule"):
        frame[column] = frame[column].fillna("")
    return frame


def read_arm_summary(path) -> pd.DataFrame:
    """arms.csv: one row per (arm, relax time), relax_time empty for cnn and fcn."""
    table = _Table(path, "arms table", RERUN_SUMMARY)
    frame = table.read(names.ARM_SUMMARY_COLUMNS, text=["experiment", "arm"])
    table.one_of(frame, "arm", names.ARMS)
    table.numbers(frame, ["relax_time", "n", "n_diverged", "n_missing"])
    table.integers(frame, "relax_time", minimum=0, empty_ok=True)
    for column in ("n", "n_diverged", "n_missing"):
        table.integers(frame, column, minimum=0)
    table.one_of(frame, "selected_on_validation", [True, False])
    return frame


# -- landscape, embedding records, parameter counts ------------------------------------------------
LANDSCAPE_TEXT = ("experiment", "path_kind", "start_arm", "end_arm", "split")


def read_landscape(path) -> pd.DataFrame:
    """Landscape rows (one seed's or the experiment's): explicit path columns, values in range;
    NaN only on paths that end at a diverged run. A table without rows is a landscape not run."""
    table = _Table(path, "landscape table", RERUN_JOB)
    frame = table.read(names.LANDSCAPE_COLUMNS, text=LANDSCAPE_TEXT, allow_no_rows=True)
    table.numbers(
        frame,
        ["seed", "start_relax_time", "end_relax_time", "diverged", "alpha", "loss", "accuracy"],
    )
    table.integers(frame, "seed", minimum=0)
    table.integers(frame, "start_relax_time", minimum=0, empty_ok=True)
    table.integers(frame, "end_relax_time", minimum=0, empty_ok=True)
    table.one_of(frame, "diverged", [0, 1])
    table.one_of(frame, "path_kind", names.LANDSCAPE_PATH_KINDS)
    table.one_of(frame, "start_arm", names.ARMS)
    table.one_of(frame, "end_arm", names.ARMS)
    table.one_of(frame, "split", names.SPLITS)
    everywhere = pd.Series(True, index=frame.index)
    table.finite(frame, ["alpha"], where=everywhere, reason="(every point of a path has one)")
    table.within(frame, ["alpha"], 0.0, 1.0)
    table.finite(
        frame,
        ["loss", "accuracy"],
        where=frame["diverged"] == 0,
        reason="on a path between runs that did not diverge",
    )
    table.within(frame, ["loss"], 0.0, math.inf)
    table.within(frame, ["accuracy"], 0.0, 1.0)
    return frame


def landscape_table(paths: Sequence) -> pd.DataFrame:
    """The experiment's landscape: every per-seed table, concatenated (none: no rows)."""
    frames = [read_landscape(path) for path in paths]
    if not frames:
        return pd.DataFrame(columns=list(names.LANDSCAPE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(names.LANDSCAPE_COLUMNS)]


RECORD_COLUMNS = names.EMBEDDING_COLUMNS[1:]  # the embed job does not know the experiment's name


def _check_embedding(table: _Table, frame: pd.DataFrame) -> pd.DataFrame:
    numeric = [column for column in RECORD_COLUMNS if column not in ("arm",)]
    table.numbers(frame, numeric)
    table.integers(frame, "seed", minimum=0)
    table.integers(frame, "relax_time", minimum=0)
    table.integers(frame, "images", minimum=1)
    table.integers(frame, "cnn_parameters", minimum=1)
    table.integers(frame, "embedded_parameters", minimum=1)
    table.one_of(frame, "arm", names.EMBEDDED_ARMS)
    # Non-finite logits are possible only from a diverged CNN checkpoint; the summary counts those.
    for column in (
        "max_abs_logit",
        "max_abs_logit_difference_fp32",
        "max_abs_logit_difference_fp64",
    ):
        if (frame[column] < 0).any():
            row = int(np.flatnonzero((frame[column] < 0).to_numpy())[0])
            raise table.fail(f"column {column} is negative{_at(row)}")
    return frame


def read_embedding_record(path) -> pd.DataFrame:
    """One embed job's exactness record (names.EMBEDDING_COLUMNS without "experiment")."""
    table = _Table(path, "embedding record", RERUN_JOB)
    return _check_embedding(table, table.read(RECORD_COLUMNS, text=["arm"]))


def embedding_table(paths: Sequence, experiment: str) -> pd.DataFrame:
    """Every embedding record of the experiment, with "experiment" prepended."""
    frames = [read_embedding_record(path) for path in paths]
    if not frames:
        return pd.DataFrame(columns=list(names.EMBEDDING_COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "experiment", experiment)
    return table[list(names.EMBEDDING_COLUMNS)]


def read_embedding(path) -> pd.DataFrame:
    """results/<e>/embedding.csv (no rows when no embedded arm is configured)."""
    table = _Table(path, "embedding table", RERUN_AGGREGATE)
    frame = table.read(names.EMBEDDING_COLUMNS, text=["experiment", "arm"], allow_no_rows=True)
    return _check_embedding(table, frame)


def read_parameter_counts(path) -> pd.DataFrame:
    table = _Table(path, "parameter counts", RERUN_JOB)
    frame = table.read(names.PARAMETER_COLUMNS, text=["experiment", "dataset", "model", "network"])
    table.numbers(frame, ["width", "parameters"])
    table.integers(frame, "width", minimum=1, empty_ok=True)
    table.integers(frame, "parameters", minimum=1)
    table.one_of(frame, "network", names.NETWORKS)
    return frame


# -- settings.json ---------------------------------------------------------------------------------
SETTINGS_KEYS = (
    "dataset",
    "model",
    "width",
    "canvas_size",
    "train_size",
    "validation_size",
    "test_size",
    "seeds",
    "optimiser.lr",
    "optimiser.momentum",
    "optimiser.weight_decay",
    "optimiser.batch_size",
    "cnn.epochs",
    "cnn.checkpoint_points",
    "fcn.epochs",
    "fcn_init_fan_in",
    "relax.arms",
    "relax.relax_times",
    "relax.epochs",
    "comparison.training_rule",
    "comparison.selection_split",
    "comparison.readout_epochs",
    "comparison.test_every_epoch",
    "comparison.confidence",
    "landscape.relax_times",
)


def read_settings(path) -> dict:
    """settings.json with every key the tables' readers use present (missing ones take the
    schema's default) and relax.relax_times resolved to a list of epochs."""
    table = _Table(path, "settings", "rerun the write_settings rule")
    settings = table.read_json()
    if not isinstance(settings, dict) or not isinstance(settings.get("experiment"), str):
        raise table.fail('is not an object with an "experiment" name')
    for key in SETTINGS_KEYS:
        *parents, leaf = key.split(".")
        node = settings
        for parent in parents:
            node = node.setdefault(parent, {})
        if leaf not in node:
            try:
                node[leaf] = experiment_default(key)
            except KeyError:
                raise table.fail(f"lacks {key} (it has no default)") from None
    relax = settings["relax"]
    if relax["relax_times"] == "all":
        relax["relax_times"] = checkpoint_epochs(
            settings["cnn"]["epochs"], settings["cnn"]["checkpoint_points"]
        )
    _check_settings(table, settings)
    return settings


def _check_settings(table: _Table, settings: dict) -> None:
    def whole(value, minimum):
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    seeds, relax = settings["seeds"], settings["relax"]
    if not (isinstance(seeds, list) and seeds and all(whole(seed, 0) for seed in seeds)):
        raise table.fail(f"seeds {seeds!r} is not a list of whole numbers >= 0")
    if not set(relax["arms"]) <= set(names.RELAX_ARMS):
        raise table.fail(f"relax.arms {relax['arms']!r} has an arm outside {names.RELAX_ARMS}")
    for key, times in (
        ("relax.relax_times", relax["relax_times"]),
        ("landscape.relax_times", settings["landscape"]["relax_times"]),
    ):
        if not (isinstance(times, list) and all(whole(time, 0) for time in times)):
            raise table.fail(f"{key} {times!r} is not a list of epochs")
    if settings["dataset"] not in names.DATASETS:
        raise table.fail(
            f"dataset {settings['dataset']!r} is not one of {', '.join(names.DATASETS)}"
        )
    comparison = settings["comparison"]
    if not whole(comparison["readout_epochs"], 1):
        raise table.fail(f"comparison.readout_epochs {comparison['readout_epochs']!r} is not >= 1")
    confidence = comparison["confidence"]
    if not (isinstance(confidence, (int, float)) and 0.5 < confidence < 1):
        raise table.fail(f"comparison.confidence {confidence!r} is not in (0.5, 1)")


STAMP_KEYS = (
    "experiment",
    "command",
    "commit",
    "machine",
    "versions",
    "seeds",
    "finished",
    "wall_seconds",
    "jobs",
    "job_seconds",
)


def read_stamp(path) -> dict:
    """stamp.json (workflow/scripts/stamp.py): how an experiment's results were made."""
    table = _Table(path, "stamp", "rerun the stamp rule (snakemake --forcerun stamp)")
    stamp = table.read_json()
    missing = [key for key in STAMP_KEYS if not isinstance(stamp, dict) or key not in stamp]
    if missing:
        raise table.fail(f"lacks {', '.join(missing)}")
    return stamp


def parameter_count_rows(cnn, *, experiment: str, dataset: str, model: str, width: int | None):
    """parameter_counts.csv for ``cnn``: its own count and those of its eLCN, eFCN and FCN."""
    from needle.embed import parameter_counts  # torch: only this function needs it

    counts = parameter_counts(cnn)
    rows = [
        {
            "experiment": experiment,
            "dataset": dataset,
            "model": model,
            "width": width,
            "network": network,
            "parameters": counts[network],
        }
        for network in names.NETWORKS
    ]
    return pd.DataFrame(rows, columns=list(names.PARAMETER_COLUMNS))
