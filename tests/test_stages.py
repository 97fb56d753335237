"""Every stage script runs end to end on the CPU, as the workflow runs it: `python workflow/scripts/X.py`.

Tiny fake Fashion-MNIST (200 training images, 20 of them held out for validation, 100 test images),
a Skinny CNN of width 4 and 1-3 epochs keep each run to a few seconds, most of it the import of
torch. Runs that do not depend on each other start two at a time; the module fixtures below are
the runs, the tests read their outputs. A tiny AlexNet goes through every stage script too.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CPU, PYTHON, SCRIPTS, run_script, run_scripts, script_env

from needle import checkpoints, embed
from needle import data as datasets
from needle.evaluation import evaluate
from needle.names import (
    EMBEDDING_COLUMNS,
    LANDSCAPE_COLUMNS,
    LANDSCAPE_PATH_KINDS,
    RUN_COLUMNS,
    run_columns,
)

pytestmark = pytest.mark.slow  # ~40 stage subprocesses: minutes on 2 shared cores

CNN_EPOCHS, CHECKPOINT_POINTS = 3, 3  # checkpoints at epochs 0, 1 and 3
RELAX_TIME, LATE, RELAX_EPOCHS = 1, 3, 2
VALIDATION = 20
# Tiny nets learn little in 3 epochs; the at-chance rule is specified in test_training.py and
# test_stage_errors.py, so these runs are never judged by it.
TRAINING = ("--lr", "0.1", "--batch-size", 50, "--eval-batch-size", 500)
NOT_JUDGED_AT_CHANCE = ("--divergence-chance-epochs", 10)
ARCH = {"model": "skinny", "in_channels": 1, "image_size": 28, "num_classes": 10, "width": 4}
CONV_LAYERS = ("conv1", "conv2", "conv3")

# The contract's command line of each script (beyond the shared groups, checked separately).
DATA = ("--dataset", "--data-dir", "--canvas-size", "--train-size", "--validation-size")
DATA += ("--test-size", "--seed")
MODEL = ("--model", "--width")
OPTIMISER = ("--lr", "--momentum", "--weight-decay", "--batch-size", "--eval-batch-size")
OPTIMISER += ("--shuffle", "--no-shuffle", "--precision")
DIVERGENCE = ("--on-divergence", "--divergence-loss-factor", "--divergence-chance-epochs")
RUNTIME = ("--device", "--threads")
TRAINING_GROUPS = DATA + MODEL + OPTIMISER + DIVERGENCE + RUNTIME
CONTRACT_FLAGS = {
    "prepare_data.py": ("--dataset", "--data-dir", "--done"),
    "train_cnn.py": TRAINING_GROUPS
    + ("--epochs", "--checkpoint-points", "--checkpoint-dir", "--metrics", "--resume-dir"),
    "embed.py": DATA
    + MODEL
    + RUNTIME
    + ("--arm", "--relax-time", "--checkpoint", "--check-images", "--embedded", "--record"),
    "relax.py": TRAINING_GROUPS
    + ("--arm", "--relax-time", "--start", "--epochs", "--metrics", "--final-weights")
    + ("--resume-dir",),
    "train_fcn.py": TRAINING_GROUPS
    + ("--fan-in", "--epochs", "--metrics", "--final-weights", "--resume-dir"),
    "landscape.py": DATA
    + MODEL
    + RUNTIME
    + ("--experiment", "--relax-times", "--cnn-checkpoints", "--efcn-finals", "--fcn-final")
    + ("--points", "--examples", "--eval-batch-size", "--output"),
    "parameter_counts.py": ("--experiment", "--dataset", "--canvas-size", *MODEL, "--output"),
}


def data_args(data_dir, seed=0, dataset="fashion-mnist", extra=()):
    return (
        *("--dataset", dataset, "--data-dir", data_dir, "--seed", seed, "--width", 4),
        *("--validation-size", VALIDATION, *CPU, *extra),
    )


def cnn_command(
    out: Path, data_dir, *, seed=0, dataset="fashion-mnist", epochs=CNN_EPOCHS, extra=()
):
    return (
        "train_cnn.py",
        *data_args(data_dir, seed, dataset),
        *TRAINING,
        *NOT_JUDGED_AT_CHANCE,
        *("--epochs", epochs, "--checkpoint-points", CHECKPOINT_POINTS),
        *("--checkpoint-dir", out / "checkpoints", "--metrics", out / "metrics.csv"),
        *extra,  # last: it overrides the settings above
    )


def embed_command(out: Path, data_dir, checkpoint: Path, *, arm="efcn", relax_time=RELAX_TIME,
                  seed=0, dataset="fashion-mnist", extra=()):  # fmt: skip
    return (
        "embed.py",
        *data_args(data_dir, seed, dataset, extra),
        *("--arm", arm, "--relax-time", relax_time, "--checkpoint", checkpoint),
        *("--embedded", out / "embedded.pt", "--record", out / "embedding.csv"),
    )


def relax_command(out: Path, data_dir, start: Path, *, arm="efcn", relax_time=RELAX_TIME,
                  epochs=RELAX_EPOCHS, seed=0, dataset="fashion-mnist", extra=()):  # fmt: skip
    return (
        "relax.py",
        *data_args(data_dir, seed, dataset),
        *TRAINING,
        *NOT_JUDGED_AT_CHANCE,
        *("--arm", arm, "--relax-time", relax_time, "--start", start, "--epochs", epochs),
        *("--metrics", out / "metrics.csv", "--final-weights", out / "final.pt"),
        *extra,  # last: it overrides the settings above
    )


def fcn_command(out: Path, data_dir, *, seed=0, epochs=2, extra=()):
    return (
        "train_fcn.py",
        *data_args(data_dir, seed),
        *TRAINING,
        *NOT_JUDGED_AT_CHANCE,
        *("--epochs", epochs),
        *("--metrics", out / "metrics.csv", "--final-weights", out / "final.pt"),
        *extra,  # last: it overrides the settings above
    )


def landscape_command(output: Path, data_dir, relax_times, cnn: Path, finals, fcn_final: Path,
                      extra=()):  # fmt: skip
    return (
        "landscape.py",
        *data_args(data_dir, extra=extra),
        *("--experiment", "tiny", "--relax-times", *relax_times),
        *("--cnn-checkpoints", *(cnn / "checkpoints" / f"epoch{t}.pt" for t in relax_times)),
        *("--efcn-finals", *finals, "--fcn-final", fcn_final),
        *("--points", 3, "--examples", 50, "--output", output),
    )


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- the runs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion_dir) -> dict[str, Path]:
    """CNN and FCN twice with seed 0 and once with seed 1, a CNN that diverges (recorded); the
    embeddings of their checkpoints; every relax arm from them; the landscape between them."""
    root = tmp_path_factory.mktemp("stages")
    out = {name: root / name for name in RUN_NAMES}
    diverging = ("--lr", "1e6", "--on-divergence", "record")
    run_scripts(
        [
            cnn_command(out["cnn"], fashion_dir),
            cnn_command(out["cnn_again"], fashion_dir),
            cnn_command(out["cnn_seed1"], fashion_dir, seed=1),
            cnn_command(out["cnn_diverged"], fashion_dir, extra=diverging),
            fcn_command(out["fcn"], fashion_dir),
            fcn_command(out["fcn_again"], fashion_dir),
            fcn_command(out["fcn_seed1"], fashion_dir, seed=1),
            # one epoch at a negligible lr: the final weights are the init, bounds and all
            fcn_command(out["fcn_init_real"], fashion_dir, epochs=1, extra=("--lr", "1e-12")),
            fcn_command(
                out["fcn_init_padded"],
                fashion_dir,
                epochs=1,
                extra=("--lr", "1e-12", "--fan-in", "padded"),
            ),
        ]
    )
    checkpoint = {
        name: out[name] / "checkpoints" / f"epoch{time}.pt"
        for name, time in (("cnn", RELAX_TIME), ("cnn_seed1", RELAX_TIME))
    }
    late = out["cnn"] / "checkpoints" / f"epoch{LATE}.pt"
    diverged_late = out["cnn_diverged"] / "checkpoints" / f"epoch{LATE}.pt"
    run_scripts(
        [
            embed_command(out["embed_efcn"], fashion_dir, checkpoint["cnn"]),
            embed_command(out["embed_elcn"], fashion_dir, checkpoint["cnn"], arm="elcn"),
            embed_command(out["embed_efcn_seed1"], fashion_dir, checkpoint["cnn_seed1"], seed=1),
            embed_command(out["embed_efcn_late"], fashion_dir, late, relax_time=LATE),
            embed_command(out["embed_diverged"], fashion_dir, diverged_late, relax_time=LATE),
        ]
    )
    embedded = {name: out[f"embed_{name}"] / "embedded.pt" for name in EMBEDDINGS}
    run_scripts(
        [
            relax_command(out["efcn"], fashion_dir, embedded["efcn"]),
            relax_command(out["efcn_again"], fashion_dir, embedded["efcn"]),
            relax_command(out["efcn_seed1"], fashion_dir, embedded["efcn_seed1"], seed=1),
            relax_command(out["elcn"], fashion_dir, embedded["elcn"], arm="elcn"),
            relax_command(out["control"], fashion_dir, checkpoint["cnn"], arm="cnn_continued"),
            relax_command(
                out["efcn_late"], fashion_dir, embedded["efcn_late"], relax_time=LATE, epochs=1
            ),
            relax_command(
                out["efcn_from_diverged"], fashion_dir, embedded["diverged"], relax_time=LATE
            ),
            relax_command(
                out["control_from_diverged"],
                fashion_dir,
                diverged_late,
                arm="cnn_continued",
                relax_time=LATE,
            ),
        ]
    )
    run_scripts(
        [
            landscape_command(
                out["landscape"] / "landscape.csv",
                fashion_dir,
                (RELAX_TIME, LATE),
                out["cnn"],
                (out["efcn"] / "final.pt", out["efcn_late"] / "final.pt"),
                out["fcn"] / "final.pt",
            ),
            landscape_command(
                out["landscape_diverged"] / "landscape.csv",
                fashion_dir,
                (LATE,),
                out["cnn_diverged"],
                (out["efcn_from_diverged"] / "final.pt",),
                out["fcn"] / "final.pt",
            ),
            (
                "parameter_counts.py",
                *("--experiment", "tiny", "--dataset", "fashion-mnist", "--width", 4),
                *("--output", out["parameter_counts"] / "parameter_counts.csv"),
            ),
        ]
    )
    return out


EMBEDDINGS = ("efcn", "elcn", "efcn_seed1", "efcn_late", "diverged")
RUN_NAMES = (
    *("cnn", "cnn_again", "cnn_seed1", "cnn_diverged"),
    *("fcn", "fcn_again", "fcn_seed1", "fcn_init_real", "fcn_init_padded"),
    *(f"embed_{name}" for name in EMBEDDINGS),
    *("efcn", "efcn_again", "efcn_seed1", "elcn", "control", "efcn_late"),
    *("efcn_from_diverged", "control_from_diverged"),
    *("landscape", "landscape_diverged", "parameter_counts"),
)


# -- every script explains itself and takes the contract's arguments -------------------------------------
def test_every_stage_script_prints_its_help_with_the_contract_flags_and_writes_nothing(tmp_path):
    names = sorted(path.name for path in SCRIPTS.glob("*.py"))
    processes = {
        name: subprocess.Popen(
            [PYTHON, str(SCRIPTS / name), "--help"],
            cwd=tmp_path,
            env=script_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0 and stdout.startswith("usage:"), (name, stderr[-2000:])
        for flag in CONTRACT_FLAGS.get(name, ()):
            assert re.search(rf"(?<![\w-]){flag}(?![\w-])", stdout), f"{name} lacks {flag}"
    assert set(CONTRACT_FLAGS) <= set(names)
    assert not list(tmp_path.iterdir()), "--help wrote files"


# -- CNN ---------------------------------------------------------------------------------------------------
def test_cnn_writes_one_metrics_row_per_epoch_with_the_contract_columns(runs):
    rows = read_rows(runs["cnn"] / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(CNN_EPOCHS + 1))
    assert list(rows[0]) == [
        "epoch",
        "epochs_since_relax",
        "train_loss",
        "train_accuracy",
        "validation_loss",
        "validation_accuracy",
        "test_loss",
        "test_accuracy",
        "diverged",
    ]
    for row in rows:
        for split in ("train", "validation", "test"):
            assert 0 <= float(row[f"{split}_accuracy"]) <= 1
            assert math.isfinite(float(row[f"{split}_loss"]))
        assert row["diverged"] == "0"
    assert not (runs["cnn"] / "resume").exists(), "a finished run leaves no resume state behind"


def test_cnn_checkpoints_hold_weights_and_optimizer_at_epoch_0_and_every_log_spaced_epoch(runs):
    folder = runs["cnn"] / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch0.pt", "epoch1.pt", "epoch3.pt"]
    payloads = {epoch: load(folder / f"epoch{epoch}.pt") for epoch in (0, 1, 3)}
    for epoch, payload in payloads.items():
        assert payload["epoch"] == epoch and payload["kind"] == "cnn"
        assert payload["architecture"] == ARCH and payload["diverged"] == 0
        assert set(payload["optimizer"]) == {"state", "param_groups"}
        assert payload["optimizer"]["param_groups"][0]["lr"] == 0.1
        assert all(isinstance(value, torch.Tensor) for value in payload["model"].values())
    # Epoch 0 is the seeded initialisation itself; training then moves the weights.
    torch.manual_seed(0)
    initial = checkpoints.build_cnn(ARCH).state_dict()
    assert all(torch.equal(initial[key], payloads[0]["model"][key]) for key in initial)
    assert not torch.equal(
        payloads[0]["model"]["conv1.weight"], payloads[3]["model"]["conv1.weight"]
    )


# -- embed -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arm", ["efcn", "elcn"])
def test_embed_saves_the_embedding_of_the_checkpoint_and_a_record_showing_it_is_exact(runs, arm):
    folder = runs[f"embed_{arm}"]
    record = pd.read_csv(folder / "embedding.csv")
    assert list(record.columns) == [c for c in EMBEDDING_COLUMNS if c != "experiment"]
    assert len(record) == 1
    row = record.iloc[0]
    assert (row["seed"], row["arm"], row["relax_time"]) == (0, arm, RELAX_TIME)
    assert row["images"] == VALIDATION, "held-out validation images"
    assert row["cnn_parameters"] == 670
    assert row["embedded_parameters"] == {"efcn": 746494, "elcn": 36478}[arm]
    assert 0 < row["max_abs_logit"] < 1e3
    assert row["max_abs_logit_difference_fp64"] <= 1e-9 * max(1.0, row["max_abs_logit"])
    assert row["max_abs_logit_difference_fp32"] <= 1e-4 * max(1.0, row["max_abs_logit"])

    embedded = load(folder / "embedded.pt")
    assert embedded["kind"] == arm and embedded["relax_time"] == RELAX_TIME
    assert embedded["architecture"] == ARCH and embedded["diverged"] == 0
    assert embedded["dense_layout"] == embed.DENSE_LAYOUT
    checkpoint = load(runs["cnn"] / "checkpoints" / f"epoch{RELAX_TIME}.pt")
    assert all(torch.equal(checkpoint["model"][k], v) for k, v in embedded["cnn_model"].items())
    cnn = checkpoints.build_cnn(ARCH)
    cnn.load_state_dict(checkpoint["model"])
    expected = (embed.to_efcn if arm == "efcn" else embed.to_elcn)(cnn).state_dict()
    assert all(torch.equal(expected[key], embedded["model"][key]) for key in expected)


# -- relax -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arm", ["efcn", "elcn"])
def test_an_embedded_arm_logs_total_epochs_and_the_dense_probe_columns(runs, arm):
    rows = read_rows(runs[arm] / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == [RELAX_TIME + e for e in range(RELAX_EPOCHS + 1)]
    assert [int(row["epochs_since_relax"]) for row in rows] == list(range(RELAX_EPOCHS + 1))
    assert tuple(rows[0]) == run_columns(CONV_LAYERS)
    for column in ("distance_from_start", "deviation/conv1", "displacement_offsubspace/all"):
        assert column in rows[0]
    start, last = rows[0], rows[-1]
    # At the start the net is exactly the CNN: on the subspace, nothing travelled.
    assert float(start["deviation/all"]) == pytest.approx(0, abs=1e-6)
    assert float(start["distance_from_start"]) == 0
    assert float(start["displacement_offsubspace/all"]) == 0
    assert float(last["distance_from_start"]) > 0
    assert 0 < float(last["displacement_offsubspace/conv1"]) <= 1
    cnn_row = read_rows(runs["cnn"] / "metrics.csv")[RELAX_TIME]
    for column in ("validation_accuracy", "test_accuracy"):
        assert float(start[column]) == float(cnn_row[column]), "the embedding is the CNN"
    assert float(start["projected_test_accuracy"]) == float(cnn_row["test_accuracy"])
    final = load(runs[arm] / "final.pt")
    assert final["kind"] == arm and final["relax_time"] == RELAX_TIME
    assert final["epoch"] == RELAX_TIME + RELAX_EPOCHS and final["diverged"] == 0
    assert final["dense_layout"] == embed.DENSE_LAYOUT


def test_the_control_is_the_cnn_trained_on_and_logs_no_probe(runs):
    rows = read_rows(runs["control"] / "metrics.csv")
    assert tuple(rows[0]) == RUN_COLUMNS
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    final = load(runs["control"] / "final.pt")
    assert final["kind"] == "cnn_continued" and "dense_layout" not in final


def test_the_control_equals_the_cnn_at_every_epoch_both_trained(runs):
    """Momentum 0 and the shared lr: the control's fresh optimiser is the CNN's own, and the batch
    order of total epoch e is the CNN's, so the two runs are the same run from t_w on."""
    cnn = {row["epoch"]: row for row in read_rows(runs["cnn"] / "metrics.csv")}
    control = read_rows(runs["control"] / "metrics.csv")
    for row in control[1:]:
        both = {key: value for key, value in row.items() if key != "epochs_since_relax"}
        assert both == {key: cnn[row["epoch"]][key] for key in both}, row["epoch"]
    start = control[0]  # a full evaluation of the checkpoint the CNN logged at epoch 1
    for column in ("validation_loss", "validation_accuracy", "test_loss", "test_accuracy"):
        assert start[column] == cnn["1"][column]


# -- divergence under record ---------------------------------------------------------------------------
def test_a_diverged_cnn_is_recorded_and_its_unreached_checkpoints_hold_its_last_weights(runs):
    rows = read_rows(runs["cnn_diverged"] / "metrics.csv")
    assert [row["diverged"] for row in rows] == ["0", "1"], "stops at the first non-finite loss"
    folder = runs["cnn_diverged"] / "checkpoints"
    payloads = {epoch: load(folder / f"epoch{epoch}.pt") for epoch in (0, 1, 3)}
    assert [payloads[epoch]["diverged"] for epoch in (0, 1, 3)] == [0, 1, 1]
    assert payloads[3]["epoch"] == 3
    for key, tensor in payloads[1]["model"].items():
        same = torch.allclose(payloads[3]["model"][key], tensor, rtol=0, atol=0, equal_nan=True)
        assert same, key


def test_relax_runs_from_a_diverged_checkpoint_record_one_row_with_code_4(runs):
    assert load(runs["embed_diverged"] / "embedded.pt")["diverged"] == 1, "carried over"
    record = pd.read_csv(runs["embed_diverged"] / "embedding.csv").iloc[0]
    assert math.isnan(record["max_abs_logit_difference_fp64"]), "no claim of exactness for NaN"
    for name in ("efcn_from_diverged", "control_from_diverged"):
        rows = read_rows(runs[name] / "metrics.csv")
        assert [(row["epoch"], row["diverged"]) for row in rows] == [(str(LATE), "4")], name
        assert load(runs[name] / "final.pt")["diverged"] == 4


# -- the standard FCN -------------------------------------------------------------------------------------------
def test_standard_fcn_trains_from_a_fresh_init_and_logs_its_deviation(runs):
    rows = read_rows(runs["fcn"] / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert tuple(rows[0]) == run_columns(CONV_LAYERS)
    assert float(rows[0]["deviation/all"]) > 0.5, "a random dense init is far from any CNN"
    final = load(runs["fcn"] / "final.pt")
    assert final["kind"] == "fcn" and final["epoch"] == 2 and "relax_time" not in final


def test_the_padded_fan_in_gives_the_authors_smaller_init_bounds(runs):
    """conv1 of Fashion-MNIST: 1x28x28 real inputs, 1x32x32 with the padding of 2."""
    real = load(runs["fcn_init_real"] / "final.pt")["model"]["conv1.weight"].abs().max()
    padded = load(runs["fcn_init_padded"] / "final.pt")["model"]["conv1.weight"].abs().max()
    assert 1 / 32 < real <= 1 / 28 + 1e-6
    assert padded <= 1 / 32 + 1e-6


# -- determinism ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["cnn", "efcn", "fcn"])
def test_the_same_seed_gives_byte_identical_csvs_and_another_seed_does_not(runs, stage):
    first = (runs[stage] / "metrics.csv").read_bytes()
    assert (runs[f"{stage}_again"] / "metrics.csv").read_bytes() == first
    assert (runs[f"{stage}_seed1"] / "metrics.csv").read_bytes() != first


def test_the_same_seed_gives_identical_checkpoint_tensors(runs):
    for name in ("epoch0.pt", "epoch1.pt", "epoch3.pt"):
        a = load(runs["cnn"] / "checkpoints" / name)
        b = load(runs["cnn_again"] / "checkpoints" / name)
        assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


# -- landscape and parameter counts ----------------------------------------------------------------------------
def test_the_landscape_has_every_path_from_alpha_0_to_1_with_explicit_columns(runs):
    table = pd.read_csv(runs["landscape"] / "landscape.csv")
    assert list(table.columns) == list(LANDSCAPE_COLUMNS)
    text = pd.read_csv(runs["landscape"] / "landscape.csv", dtype=str, keep_default_na=False)
    ends = ["path_kind", "start_arm", "start_relax_time", "end_arm", "end_relax_time"]
    assert sorted(text[ends].drop_duplicates().itertuples(index=False, name=None)) == [
        ("embedding_to_final", "efcn", "1", "efcn", "1"),
        ("embedding_to_final", "efcn", "3", "efcn", "3"),
        ("final_to_fcn", "efcn", "1", "fcn", ""),
        ("final_to_fcn", "efcn", "3", "fcn", ""),
        ("final_to_final", "efcn", "1", "efcn", "3"),
    ]
    assert set(table["path_kind"]) == set(LANDSCAPE_PATH_KINDS)
    assert sorted(set(table["alpha"])) == [0, 0.5, 1]
    assert set(table["split"]) == {"train", "test"}
    assert (table["diverged"] == 0).all()
    # The end of one path is the start of the next: the same weights give the same values.
    end = table.query("path_kind == 'embedding_to_final' and start_relax_time == 1 and alpha == 1")
    start = table.query("path_kind == 'final_to_fcn' and start_relax_time == 1 and alpha == 0")
    assert list(end["loss"]) == list(start["loss"]) and len(end) == 2


def test_a_landscape_path_with_a_diverged_end_is_marked(runs):
    table = pd.read_csv(runs["landscape_diverged"] / "landscape.csv")
    assert set(table["path_kind"]) == {"embedding_to_final", "final_to_fcn"}
    assert (table["diverged"] == 1).all()


def test_parameter_counts_are_the_networks_sizes(runs):
    table = pd.read_csv(runs["parameter_counts"] / "parameter_counts.csv")
    assert table.to_dict("records") == [
        dict(
            experiment="tiny",
            dataset="fashion-mnist",
            model="skinny",
            width=4,
            network=net,
            parameters=count,
        )  # fmt: skip
        for net, count in (("cnn", 670), ("elcn", 36478), ("efcn", 746494), ("fcn", 746494))
    ]


# -- other datasets and the translated task ---------------------------------------------------------------------
@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_runs_through_cnn_embed_and_relax(request, tmp_path, which):
    data_dir, env = request.getfixturevalue(which)
    run_scripts([cnn_command(tmp_path / "cnn", data_dir, dataset=which, epochs=1)], env=env)
    checkpoint = tmp_path / "cnn" / "checkpoints" / "epoch1.pt"
    arch = load(checkpoint)["architecture"]
    assert arch["in_channels"] == 3 and arch["num_classes"] == (10 if which == "cifar10" else 100)
    run_scripts([embed_command(tmp_path / "embed", data_dir, checkpoint, dataset=which)], env=env)
    start = tmp_path / "embed" / "embedded.pt"
    run_scripts(
        [relax_command(tmp_path / "efcn", data_dir, start, epochs=1, dataset=which)], env=env
    )
    rows = read_rows(tmp_path / "efcn" / "metrics.csv")
    cnn_rows = read_rows(tmp_path / "cnn" / "metrics.csv")
    assert rows[0]["test_accuracy"] == cnn_rows[1]["test_accuracy"]
    assert len(rows) == 2 and rows[-1]["diverged"] == "0"


def test_a_canvas_run_trains_and_evaluates_on_images_placed_on_the_canvas(tmp_path, fashion_dir):
    canvas = ("--canvas-size", 36)
    run_scripts([cnn_command(tmp_path / "cnn", fashion_dir, epochs=1, extra=canvas)])
    checkpoint = load(tmp_path / "cnn" / "checkpoints" / "epoch0.pt")
    assert checkpoint["architecture"]["image_size"] == 36
    # The run's epoch-0 test loss is that of its initial CNN on the canvas test images.
    data = datasets.load_dataset(
        "fashion-mnist", fashion_dir, validation_size=VALIDATION, canvas_size=36, seed=0
    )
    cnn = checkpoints.build_cnn(checkpoint["architecture"])
    cnn.load_state_dict(checkpoint["model"])
    loss, accuracy = evaluate(cnn, data.test_x, data.test_y, 500)
    row = read_rows(tmp_path / "cnn" / "metrics.csv")[0]
    assert float(row["test_loss"]) == pytest.approx(loss, rel=1e-6)
    assert float(row["test_accuracy"]) == accuracy


# -- offline ------------------------------------------------------------------------------------------------
def test_prepare_data_offline_without_the_debian_package_says_how_to_get_it(tmp_path):
    empty_package, data_dir = tmp_path / "package", tmp_path / "data"
    empty_package.mkdir()
    result = run_script(
        "prepare_data.py",
        *("--dataset", "fashion-mnist", "--data-dir", data_dir),
        *("--done", tmp_path / "fashion-mnist.ready"),
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


# -- a tiny AlexNet through every stage script ------------------------------------------------------------------
def test_a_tiny_alexnet_goes_through_every_stage_script(tmp_path, fashion_dir):
    """AlexNet on 1x28x28 Fashion-MNIST (its dropout included): CNN, both embeddings, every relax
    arm, the standard FCN, the landscape and the parameter counts."""
    alexnet = ("--model", "alexnet")
    out = {name: tmp_path / name for name in ("cnn", "efcn", "elcn", "control", "fcn", "embed")}
    run_scripts([cnn_command(out["cnn"], fashion_dir, epochs=2, extra=alexnet)])
    checkpoint = out["cnn"] / "checkpoints" / f"epoch{RELAX_TIME}.pt"
    assert load(checkpoint)["architecture"]["model"] == "alexnet"
    run_scripts(
        [
            embed_command(out["embed"] / "efcn", fashion_dir, checkpoint, extra=alexnet),
            embed_command(
                out["embed"] / "elcn", fashion_dir, checkpoint, arm="elcn", extra=alexnet
            ),
            fcn_command(out["fcn"], fashion_dir, epochs=1, extra=alexnet),
        ]
    )
    run_scripts(
        [
            relax_command(
                out[arm],
                fashion_dir,
                out["embed"] / arm / "embedded.pt",
                arm=arm,
                epochs=1,
                extra=alexnet,
            )  # fmt: skip
            for arm in ("efcn", "elcn")
        ]
        + [
            relax_command(
                out["control"],
                fashion_dir,
                checkpoint,
                arm="cnn_continued",
                epochs=1,
                extra=alexnet,
            ),  # fmt: skip
        ]
    )
    run_scripts(
        [
            landscape_command(
                tmp_path / "landscape.csv",
                fashion_dir,
                (RELAX_TIME,),
                out["cnn"],
                (out["efcn"] / "final.pt",),
                out["fcn"] / "final.pt",
                extra=alexnet,
            ),
            (
                "parameter_counts.py",
                *("--experiment", "tiny", "--dataset", "fashion-mnist", *alexnet),
                *("--output", tmp_path / "parameter_counts.csv"),
            ),
        ]
    )
    conv_layers = tuple(f"conv{index}" for index in range(1, 6))
    for arm in ("efcn", "elcn"):
        record = pd.read_csv(out["embed"] / arm / "embedding.csv").iloc[0]
        assert record["max_abs_logit_difference_fp64"] <= 1e-9 * max(1, record["max_abs_logit"])
        rows = read_rows(out[arm] / "metrics.csv")
        assert tuple(rows[0]) == run_columns(conv_layers) and len(rows) == 2
    cnn = {row["epoch"]: row for row in read_rows(out["cnn"] / "metrics.csv")}
    control = read_rows(out["control"] / "metrics.csv")
    assert control[1]["test_loss"] == cnn["2"]["test_loss"], "dropout too is fixed by (seed, e)"
    assert control[1]["train_loss"] == cnn["2"]["train_loss"]
    assert tuple(read_rows(out["fcn"] / "metrics.csv")[0]) == run_columns(conv_layers)
    assert set(pd.read_csv(tmp_path / "landscape.csv")["path_kind"]) == {
        "embedding_to_final",
        "final_to_fcn",
    }
    counts = pd.read_csv(tmp_path / "parameter_counts.csv")
    assert counts["width"].isna().all() and (counts["model"] == "alexnet").all()
