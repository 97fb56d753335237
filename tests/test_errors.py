"""Bad input stops with one line that names what is wrong and how to fix it, and touches no results.

Every case starts from a results folder that already holds files, and proves afterwards that each
of them still has the same bytes and modification time (and, where nothing should be written at
all, that no file was added).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import (
    CPU,
    run_script,
    run_scripts,
    script_env,
    snakemake_command,
    snapshot,
    tiny_config,
)

from needle import checkpoints, protocol, summary, tables

pytestmark = pytest.mark.slow  # ~20 subprocesses (stage scripts and snakemake -n)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and one error line, the last thing on stderr (progress bars may precede it)."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.stderr[-2000:]
    line = lines[-1]
    assert line.startswith("needle: error: ")
    for needle in needles:
        assert needle in line, line
    return line


def populated_results(folder: Path) -> dict:
    """A results folder as an earlier finished run left it; returns its snapshot."""
    run = folder / "efcn" / "relax_at_epoch1"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,test_accuracy\n1,0.5\n")
    (run / "final.pt").write_bytes(b"earlier weights")
    (folder / "cnn").mkdir()
    (folder / "cnn" / "metrics.csv").write_text("epoch,test_accuracy\n0,0.1\n")
    return snapshot(folder)


# -- checkpoints given to relax.py ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn(tmp_path_factory, fashion_dir) -> Path:
    out = tmp_path_factory.mktemp("cnn")
    run_script(
        "train_cnn.py",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        fashion_dir,
        "--width",
        4,
        "--epochs",
        1,
        "--checkpoint-points",
        2,
        "--batch-size",
        50,
        *CPU,
        "--checkpoint-dir",
        out / "checkpoints",
        "--metrics",
        out / "metrics.csv",
    )
    return out


def bad_checkpoints(cnn: Path, folder: Path) -> dict[str, Path]:
    good = cnn / "checkpoints" / "epoch1.pt"
    folder.mkdir()
    paths = {
        name: folder / f"{name}.pt"
        for name in (
            "truncated",
            "corrupt",
            "not_needle",
            "wrong_width",
            "wrong_tensors",
            "wrong_epoch",
        )
    }
    content = good.read_bytes()
    paths["truncated"].write_bytes(content[: len(content) // 2])
    paths["corrupt"].write_bytes(b"\x89 this is not a checkpoint \x00" * 64)
    torch.save({"weights": torch.zeros(3)}, paths["not_needle"])
    payload = torch.load(good, weights_only=True)
    wider = dict(payload["architecture"], width=8)
    checkpoints.save(
        dict(payload, architecture=wider, model=protocol.build_cnn(wider).state_dict()),
        paths["wrong_width"],
    )
    # Recorded architecture right, tensors of another net: the load itself must say so.
    checkpoints.save(
        dict(payload, model=protocol.build_cnn(wider).state_dict()), paths["wrong_tensors"]
    )
    checkpoints.save(dict(payload, epoch=0), paths["wrong_epoch"])
    return paths


EXPECTED_CHECKPOINT_ERRORS = {
    "truncated": ("is unreadable (truncated or corrupt", "delete it and rerun"),
    "corrupt": ("is unreadable (truncated or corrupt", "delete it and rerun"),
    "not_needle": ("is not a needle checkpoint", "delete it and rerun"),
    "wrong_width": (
        "was made for another architecture: width=8 (config says 4)",
        "fix the config or delete",
    ),
    "wrong_tensors": (
        "does not fit the configured network",
        "conv1.weight",
        "fix the config or delete",
    ),
    "wrong_epoch": ("holds epoch 0, not relax time 1",),
}


def test_relax_refuses_bad_checkpoints_with_one_line_and_leaves_results_alone(
    cnn, tmp_path, fashion_dir
):
    paths = bad_checkpoints(cnn, tmp_path / "bad")
    results = tmp_path / "results"
    before = populated_results(results)
    commands = [
        (
            "relax.py",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            fashion_dir,
            "--width",
            4,
            "--epochs",
            1,
            *CPU,
            "--arm",
            arm,
            "--relax-time",
            1,
            "--checkpoint",
            paths[name],
            "--metrics",
            results / "efcn" / "relax_at_epoch1" / "metrics.csv",
            "--final-weights",
            results / "efcn" / "relax_at_epoch1" / "final.pt",
        )
        for name, arm in zip(EXPECTED_CHECKPOINT_ERRORS, ["efcn", "elcn"] * 3)
    ]
    outcomes = run_scripts(commands, check=False)
    for name, result in zip(EXPECTED_CHECKPOINT_ERRORS, outcomes):
        assert_one_line_error(result, str(paths[name]), *EXPECTED_CHECKPOINT_ERRORS[name])
    assert snapshot(results) == before
    assert snapshot(tmp_path / "bad").keys() == {f"{name}.pt" for name in paths}


# -- divergence ----------------------------------------------------------------------------------------
def test_divergence_fails_clearly_or_is_recorded_and_left_out_of_the_summary(
    cnn, tmp_path, fashion_dir
):
    results = tmp_path / "results"
    before = populated_results(results)
    out = {mode: results / "efcn" / f"relax_at_epoch1_{mode}" for mode in ("fail", "record")}
    fail, record = run_scripts(
        [
            (
                "relax.py",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                fashion_dir,
                "--width",
                4,
                "--epochs",
                3,
                "--lr",
                "1e6",
                "--batch-size",
                50,
                *CPU,
                "--arm",
                "efcn",
                "--relax-time",
                1,
                "--checkpoint",
                cnn / "checkpoints" / "epoch1.pt",
                "--on-divergence",
                mode,
                "--metrics",
                out[mode] / "metrics.csv",
                "--final-weights",
                out[mode] / "final.pt",
            )
            for mode in ("fail", "record")
        ],
        check=False,
    )
    assert_one_line_error(
        fail, "diverged at epoch", "(loss nan)", "lower lr", "on_divergence: record"
    )
    assert not [path for path in out["fail"].rglob("*") if path.is_file()], (
        "a failed run leaves neither outputs nor resume state"
    )
    assert record.returncode == 0, record.stderr[-2000:]
    assert "diverged at epoch" in record.stderr
    rows = pd.read_csv(out["record"] / "metrics.csv")
    assert list(rows["diverged"]) == [0, 1], "training stops at the first non-finite loss"
    assert torch.load(out["record"] / "final.pt", weights_only=True)["diverged"] == 1
    assert {k: v for k, v in snapshot(results).items() if k in before} == before

    identity = {"experiment": "tiny", "dataset": "fashion-mnist", "model": "skinny", "seed": 0}
    runs = [
        (dict(identity, arm="cnn", relax_time=None), pd.read_csv(cnn / "metrics.csv")),
        (dict(identity, arm="efcn", relax_time=1), rows),
    ]
    table = summary.summarize(tables.tidy_experiment(runs)).iloc[0]
    assert table["runs"] == 2 and table["diverged_runs"] == 1
    assert table["diverged_run_list"] == "efcn/tw1/seed0"
    assert pd.isna(table["best_efcn_mean"]), "a diverged run is no result"
    assert table["claim4_tw_without_results"] == "1"
    assert table["cnn_seeds"] == 1


def test_a_diverging_cnn_fails_even_under_record_and_says_which_setting_to_change(
    tmp_path, fashion_dir
):
    results = tmp_path / "results"
    before = populated_results(results)
    result = run_script(
        "train_cnn.py",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        fashion_dir,
        "--width",
        4,
        "--epochs",
        2,
        "--lr",
        "1e6",
        "--batch-size",
        50,
        "--on-divergence",
        "record",
        *CPU,
        "--checkpoint-dir",
        results / "cnn" / "checkpoints",
        "--metrics",
        results / "cnn" / "metrics.csv",
        check=False,
    )
    assert_one_line_error(result, "CNN diverged at epoch", "cnn.lr")
    assert snapshot(results) == before, "no checkpoints, metrics or resume state of a failed CNN"


# -- final weights given to interpolate.py ------------------------------------------------------------------
def test_interpolate_refuses_final_weights_written_with_another_dense_layout(
    cnn, tmp_path, fashion_dir
):
    data = ("--dataset", "fashion-mnist", "--data-dir", fashion_dir, "--width", 4)
    run = tmp_path / "relax"
    run_script(
        "relax.py",
        *data,
        "--epochs",
        1,
        "--batch-size",
        50,
        *CPU,
        "--arm",
        "efcn",
        "--relax-time",
        1,
        "--checkpoint",
        cnn / "checkpoints" / "epoch1.pt",
        "--metrics",
        run / "metrics.csv",
        "--final-weights",
        run / "final.pt",
    )
    payload = torch.load(run / "final.pt", weights_only=True)
    payload["dense_layout"] = "dense2d-v1"  # what an older needle wrote: rows in (o, i, j) order
    old = tmp_path / "old_final.pt"
    torch.save(payload, old)
    results = tmp_path / "results"
    before = populated_results(results)
    result = run_scripts(
        [
            (
                "interpolate.py",
                *data,
                "--experiment",
                "tiny",
                "--relax-times",
                1,
                "--cnn-checkpoints",
                cnn / "checkpoints" / "epoch1.pt",
                "--efcn-finals",
                run / "final.pt",
                "--fcn-final",
                old,
                "--points",
                2,
                "--examples",
                10,
                *CPU,
                "--output",
                results / "landscape.csv",
            )
        ],
        check=False,
    )[0]
    assert_one_line_error(
        result, str(old), "another layout", "'dense2d-v1'", "rerun the relax / train_fcn rule"
    )
    assert snapshot(results) == before


# -- config errors, before any job runs ---------------------------------------------------------------------
def _set(path: str, value):
    def change(config):
        *parents, key = path.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value

    return change


CONFIG_ERRORS = {
    # case: (change, words the output must contain)
    "lr is not a number": (
        _set("experiments.tiny.cnn.lr", "fast"),
        ["'fast' is not of type 'number'", "['lr']"],
    ),
    "negative epochs": (
        _set("experiments.tiny.relax.epochs", -3),
        ["-3 is less than the minimum", "['epochs']"],
    ),
    "unknown key": (_set("experiments.tiny.widht", 8), ["'widht' was unexpected"]),
    "unknown top-level key": (_set("thread", 2), ["'thread' was unexpected"]),
    "width 0": (
        _set("experiments.tiny.width", 0),
        ["0 is less than the minimum of 1", "['width']"],
    ),
    "relax time beyond the CNN": (
        _set("experiments.tiny.relax.relax_times", [7]),
        ["experiments.tiny.relax.relax_times [7] are not CNN checkpoint epochs", "[0, 1, 3]"],
    ),
    "relax time not a checkpoint": (
        _set("experiments.tiny.relax.relax_times", [2]),
        ["experiments.tiny.relax.relax_times [2] are not CNN checkpoint epochs"],
    ),
    "train_size above the dataset": (
        _set("experiments.tiny.train_size", 70000),
        ["experiments.tiny.train_size = 70000 exceeds the 60000 images"],
    ),
    "eFCN too big": (
        _set("max_memory_gb", 0.001),
        [
            "experiments.tiny: training its efcn needs about 9 MiB, more than the 1 MiB of max_memory_gb",
            "raise max_memory_gb",
        ],
    ),
    "landscape without efcn": (
        _set("experiments.tiny.landscape.relax_times", [3]),
        ["experiments.tiny.landscape.relax_times [3] are not relax times"],
    ),
}


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory, fashion_dir) -> dict:
    """``snakemake -n`` on each bad config, two at a time; each in a folder with earlier results."""
    root = tmp_path_factory.mktemp("configs")
    outcomes, processes = {}, []
    base = tiny_config(fashion_dir)
    for index, (case, (change, _)) in enumerate(CONFIG_ERRORS.items()):
        folder = root / f"case{index}"
        config = copy.deepcopy(base)
        change(config)
        (folder / "results" / "tiny").mkdir(parents=True)
        before = populated_results(folder / "results" / "tiny" / "seed0")
        (folder / "bad.yaml").write_text(yaml.safe_dump(config))
        processes.append(
            (case, folder, before, snakemake_command(folder, folder / "bad.yaml", "-n"))
        )
    running = []
    for item in processes + [None, None]:
        if item is not None:
            case, folder, before, command = item
            running.append(
                (
                    case,
                    folder,
                    before,
                    subprocess.Popen(
                        command,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                        env=script_env(),
                    ),
                )
            )
        if len(running) == 2 or (item is None and running):
            case, folder, before, process = running.pop(0)
            output, _ = process.communicate(timeout=300)
            outcomes[case] = (
                process.returncode,
                output,
                before,
                snapshot(folder / "results" / "tiny" / "seed0"),
            )
    return outcomes


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_a_bad_config_is_rejected_before_any_job_runs_naming_the_key(config_runs, case):
    returncode, output, before, after = config_runs[case]
    assert returncode != 0, output[-2000:]
    for words in CONFIG_ERRORS[case][1]:
        assert words in output, output[-3000:]
    assert "Job stats" not in output and "rule train_cnn" not in output, "a job was scheduled"
    assert after == before


def test_missing_dataset_offline_names_the_fix_through_the_workflow(tmp_path):
    empty_package = tmp_path / "package"
    empty_package.mkdir()
    config = tiny_config(tmp_path / "data")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    before = populated_results(tmp_path / "results" / "tiny" / "seed0")
    result = subprocess.run(
        snakemake_command(
            tmp_path,
            tmp_path / "config.yaml",
            "--cores",
            1,
            str(tmp_path / "data" / "fashion-mnist.ready"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        env=script_env({"NEEDLE_FASHION_MNIST_DIR": str(empty_package)}),
    )
    assert result.returncode != 0
    log = (tmp_path / "logs" / "prepare_data" / "fashion-mnist.log").read_text()
    lines = log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("needle: error: "), log
    assert "apt-get install dataset-fashion-mnist" in lines[0]
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in lines[0]
    assert "apt-get install dataset-fashion-mnist" in result.stdout + result.stderr, (
        "the failed log is shown"
    )
    assert snapshot(tmp_path / "results" / "tiny" / "seed0") == before
    assert not (tmp_path / "data" / "fashion-mnist.ready").exists()
