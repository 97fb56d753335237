"""Every stage script runs end to end on the CPU, as the workflow runs it: `python workflow/scripts/X.py`.

Tiny fake Fashion-MNIST (200 train / 100 test images), a Skinny CNN of width 4 and 1-3 epochs keep
each run to a few seconds, most of it the import of torch. Runs that do not depend on each other
start two at a time; the module fixtures below are the runs, the tests read their outputs.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CPU, SCRIPTS, run_script, run_scripts

from needle import embed, protocol
from needle.schedule import checkpoint_epochs

pytestmark = pytest.mark.slow  # ~30 stage subprocesses: about two minutes on 2 shared cores

CNN_EPOCHS, CHECKPOINT_POINTS = 3, 3  # checkpoints at epochs 0, 1 and 3
RELAX_TIME, RELAX_EPOCHS = 1, 2
LAST = CNN_EPOCHS  # the zero-epoch relax runs start from the last checkpoint
OPTIMISER = ("--batch-size", "50", "--eval-batch-size", "500")
STAGE_SCRIPTS = [
    "prepare_data.py",
    "train_cnn.py",
    "relax.py",
    "train_fcn.py",
    "interpolate.py",
    "aggregate_metrics.py",
    "parameter_counts.py",
    "summarize.py",
    "plot_figures.py",
]


def data_args(data_dir, seed=0, dataset="fashion-mnist", *extra):
    return ("--dataset", dataset, "--data-dir", data_dir, "--seed", seed, "--width", 4, *extra)


def cnn_command(out: Path, data_dir, seed=0, dataset="fashion-mnist", epochs=CNN_EPOCHS, *extra):
    return (
        "train_cnn.py",
        *data_args(data_dir, seed, dataset, *extra),
        "--epochs",
        epochs,
        "--lr",
        "0.1",
        "--checkpoint-points",
        CHECKPOINT_POINTS,
        *OPTIMISER,
        *CPU,
        "--checkpoint-dir",
        out / "checkpoints",
        "--metrics",
        out / "metrics.csv",
    )


def relax_command(
    out: Path,
    data_dir,
    checkpoint_dir: Path,
    *,
    arm="efcn",
    relax_time=RELAX_TIME,
    epochs=RELAX_EPOCHS,
    seed=0,
    dataset="fashion-mnist",
    extra=(),
):
    return (
        "relax.py",
        *data_args(data_dir, seed, dataset, *extra),
        "--epochs",
        epochs,
        "--lr",
        "0.02",
        *OPTIMISER,
        *CPU,
        "--arm",
        arm,
        "--relax-time",
        relax_time,
        "--checkpoint",
        checkpoint_dir / f"epoch{relax_time}.pt",
        "--metrics",
        out / "metrics.csv",
        "--final-weights",
        out / "final.pt",
    )


def fcn_command(out: Path, data_dir, seed=0):
    return (
        "train_fcn.py",
        *data_args(data_dir, seed),
        "--epochs",
        2,
        "--lr",
        "0.05",
        *OPTIMISER,
        *CPU,
        "--metrics",
        out / "metrics.csv",
        "--final-weights",
        out / "final.pt",
    )


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- the runs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion_dir) -> dict[str, Path]:
    """CNN and FCN twice with seed 0 and once with seed 1; then relax runs from the first CNN."""
    root = tmp_path_factory.mktemp("stages")
    out = {
        name: root / name
        for name in (
            "cnn",
            "cnn_again",
            "cnn_seed1",
            "fcn",
            "fcn_again",
            "fcn_seed1",
            "efcn",
            "efcn_again",
            "efcn_seed1",
            "elcn",
            "efcn_zero",
            "elcn_zero",
        )
    }
    run_scripts(
        [
            cnn_command(out["cnn"], fashion_dir),
            cnn_command(out["cnn_again"], fashion_dir),
            cnn_command(out["cnn_seed1"], fashion_dir, 1),
            fcn_command(out["fcn"], fashion_dir),
            fcn_command(out["fcn_again"], fashion_dir),
            fcn_command(out["fcn_seed1"], fashion_dir, 1),
        ]
    )
    checkpoints = out["cnn"] / "checkpoints"
    run_scripts(
        [
            relax_command(out["efcn"], fashion_dir, checkpoints),
            relax_command(out["efcn_again"], fashion_dir, checkpoints),
            relax_command(out["efcn_seed1"], fashion_dir, checkpoints, seed=1),
            relax_command(out["elcn"], fashion_dir, checkpoints, arm="elcn"),
            relax_command(out["efcn_zero"], fashion_dir, checkpoints, relax_time=LAST, epochs=0),
            relax_command(
                out["elcn_zero"], fashion_dir, checkpoints, arm="elcn", relax_time=LAST, epochs=0
            ),
        ]
    )
    return out


@pytest.fixture(scope="module")
def tables(runs, tmp_path_factory, fashion_dir) -> dict[str, Path]:
    """interpolate, aggregate_metrics and parameter_counts on the runs above."""
    root = tmp_path_factory.mktemp("tables")
    paths = {
        "landscape": root / "landscape.csv",
        "metrics": root / "metrics.csv",
        "landscape_all": root / "landscape_all.csv",
        "parameter_counts": root / "parameter_counts.csv",
    }
    cnn = runs["cnn"] / "checkpoints"
    run_list = [
        ("0", "cnn", "-", runs["cnn"] / "metrics.csv"),
        ("0", "fcn", "-", runs["fcn"] / "metrics.csv"),
        ("0", "efcn", RELAX_TIME, runs["efcn"] / "metrics.csv"),
        ("0", "elcn", RELAX_TIME, runs["elcn"] / "metrics.csv"),
        ("0", "efcn", LAST, runs["efcn_zero"] / "metrics.csv"),
    ]
    run_scripts(
        [
            (
                "interpolate.py",
                *data_args(fashion_dir),
                "--experiment",
                "tiny",
                "--relax-times",
                RELAX_TIME,
                LAST,
                "--cnn-checkpoints",
                cnn / f"epoch{RELAX_TIME}.pt",
                cnn / f"epoch{LAST}.pt",
                "--efcn-finals",
                runs["efcn"] / "final.pt",
                runs["efcn_zero"] / "final.pt",
                "--fcn-final",
                runs["fcn"] / "final.pt",
                "--points",
                3,
                "--examples",
                50,
                *CPU,
                "--output",
                paths["landscape"],
            ),
            (
                "parameter_counts.py",
                "--experiment",
                "tiny",
                "--dataset",
                "fashion-mnist",
                "--width",
                4,
                "--output",
                paths["parameter_counts"],
            ),
        ]
    )
    run_script(
        "aggregate_metrics.py",
        "--experiment",
        "tiny",
        "--dataset",
        "fashion-mnist",
        "--model",
        "skinny",
        *[part for run in run_list for part in ("--run", *run)],
        "--landscape",
        paths["landscape"],
        "--output",
        paths["metrics"],
        "--landscape-output",
        paths["landscape_all"],
    )
    return paths


# -- every script explains itself ----------------------------------------------------------------------------
def test_every_stage_script_prints_its_help(tmp_path):
    results = run_scripts([(name, "--help") for name in STAGE_SCRIPTS])
    for name, result in zip(STAGE_SCRIPTS, results):
        assert result.returncode == 0, name
        assert result.stdout.startswith("usage:"), name
        assert not (tmp_path / "results").exists()
    assert sorted(STAGE_SCRIPTS) == sorted(p.name for p in SCRIPTS.glob("*.py")), (
        "a stage script lacks a --help test"
    )


# -- CNN ---------------------------------------------------------------------------------------------------
def test_cnn_writes_one_metrics_row_per_epoch_with_the_contract_columns(runs):
    rows = read_rows(runs["cnn"] / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(CNN_EPOCHS + 1))
    assert list(rows[0]) == [
        "epoch",
        "epochs_since_relax",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "diverged",
    ]
    for row in rows:
        assert 0 <= float(row["test_accuracy"]) <= 1 and math.isfinite(float(row["train_loss"]))
        assert row["diverged"] == "0"
    assert not (runs["cnn"] / "resume").exists(), "a finished run leaves no resume state behind"


def test_cnn_checkpoints_hold_weights_and_optimizer_at_epoch_0_and_every_log_spaced_epoch(runs):
    expected = checkpoint_epochs(CNN_EPOCHS, CHECKPOINT_POINTS)
    assert expected == [0, 1, 3]
    folder = runs["cnn"] / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"epoch{epoch}.pt" for epoch in expected
    )
    payloads = {
        epoch: torch.load(folder / f"epoch{epoch}.pt", map_location="cpu", weights_only=True)
        for epoch in expected
    }
    for epoch, payload in payloads.items():
        assert payload["epoch"] == epoch and payload["kind"] == "cnn"
        assert payload["architecture"] == {
            "model": "skinny",
            "in_channels": 1,
            "image_size": 28,
            "num_classes": 10,
            "width": 4,
        }
        assert set(payload["optimizer"]) == {"state", "param_groups"}
        assert payload["optimizer"]["param_groups"][0]["lr"] == 0.1
        assert all(isinstance(value, torch.Tensor) for value in payload["model"].values())
    # Epoch 0 is the seeded initialisation itself; training then moves the weights.
    torch.manual_seed(0)
    initial = protocol.build_cnn(payloads[0]["architecture"]).state_dict()
    assert all(torch.equal(initial[key], payloads[0]["model"][key]) for key in initial)
    assert not torch.equal(
        payloads[0]["model"]["conv1.weight"], payloads[3]["model"]["conv1.weight"]
    )


# -- relax ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arm", ["efcn", "elcn"])
def test_relax_writes_total_epochs_and_the_dense_probe_columns(runs, arm):
    rows = read_rows(runs[arm] / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == [RELAX_TIME + e for e in range(RELAX_EPOCHS + 1)]
    assert [int(row["epochs_since_relax"]) for row in rows] == list(range(RELAX_EPOCHS + 1))
    for column in (
        "projected_test_loss",
        "projected_test_accuracy",
        "distance_from_embedding",
        "deviation/conv1",
        "deviation_nonlocal/conv3",
        "deviation_nonsharing/all",
    ):
        assert column in rows[0], column
    # At the embedding the net is exactly the CNN: no deviation, no distance travelled.
    assert float(rows[0]["deviation/all"]) == pytest.approx(0, abs=1e-6)
    assert float(rows[0]["distance_from_embedding"]) == 0
    assert float(rows[-1]["distance_from_embedding"]) > 0
    final = torch.load(runs[arm] / "final.pt", map_location="cpu", weights_only=True)
    assert (
        final["kind"] == arm
        and final["epoch"] == RELAX_TIME + RELAX_EPOCHS
        and final["relax_time"] == RELAX_TIME
    )


@pytest.mark.parametrize("arm", ["efcn", "elcn"])
def test_relax_for_zero_epochs_reports_exactly_the_cnn_test_accuracy_at_the_relax_time(runs, arm):
    cnn_row = next(
        row for row in read_rows(runs["cnn"] / "metrics.csv") if int(row["epoch"]) == LAST
    )
    rows = read_rows(runs[f"{arm}_zero"] / "metrics.csv")
    assert len(rows) == 1
    assert int(rows[0]["epoch"]) == LAST and int(rows[0]["epochs_since_relax"]) == 0
    assert float(rows[0]["test_accuracy"]) == float(cnn_row["test_accuracy"])
    assert float(rows[0]["test_loss"]) == pytest.approx(float(cnn_row["test_loss"]), abs=1e-5)
    # ...and the projection back to a CNN is the CNN itself.
    assert float(rows[0]["projected_test_accuracy"]) == float(cnn_row["test_accuracy"])
    # The saved weights are the embedding of the checkpoint.
    checkpoint = torch.load(runs["cnn"] / "checkpoints" / f"epoch{LAST}.pt", weights_only=True)
    cnn = protocol.build_cnn(checkpoint["architecture"])
    cnn.load_state_dict(checkpoint["model"])
    embedded = (embed.to_efcn if arm == "efcn" else embed.to_elcn)(cnn).state_dict()
    final = torch.load(runs[f"{arm}_zero"] / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(embedded[key], final[key]) for key in embedded)


# -- FCN -------------------------------------------------------------------------------------------------
def test_standard_fcn_trains_from_a_fresh_init_and_logs_its_deviation(runs):
    rows = read_rows(runs["fcn"] / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert float(rows[0]["deviation/all"]) > 0.5, "a random dense init is far from any CNN"
    final = torch.load(runs["fcn"] / "final.pt", weights_only=True)
    assert final["kind"] == "fcn" and final["epoch"] == 2


# -- determinism ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["cnn", "efcn", "fcn"])
def test_the_same_seed_gives_byte_identical_csvs_and_another_seed_does_not(runs, stage):
    first = (runs[stage] / "metrics.csv").read_bytes()
    assert (runs[f"{stage}_again"] / "metrics.csv").read_bytes() == first
    assert (runs[f"{stage}_seed1"] / "metrics.csv").read_bytes() != first


def test_the_same_seed_gives_identical_checkpoint_tensors(runs):
    for name in ("epoch0.pt", "epoch1.pt", "epoch3.pt"):
        a = torch.load(runs["cnn"] / "checkpoints" / name, weights_only=True)
        b = torch.load(runs["cnn_again"] / "checkpoints" / name, weights_only=True)
        assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


# -- tables ----------------------------------------------------------------------------------------------
def test_interpolate_writes_every_path_from_alpha_0_to_1_on_both_splits(tables):
    landscape = pd.read_csv(tables["landscape"])
    assert list(landscape.columns) == [
        "experiment",
        "seed",
        "path",
        "alpha",
        "split",
        "loss",
        "accuracy",
    ]
    assert set(landscape["path"]) == {
        f"efcn_tw{RELAX_TIME}: embedding -> final",
        f"efcn_tw{LAST}: embedding -> final",
        f"efcn_tw{RELAX_TIME} final -> fcn final",
        f"efcn_tw{LAST} final -> fcn final",
        f"efcn_tw{RELAX_TIME} final -> efcn_tw{LAST} final",
    }
    assert sorted(set(landscape["alpha"])) == [0, 0.5, 1]
    assert set(landscape["split"]) == {"train", "test"}
    # Zero epochs of relaxation: the embedding and the final weights are the same point.
    flat = landscape[landscape["path"] == f"efcn_tw{LAST}: embedding -> final"]
    assert flat["loss"].nunique() == 2  # one value per split


def test_aggregate_metrics_writes_the_tidy_table_of_every_run(tables):
    metrics = pd.read_csv(tables["metrics"])
    assert list(metrics.columns) == [
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
    assert set(metrics["arm"]) == {"cnn", "fcn", "efcn", "elcn"}
    assert metrics.loc[metrics["arm"].isin(["cnn", "fcn"]), "relax_time"].isna().all()
    assert set(metrics.loc[metrics["metric"] == "deviation", "layer"]) == {
        "conv1",
        "conv2",
        "conv3",
        "all",
    }
    assert metrics.loc[metrics["metric"] == "test_accuracy", "layer"].isna().all()
    assert len(pd.read_csv(tables["landscape_all"])) == len(pd.read_csv(tables["landscape"]))


def test_parameter_counts_matches_the_networks_built_in_memory(tables):
    table = pd.read_csv(tables["parameter_counts"])
    assert list(table.columns) == [
        "experiment",
        "dataset",
        "model",
        "width",
        "network",
        "parameters",
    ]
    counts = dict(zip(table["network"], table["parameters"]))
    cnn = protocol.build_cnn(
        {"model": "skinny", "in_channels": 1, "image_size": 28, "num_classes": 10, "width": 4}
    )
    assert counts == embed.parameter_counts(cnn)
    assert counts["cnn"] < counts["elcn"] < counts["efcn"] == counts["fcn"]


# -- other datasets and the translated task ---------------------------------------------------------------------
@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_runs_through_cnn_and_relax(request, tmp_path, which):
    data_dir, env = request.getfixturevalue(which)
    out = tmp_path
    run_scripts([cnn_command(out / "cnn", data_dir, 0, which, 1)], env=env)
    checkpoint = torch.load(out / "cnn" / "checkpoints" / "epoch1.pt", weights_only=True)
    assert checkpoint["architecture"]["in_channels"] == 3
    assert checkpoint["architecture"]["num_classes"] == (10 if which == "cifar10" else 100)
    run_scripts(
        [
            relax_command(
                out / "efcn", data_dir, out / "cnn" / "checkpoints", epochs=1, dataset=which
            )
        ],
        env=env,
    )
    rows = read_rows(out / "efcn" / "metrics.csv")
    cnn_rows = read_rows(out / "cnn" / "metrics.csv")
    assert float(rows[0]["test_accuracy"]) == float(cnn_rows[1]["test_accuracy"])
    assert len(rows) == 2 and rows[-1]["diverged"] == "0"


def test_translated_canvas_run_places_images_on_the_larger_canvas(tmp_path, fashion_dir, runs):
    canvas = ("--canvas-size", 36)
    run_scripts([cnn_command(tmp_path / "cnn", fashion_dir, 0, "fashion-mnist", 1, *canvas)])
    checkpoint = torch.load(tmp_path / "cnn" / "checkpoints" / "epoch1.pt", weights_only=True)
    assert checkpoint["architecture"]["image_size"] == 36
    run_scripts(
        [
            relax_command(
                tmp_path / "efcn",
                fashion_dir,
                tmp_path / "cnn" / "checkpoints",
                epochs=1,
                extra=canvas,
            )
        ]
    )
    rows = read_rows(tmp_path / "efcn" / "metrics.csv")
    cnn_rows = read_rows(tmp_path / "cnn" / "metrics.csv")
    assert float(rows[0]["test_accuracy"]) == float(cnn_rows[1]["test_accuracy"])
    assert (tmp_path / "cnn" / "metrics.csv").read_bytes() != (
        runs["cnn"] / "metrics.csv"
    ).read_bytes()


# -- offline ------------------------------------------------------------------------------------------------
def test_prepare_data_offline_without_the_debian_package_says_how_to_get_it(tmp_path):
    empty_package, data_dir = tmp_path / "package", tmp_path / "data"
    empty_package.mkdir()
    result = run_script(
        "prepare_data.py",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        data_dir,
        "--done",
        tmp_path / "fashion-mnist.ready",
        env={"NEEDLE_FASHION_MNIST_DIR": str(empty_package)},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "apt-get install dataset-fashion-mnist" in lines[0]
    assert str(data_dir / "FashionMNIST" / "raw") in lines[0]
    assert not (tmp_path / "fashion-mnist.ready").exists()
    assert not list((data_dir / "FashionMNIST").rglob("*-ubyte")), "no partial files left behind"
