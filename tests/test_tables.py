"""needle.tables and aggregate_metrics.py: every table is validated on read, a bad one is one line
naming the file, and runs.csv holds each run's readout by the contract's rule."""

import json
import math
import subprocess
import sys
from pathlib import Path

import aggregate_metrics
import pandas as pd
import pytest
import synthetic_tables as synthetic

from needle import names, tables
from needle.errors import NeedleError

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
IDENTITY = {"experiment": "e", "dataset": "fashion-mnist", "model": "skinny"}


def write(tmp_path, frame, name="metrics.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def cnn_table(test_accuracy, **columns) -> pd.DataFrame:
    """A CNN's per-run table with the given test accuracies at epochs 0, 1, 2, ..."""
    epochs = range(len(test_accuracy))
    frame = pd.DataFrame(
        {
            "epoch": epochs,
            "epochs_since_relax": epochs,
            "train_loss": [2.0] * len(epochs),
            "train_accuracy": [0.5] * len(epochs),
            "validation_loss": [1.0] * len(epochs),
            "validation_accuracy": [0.4] * len(epochs),
            "test_loss": [1.5] * len(epochs),
            "test_accuracy": test_accuracy,
            "diverged": [0] * len(epochs),
        }
    )
    return frame.assign(**columns)[list(names.RUN_COLUMNS)]


CNN = tables.Run(0, names.CNN, None)


# -- the readout -----------------------------------------------------------------------------------
def outcome(frame, run=CNN, k=2):
    return tables.run_outcome(frame, run, **IDENTITY, readout_epochs=k)


def test_readout_is_the_mean_over_the_last_k_epochs():
    row = outcome(cnn_table([0.1, 0.5, 0.6, 0.7, 0.9]), k=2)
    assert row["test_accuracy"] == pytest.approx(0.8)
    assert row["final_test_accuracy"] == 0.9
    assert row["start_test_accuracy"] == 0.1
    assert row["last_epoch"] == 4 and row["readout_epochs"] == 2


def test_readout_never_includes_the_start_row_even_when_k_reaches_it():
    assert outcome(cnn_table([0.1, 0.5, 0.7]), k=5)["test_accuracy"] == pytest.approx(0.6)


def test_a_readout_over_epochs_without_test_evaluation_is_refused():
    """With test_every_epoch off only the start and the last readout_epochs epochs are tested: a
    readout over more epochs than the run tested is an error, never a mean of fewer values."""
    frame = cnn_table([0.1, math.nan, math.nan, 0.6, 0.7])
    assert outcome(frame, k=2)["test_accuracy"] == pytest.approx(0.65)
    with pytest.raises(NeedleError, match="has no test accuracy at some of its last 3 epochs"):
        outcome(frame, k=3)


def test_one_epoch_readout_is_the_papers_final_accuracy():
    assert outcome(cnn_table([0.1, 0.5, 0.7]), k=1)["test_accuracy"] == 0.7


def test_a_relax_runs_start_row_is_the_cnns_and_not_read_out():
    frame = synthetic.run_metrics(
        names.CNN_CONTINUED,
        seed=0,
        relax_time=5,
        epochs=2,
        final_accuracy=0.6,
        start_accuracy=0.9,
    )
    row = outcome(frame, tables.Run(0, names.CNN_CONTINUED, 5), k=3)
    assert list(frame["epoch"]) == [5, 6, 7]
    assert row["test_accuracy"] == pytest.approx(0.6)
    assert row["start_test_accuracy"] == pytest.approx(0.9)
    assert row["relax_time"] == 5


def test_without_a_validation_split_the_validation_readout_is_empty():
    frame = cnn_table([0.1, 0.5, 0.7], validation_loss=math.nan, validation_accuracy=math.nan)
    assert math.isnan(outcome(frame)["validation_accuracy"])


def test_dense_runs_report_the_pooled_parts_and_the_most_deviating_layer():
    frame = synthetic.run_metrics(
        names.EFCN, seed=0, relax_time=1, epochs=4, final_accuracy=0.7, deviation=0.4
    )
    row = outcome(frame, tables.Run(0, names.EFCN, 1))
    # synthetic layers deviate 0.5, 0.8 and 1.0 x 0.4 (conv1..conv3), 0.6 x 0.4 pooled
    assert row["deviation_max_layer"] == pytest.approx(0.4)
    assert row["deviation_max_layer_name"] == "conv3"
    assert row["deviation"] == pytest.approx(0.24)
    assert row["deviation_nonlocal"] == pytest.approx(0.8 * 0.24)
    assert row["deviation_nonsharing"] == pytest.approx(0.6 * 0.24)
    assert row["displacement_offsubspace"] == pytest.approx(0.7)
    assert row["projected_test_accuracy"] == pytest.approx(0.65)


def test_a_diverged_run_keeps_its_numbers_with_its_reason():
    frame = synthetic.run_metrics(
        names.FCN, seed=0, relax_time=None, epochs=6, final_accuracy=0.7, diverged=2
    )
    row = outcome(frame, tables.Run(0, names.FCN, None))
    assert row["diverged"] == 1
    assert row["divergence_reason"] == names.DIVERGENCE_REASONS[2]
    assert row["last_epoch"] == 3 and row["final_test_accuracy"] == pytest.approx(0.1)


def test_runs_table_has_the_contract_columns_and_order():
    runs = [
        (tables.Run(1, names.EFCN, 2), 0.7),
        (tables.Run(0, names.EFCN, 2), 0.7),
        (tables.Run(0, names.CNN, None), 0.8),
    ]
    rows = [
        outcome(
            synthetic.run_metrics(
                run.arm, seed=run.seed, relax_time=run.relax_time, epochs=3, final_accuracy=a
            ),
            run,
        )
        for run, a in runs
    ]
    table = tables.runs_table(rows)
    assert tuple(table.columns) == names.OUTCOME_COLUMNS
    assert list(zip(table["arm"], table["seed"])) == [("cnn", 0), ("efcn", 0), ("efcn", 1)]
    assert not any("best" in column for column in table.columns)  # the test set selects nothing


# -- the tidy table --------------------------------------------------------------------------------
def test_tidy_rows_split_metric_and_layer_and_leave_relax_time_empty_for_the_cnn():
    cnn = cnn_table([0.1, 0.5])
    efcn = synthetic.run_metrics(names.EFCN, seed=0, relax_time=1, epochs=1, final_accuracy=0.6)
    tidy = tables.tidy_table([(CNN, cnn), (tables.Run(0, names.EFCN, 1), efcn)], **IDENTITY)
    assert tuple(tidy.columns) == names.TIDY_COLUMNS
    assert len(tidy) == 2 * (len(cnn.columns) - 2) + 2 * (len(efcn.columns) - 2)
    conv1 = tidy[(tidy["metric"] == "deviation") & (tidy["layer"] == "conv1")]
    assert list(conv1["epoch"]) == [1, 2] and list(conv1["relax_time"]) == [1, 1]
    plain = tidy[tidy["arm"] == "cnn"]
    assert plain["relax_time"].isna().all() and plain["layer"].isna().all()
    final = plain[(plain["metric"] == "test_accuracy") & (plain["epoch"] == 1)]
    assert list(final["value"]) == [0.5]


def test_the_tidy_table_round_trips_through_its_reader(tmp_path):
    built = synthetic.experiment(synthetic.settings(seeds=[0]))
    path = write(tmp_path, built.tidy)
    read = tables.read_tidy(path)
    assert len(read) == len(built.tidy)
    assert read["value"].sum() == pytest.approx(built.tidy["value"].sum())


# -- one line per bad per-run table ----------------------------------------------------------------
def corrupt(frame, row, column, value):
    frame = frame.astype(object)
    frame.loc[row, column] = value
    return frame


BAD_TABLES = {
    "missing column": (
        lambda f: f.drop(columns="test_accuracy"),
        "lacks column(s) test_accuracy",
    ),
    "missing epoch column": (lambda f: f.drop(columns="epoch"), "lacks column(s) epoch"),
    "unexpected column": (lambda f: f.assign(extra=1.0), "unexpected column(s) extra"),
    "non-numeric accuracy": (
        lambda f: corrupt(f, 2, "test_accuracy", "abc"),
        "column test_accuracy has a non-numeric value 'abc' on line 4",
    ),
    "NaN accuracy": (
        lambda f: corrupt(f, 2, "train_accuracy", math.nan),
        "column train_accuracy is nan on line 4 though the run has not diverged",
    ),
    "no test accuracy at the last epoch": (
        lambda f: corrupt(f, len(f) - 1, "test_accuracy", math.nan),
        "column test_accuracy is nan on line",
    ),
    "accuracy above 1": (
        lambda f: corrupt(f, 1, "test_accuracy", 75.0),
        "column test_accuracy holds 75 on line 3: must be in [0, 1]",
    ),
    "negative loss": (
        lambda f: corrupt(f, 1, "train_loss", -1.0),
        "column train_loss holds -1 on line 3: must be >= 0",
    ),
    "duplicate epoch": (
        lambda f: pd.concat([f.iloc[:3], f.iloc[2:]], ignore_index=True),
        "repeats epoch 2 on line 5",
    ),
    "missing epoch": (lambda f: f.drop(index=2), "jumps from epoch 1 to 3 on line 4"),
    "epochs out of order": (
        lambda f: f.iloc[[0, 1, 2, 3, 2]],
        "goes back to epoch 2 on line 6",
    ),
    "not starting at the start": (lambda f: f.iloc[1:], "starts at epoch 1, expected 0"),
    "fractional epoch": (
        lambda f: corrupt(f, 1, "epoch", 1.5),
        "column epoch holds 1.5 on line 3: needs whole numbers >= 0",
    ),
    "unknown divergence code": (
        lambda f: corrupt(f, 4, "diverged", 7),
        "column diverged holds 7 on line 6; expected one of 0, 1, 2, 3, 4",
    ),
    "diverged then healthy": (
        lambda f: corrupt(f, 3, "diverged", 2),
        "a diverged run returns to diverged = 0 on line 6",
    ),
    "header only": (lambda f: f.iloc[:0], "has a header but no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_each_bad_per_run_table_is_one_line_naming_the_file_and_the_problem(tmp_path, case):
    damage, problem = BAD_TABLES[case]
    path = write(tmp_path, damage(cnn_table([0.1, 0.5, 0.6, 0.7, 0.8])))
    with pytest.raises(NeedleError) as error:
        tables.read_run_metrics(path, CNN)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and problem in message, message
    assert "rerun snakemake" in message


def test_an_empty_file_and_an_absent_file_are_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(NeedleError, match=f"{empty}: is empty"):
        tables.read_run_metrics(empty, CNN)
    with pytest.raises(NeedleError, match="absent.csv: does not exist"):
        tables.read_run_metrics(tmp_path / "absent.csv", CNN)


def test_a_relax_run_must_start_at_its_relax_time(tmp_path):
    frame = synthetic.run_metrics(names.EFCN, seed=0, relax_time=2, epochs=3, final_accuracy=0.6)
    path = write(tmp_path, frame)
    tables.read_run_metrics(path, tables.Run(0, names.EFCN, 2))
    with pytest.raises(NeedleError, match="starts at epoch 2, expected 4"):
        tables.read_run_metrics(path, tables.Run(0, names.EFCN, 4))


def test_a_dense_run_needs_every_probe_column(tmp_path):
    frame = synthetic.run_metrics(names.FCN, seed=0, relax_time=None, epochs=3, final_accuracy=0.6)
    path = write(tmp_path, frame.drop(columns="displacement_offsubspace/conv2"))
    with pytest.raises(NeedleError, match="lacks column\\(s\\) displacement_offsubspace/conv2"):
        tables.read_run_metrics(path, tables.Run(0, names.FCN, None))


def test_a_deviation_above_one_is_refused(tmp_path):
    frame = synthetic.run_metrics(names.FCN, seed=0, relax_time=None, epochs=3, final_accuracy=0.6)
    path = write(tmp_path, corrupt(frame, 2, "deviation/conv1", 1.5))
    with pytest.raises(NeedleError, match="deviation/conv1 holds 1.5 on line 4"):
        tables.read_run_metrics(path, tables.Run(0, names.FCN, None))


@pytest.mark.parametrize("code", [1, 2, 4])
def test_the_rows_of_a_diverged_run_may_hold_what_a_diverged_run_logs(tmp_path, code):
    frame = synthetic.run_metrics(
        names.EFCN, seed=0, relax_time=1, epochs=6, final_accuracy=0.6, diverged=code
    )
    path = write(tmp_path, frame)
    read = tables.read_run_metrics(path, tables.Run(0, names.EFCN, 1))
    assert read["diverged"].iloc[-1] == code
    if code == 1:
        assert math.isnan(read["test_loss"].iloc[-1])


def test_an_absent_validation_split_is_allowed_but_a_partial_one_is_not(tmp_path):
    frame = cnn_table([0.1, 0.5, 0.6], validation_loss=math.nan, validation_accuracy=math.nan)
    tables.read_run_metrics(write(tmp_path, frame), CNN)
    partial = corrupt(cnn_table([0.1, 0.5, 0.6]), 1, "validation_accuracy", math.nan)
    with pytest.raises(NeedleError, match="validation_accuracy is nan on line 3"):
        tables.read_run_metrics(write(tmp_path, partial), CNN)


# -- runs.csv, landscape, embedding, parameter counts, settings ------------------------------------
@pytest.fixture(scope="module")
def built():
    return synthetic.experiment(synthetic.settings(seeds=[0, 1]), diverged=[(1, "efcn", 4)])


def test_runs_table_round_trips_and_checks_its_rows(tmp_path, built):
    read = tables.read_runs(write(tmp_path, built.outcomes, "runs.csv"))
    assert len(read) == len(built.outcomes) and read["diverged"].sum() == 1
    duplicate = pd.concat([built.outcomes, built.outcomes.iloc[:1]])
    with pytest.raises(NeedleError, match="lists the run on line .* twice"):
        tables.read_runs(write(tmp_path, duplicate, "runs.csv"))
    no_readout = corrupt(built.outcomes, 0, "test_accuracy", math.nan)
    with pytest.raises(NeedleError, match="test_accuracy is nan on line 2 though"):
        tables.read_runs(write(tmp_path, no_readout, "runs.csv"))
    cnn_with_relax_time = corrupt(built.outcomes, 0, "relax_time", 3)
    with pytest.raises(NeedleError, match="wrong relax_time"):
        tables.read_runs(write(tmp_path, cnn_with_relax_time, "runs.csv"))


def test_an_experiment_named_by_digits_stays_text(tmp_path, built):
    outcomes = built.outcomes.assign(experiment="2024")
    assert set(tables.read_runs(write(tmp_path, outcomes, "runs.csv"))["experiment"]) == {"2024"}


def test_landscape_tables_concatenate_and_allow_nan_only_on_diverged_paths(tmp_path, built):
    assert built.landscape["diverged"].any()  # paths to the diverged eFCN
    first = write(tmp_path, built.landscape[built.landscape["seed"] == 0], "seed0.csv")
    second = write(tmp_path, built.landscape[built.landscape["seed"] == 1], "seed1.csv")
    table = tables.landscape_table([first, second])
    assert tuple(table.columns) == names.LANDSCAPE_COLUMNS
    assert len(table) == len(built.landscape)
    healthy = built.landscape["diverged"] == 0
    broken = corrupt(built.landscape, int(healthy.idxmax()), "loss", math.nan)
    with pytest.raises(NeedleError, match="loss is nan on line 2 on a path between runs"):
        tables.read_landscape(write(tmp_path, broken, "landscape.csv"))
    unknown = corrupt(built.landscape, 0, "path_kind", "start_to_end")
    with pytest.raises(NeedleError, match="path_kind holds 'start_to_end'"):
        tables.read_landscape(write(tmp_path, unknown, "landscape.csv"))


def test_no_landscape_is_an_empty_table_with_the_contract_columns():
    assert tuple(tables.landscape_table([]).columns) == names.LANDSCAPE_COLUMNS


def test_embedding_records_gain_the_experiment_name(tmp_path, built):
    records = built.embedding.drop(columns="experiment")
    paths = [write(tmp_path, records.iloc[[i]], f"record{i}.csv") for i in range(3)]
    table = tables.embedding_table(paths, "named")
    assert tuple(table.columns) == names.EMBEDDING_COLUMNS
    assert list(table["experiment"]) == ["named"] * 3
    with pytest.raises(NeedleError, match="unexpected column\\(s\\) experiment"):
        tables.read_embedding_record(write(tmp_path, built.embedding.iloc[:1], "with_name.csv"))
    negative = corrupt(
        records.iloc[:1].reset_index(drop=True), 0, "max_abs_logit_difference_fp64", -1.0
    )
    with pytest.raises(NeedleError, match="max_abs_logit_difference_fp64 is negative on line 2"):
        tables.read_embedding_record(write(tmp_path, negative, "negative.csv"))


def test_parameter_counts_are_whole_numbers_of_known_networks(tmp_path, built):
    assert len(tables.read_parameter_counts(write(tmp_path, built.parameter_counts, "p.csv"))) == 4
    wrong = corrupt(built.parameter_counts, 0, "network", "mlp")
    with pytest.raises(NeedleError, match="network holds 'mlp' on line 2"):
        tables.read_parameter_counts(write(tmp_path, wrong, "p.csv"))


def test_settings_take_schema_defaults_and_resolve_every_relax_time(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"experiment": "x", "dataset": "cifar10", "relax": {}}))
    settings = tables.read_settings(path)
    # the authors' relax times: checkpoints of a 100-epoch CNN at 20 log-spaced points
    assert settings["relax"]["relax_times"] == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        11,
        14,
        18,
        23,
        29,
        37,
        48,
        61,
        78,
        100,
    ]
    assert settings["comparison"]["confidence"] == 0.95
    assert settings["optimiser"]["lr"] == 0.1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "is not JSON"),
        ('{"dataset": "cifar10"}', 'an "experiment" name'),
        ('{"experiment": "x"}', "lacks dataset"),
        ('{"experiment": "x", "dataset": "svhn"}', "dataset 'svhn' is not one of"),
        ('{"experiment": "x", "dataset": "cifar10", "seeds": [0.5]}', "seeds [0.5] is not a list"),
        (
            '{"experiment": "x", "dataset": "cifar10", "comparison": {"confidence": 95}}',
            "comparison.confidence 95 is not in (0.5, 1)",
        ),
    ],
)
def test_bad_settings_are_one_line(tmp_path, text, problem):
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(NeedleError) as error:
        tables.read_settings(path)
    assert problem in str(error.value) and str(path) in str(error.value)


# -- aggregate_metrics.py --------------------------------------------------------------------------
OUTPUTS = ("metrics", "runs", "landscape", "embedding")


def aggregate_argv(paths, out: Path, readout=2):
    outputs = [f"--{name}-output={out / f'{name}.csv'}" for name in OUTPUTS]
    return [
        "--experiment=synthetic",
        "--dataset=fashion-mnist",
        "--model=skinny",
        f"--readout-epochs={readout}",
        *paths["aggregate_arguments"],
        *outputs,
    ]


def test_aggregation_writes_the_readouts_it_was_designed_with(tmp_path, built):
    paths = synthetic.write_experiment(tmp_path / "in", built)
    aggregate_metrics.main(aggregate_argv(paths, tmp_path / "out"))
    runs = tables.read_runs(tmp_path / "out" / "runs.csv")
    assert len(runs) == len(built.runs) == 2 * (2 + 3 * 5)
    healthy = runs[runs["diverged"] == 0]
    for row in healthy.itertuples():
        relax_time = None if pd.isna(row.relax_time) else int(row.relax_time)
        assert row.test_accuracy == pytest.approx(built.designed[(row.seed, row.arm, relax_time)])
    assert len(tables.read_tidy(tmp_path / "out" / "metrics.csv")) == len(built.tidy)
    embedding = tables.read_embedding(tmp_path / "out" / "embedding.csv")
    assert set(embedding["experiment"]) == {"synthetic"} and len(embedding) == len(built.embedding)
    assert len(tables.read_landscape(tmp_path / "out" / "landscape.csv")) == len(built.landscape)


def test_a_bad_run_stops_the_stage_with_one_line_and_leaves_earlier_outputs_intact(tmp_path, built):
    paths = synthetic.write_experiment(tmp_path / "in", built)
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUTS:
        (out / f"{name}.csv").write_text("earlier result\n")
    bad = paths["runs_by_key"][(1, "elcn", 4)]
    bad.write_text(bad.read_text().replace("0.", "x.", 1))
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "aggregate_metrics.py"), *aggregate_argv(paths, out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"needle: error: elcn metrics {bad}: column")
    assert "non-numeric value" in result.stderr
    assert all((out / f"{name}.csv").read_text() == "earlier result\n" for name in OUTPUTS)


@pytest.mark.parametrize(
    ("run", "problem"),
    [
        (["0", "mlp", "-", "x.csv"], "unknown arm"),
        (["0", "efcn", "-", "x.csv"], "the relax time of efcn must be an epoch"),
        (["0", "cnn", "3", "x.csv"], "the relax time of cnn must be -"),
        (["-1", "cnn", "-", "x.csv"], "the seed must be a whole number"),
    ],
)
def test_a_malformed_run_argument_is_one_line(tmp_path, run, problem):
    argv = aggregate_argv({"aggregate_arguments": ["--run", *run]}, tmp_path)
    with pytest.raises(NeedleError, match=problem):
        aggregate_metrics.main(argv)


def test_a_run_given_twice_is_refused(tmp_path):
    path = write(tmp_path, cnn_table([0.1, 0.5]))
    run = ["--run", "0", "cnn", "-", str(path)]
    with pytest.raises(NeedleError, match="given twice"):
        aggregate_metrics.main(aggregate_argv({"aggregate_arguments": run + run}, tmp_path))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "does not exist; rerun the stamp rule"),
        ("{", "is not JSON"),
        ("[]", "lacks experiment, command"),
        ('{"experiment": "x", "command": "snakemake"}', "lacks commit, machine"),
    ],
)
def test_a_bad_stamp_is_one_line_naming_the_file_and_the_rule_to_rerun(tmp_path, text, problem):
    path = tmp_path / "stamp.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(NeedleError) as error:
        tables.read_stamp(path)
    message = str(error.value)
    assert problem in message and str(path) in message and "\n" not in message
