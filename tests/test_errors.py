"""The workflow facing a hostile or careless user: every bad config value stops before any job runs
with one line naming the key, no config value reaches a shell unquoted, and no per-run table is
lost behind a newer aggregate.

Stage-level bad input (checkpoints, divergence, final weights) is specified in
test_stage_errors.py. Every case that runs Snakemake starts from a results folder that already
holds files, and proves afterwards that each still has the same bytes and modification time.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import (
    job_counts,
    populated_results,
    run_script,
    snakemake_command,
    snapshot,
    tiny_config,
)
from fake_datasets import write_fake_fashion_mnist
from snakemake.utils import validate

from needle import schema
from needle.config_checks import check_config, check_schema
from needle.errors import NeedleError


def _set(path: str, value):
    """A change of the tiny config: the value at a dotted path (created if missing)."""

    def change(config):
        *parents, key = path.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value

    return change


def _rename_experiment(name):
    def change(config):
        config["experiments"] = {name: config["experiments"].pop("tiny")}

    return change


def _chain(*changes):
    def change(config):
        for one in changes:
            one(config)

    return change


TINY = "experiments.tiny"
# case: (change to the tiny config, words the one error line must contain)
CONFIG_CASES = {
    "integer written as a float": (
        _set(f"{TINY}.cnn.checkpoint_points", 3.0),
        [f"{TINY}.cnn.checkpoint_points = 3.0 is not an integer (write 3)"],
    ),
    "integer subset size written as a float": (
        _set(f"{TINY}.train_size", 1e3),
        [f"{TINY}.train_size = 1000.0 is not an integer or null"],
    ),
    "true where an integer is meant": (
        _set(f"{TINY}.width", True),
        [f"{TINY}.width = True is not an integer"],
    ),
    "NaN learning rate": (
        _set(f"{TINY}.optimiser.lr", float("nan")),
        [f"{TINY}.optimiser.lr = nan is not a finite number"],
    ),
    "infinite loss factor": (
        _set(f"{TINY}.divergence.loss_factor", float("inf")),
        [f"{TINY}.divergence.loss_factor = inf is not a finite number"],
    ),
    "learning rate not a number": (
        _set(f"{TINY}.optimiser.lr", "fast"),
        [f"{TINY}.optimiser.lr = 'fast' is not a finite number"],
    ),
    "zero learning rate": (
        _set(f"{TINY}.optimiser.lr", 0),
        [f"{TINY}.optimiser.lr", "0 is less than or equal to the minimum of 0"],
    ),
    "momentum of one": (
        _set(f"{TINY}.optimiser.momentum", 1.0),
        [f"{TINY}.optimiser.momentum", "maximum of 1"],
    ),
    "seed beyond 2^31 - 1": (
        _set(f"{TINY}.seeds", [0, 2**64]),
        [f"{TINY}.seeds[1]", "18446744073709551616 is greater than the maximum of 2147483647"],
    ),
    "negative seed": (_set(f"{TINY}.seeds", [-1]), [f"{TINY}.seeds[0]", "-1 is less than"]),
    "repeated seed": (_set(f"{TINY}.seeds", [0, 0]), [f"{TINY}.seeds", "non-unique"]),
    "integer experiment name": (_rename_experiment(7), ["experiments: the name 7 is not allowed"]),
    "experiment name with a space": (
        _rename_experiment("my run"),
        ["experiments: the name 'my run' is not allowed"],
    ),
    "experiment name of the sweep folder": (
        _rename_experiment("sweep"),
        ["experiments.sweep: the name 'sweep' is reserved"],
    ),
    "unknown key": (
        _set(f"{TINY}.widht", 8),
        [f"{TINY}: unknown key 'widht' (did you mean 'width'?)"],
    ),
    "unknown top-level key": (
        _set("thread", 2),
        ["unknown key 'thread' (did you mean 'threads'?)"],
    ),
    "key of the old schema": (_set(f"{TINY}.cnn.lr", 0.1), [f"{TINY}.cnn: unknown key 'lr'"]),
    "missing dataset": (
        lambda config: config["experiments"]["tiny"].pop("dataset"),
        [f"{TINY}: 'dataset' is a required property"],
    ),
    "unknown dataset": (
        _set(f"{TINY}.dataset", "mnist"),
        [f"{TINY}.dataset = 'mnist' is not one of"],
    ),
    "unknown arm": (_set(f"{TINY}.relax.arms", ["cnn"]), [f"{TINY}.relax.arms[0] = 'cnn'"]),
    "no relax time": (_set(f"{TINY}.relax.relax_times", []), [f"{TINY}.relax.relax_times = []"]),
    "negative epochs": (_set(f"{TINY}.relax.epochs", -3), [f"{TINY}.relax.epochs", "-3 is less"]),
    "width 0": (_set(f"{TINY}.width", 0), [f"{TINY}.width", "0 is less than the minimum of 1"]),
    "newline in data_dir": (_set("data_dir", "data\nrm -rf x"), ["data_dir = 'data\\nrm -rf x'"]),
    "data_dir read as an option": (
        _set("data_dir", "--help"),
        ["data_dir = '--help' is not allowed"],
    ),
    "device that does not exist": (_set("device", "gpu"), ["device = 'gpu' is not allowed"]),
    "relax time beyond the CNN": (
        _set(f"{TINY}.relax.relax_times", [7]),
        [f"{TINY}.relax.relax_times [7] are not CNN checkpoint epochs", "[0, 1, 3]"],
    ),
    "relax time between checkpoints": (
        _set(f"{TINY}.relax.relax_times", [2]),
        [f"{TINY}.relax.relax_times [2] are not CNN checkpoint epochs"],
    ),
    "training subset above the dataset": (
        _set(f"{TINY}.train_size", 70000),
        [f"{TINY}: validation_size (0) + train_size (70000) exceeds the 60000 training images"],
    ),
    "validation split and subset above the dataset": (
        _chain(_set(f"{TINY}.validation_size", 30000), _set(f"{TINY}.train_size", 40000)),
        [f"{TINY}: validation_size (30000) + train_size (40000) exceeds"],
    ),
    "test subset above the dataset": (
        _set(f"{TINY}.test_size", 20000),
        [f"{TINY}.test_size = 20000 exceeds the 10000 test images"],
    ),
    "canvas smaller than the images": (
        _set(f"{TINY}.canvas_size", 20),
        [f"{TINY}.canvas_size = 20 is smaller than the 28-pixel images"],
    ),
    "dense net beyond the memory limit": (
        _set("max_memory_gb", 0.001),
        [f"{TINY}: training its efcn needs about", "raise max_memory_gb"],
    ),
    "landscape without the efcn arm": (
        _chain(
            _set(f"{TINY}.relax.arms", ["cnn_continued"]),
            _set(f"{TINY}.landscape.relax_times", [1]),
        ),
        [f"{TINY}.landscape.relax_times needs 'efcn' in {TINY}.relax.arms"],
    ),
    "landscape at a time that is not relaxed": (
        _set(f"{TINY}.landscape.relax_times", [3]),
        [f"{TINY}.landscape.relax_times [3] are not relax times of this experiment"],
    ),
}


# The same through Snakemake, one case of each kind of check (the table above covers every case of
# the functions the workflow calls; these prove the workflow calls them, in order, before any job).
WORKFLOW_CASES = [
    "integer written as a float",
    "NaN learning rate",
    "seed beyond 2^31 - 1",
    "integer experiment name",
    "unknown key",
    "missing dataset",
    "newline in data_dir",
    "relax time between checkpoints",
    "dense net beyond the memory limit",
]


def bad_config(case: str, data_dir: Path) -> dict:
    config = copy.deepcopy(tiny_config(data_dir))
    CONFIG_CASES[case][0](config)
    return config


def check_like_the_workflow(config: dict) -> None:
    """workflow/rules/common.smk's order: strict schema pass, defaults, what the schema cannot say."""
    check_schema(config)
    validate(config, str(schema.SCHEMA_PATH))
    check_config(config)


def test_the_tiny_config_itself_passes(tmp_path):
    check_like_the_workflow(tiny_config(tmp_path))


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_bad_config_value_is_one_line_naming_the_key(case, tmp_path):
    with pytest.raises(NeedleError) as error:
        check_like_the_workflow(bad_config(case, tmp_path))
    message = str(error.value)
    assert "\n" not in message
    for words in CONFIG_CASES[case][1]:
        assert words in message, message


@pytest.fixture(scope="module")
def workflow_outcomes(tmp_path_factory) -> dict:
    """`snakemake -n` on every bad config, two at a time; each in a folder with earlier results."""
    root = tmp_path_factory.mktemp("configs")
    pending, outcomes = [], {}
    for index, case in enumerate(WORKFLOW_CASES):
        folder = root / f"case{index}"
        seed_dir = folder / "results" / "tiny" / "seed0"
        before = populated_results(seed_dir)
        (folder / "bad.yaml").write_text(yaml.safe_dump(bad_config(case, folder / "data")))
        pending.append(
            (case, seed_dir, before, snakemake_command(folder, folder / "bad.yaml", "-n"))
        )
    running = []
    while pending or running:
        while pending and len(running) < 2:
            case, seed_dir, before, command = pending.pop(0)
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((case, seed_dir, before, process))
        case, seed_dir, before, process = running.pop(0)
        output, _ = process.communicate(timeout=300)
        outcomes[case] = (process.returncode, output, before, snapshot(seed_dir))
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("case", WORKFLOW_CASES)
def test_the_workflow_stops_on_a_bad_config_with_one_line_before_any_job(workflow_outcomes, case):
    returncode, output, before, after = workflow_outcomes[case]
    assert returncode != 0, output[-2000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1].startswith("needle: error: "), output[-3000:]
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], output[-3000:]
    assert "Traceback" not in output and "Job stats" not in output, output[-3000:]
    for words in CONFIG_CASES[case][1]:
        assert words in lines[-1], lines[-1]
    assert after == before


# -- no config value reaches a shell unquoted ---------------------------------------------------
HOSTILE_DATA_DIRS = {
    "space": "data dir",
    "command substitution": "data$(touch {pwned})",
    "backticks and a semicolon": "data`touch {pwned}`;touch {pwned}",
    "quotes and a glob": "data 'x' \"y\" *",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOSTILE_DATA_DIRS))
def test_a_hostile_data_dir_is_only_a_folder_name(case, tmp_path):
    """The data rule runs for real with that data_dir: nothing is executed, the data lands there."""
    pwned = tmp_path / "pwned"
    data_dir = tmp_path / HOSTILE_DATA_DIRS[case].format(pwned=pwned)
    package = tmp_path / "debian-fashion-mnist"
    write_fake_fashion_mnist(package, 60, 20, gzipped=True)
    config = tiny_config(data_dir)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        snakemake_command(
            tmp_path, tmp_path / "config.yaml", "--cores", 1, f"{data_dir}/fashion-mnist.ready"
        ),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NEEDLE_FASHION_MNIST_DIR": str(package)},
    )
    assert not pwned.exists(), "a config value ran as a shell command"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (data_dir / "fashion-mnist.ready").exists()
    assert not list(tmp_path.glob("*pwned*")), list(tmp_path.iterdir())


# -- a per-run table lost behind a newer aggregate -----------------------------------------------
def planned_outputs(dry_run: str) -> list[str]:
    return [
        path.strip()
        for line in dry_run.splitlines()
        if line.strip().startswith("output: ")
        for path in line.strip().removeprefix("output: ").split(", ")
    ]


@pytest.mark.slow
def test_a_per_run_table_lost_in_a_killed_forced_rerun_is_rebuilt_with_the_tables(tmp_path):
    """Snakemake deletes a job's outputs before it runs it again (--forcerun); when that run is
    killed, the per-run metrics.csv is gone while the tables built from it remain, newer than all
    their inputs. A named target that asks only for tables and figures then has nothing to do; the
    default target also asks for every per-run table, so the lost run is redone and the tables
    built from it are rebuilt."""
    config = tiny_config(tmp_path / "data", relax={"arms": ["efcn", "cnn_continued"]})
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))

    def snakemake(*args):
        result = subprocess.run(
            snakemake_command(tmp_path, configfile, *args),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    # A finished run, as far as Snakemake can tell: every output present and touched in order.
    for output in planned_outputs(snakemake("-n")):
        path = tmp_path / output
        if output.endswith("/checkpoints"):
            path.mkdir(parents=True)
            for epoch in (0, 1, 3):
                (path / f"epoch{epoch}.pt").touch()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    snakemake("--touch", "--cores", 1)
    assert job_counts(snakemake("-n")) == {}

    lost = tmp_path / "results" / "tiny" / "seed0" / "efcn" / "relax_at_epoch1" / "metrics.csv"
    lost.unlink()
    assert job_counts(snakemake("-n", "figures")) == {}, (
        "figures: drawn from the tables as they are"
    )
    planned = job_counts(snakemake("-n"))
    assert planned.get("relax") == 1, planned
    for rule in ("aggregate_metrics", "summarize", "plot_figures"):
        assert planned.get(rule) == 1, planned
    assert not {"train_cnn", "train_fcn"} & set(planned), planned


# -- write_settings.py: the one stage script of the workflow part ----------------------------------
@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "--settings is not JSON"),
        ("[1, 2]", "--settings must be a JSON object, got list"),
        ('{"dataset": "fashion-mnist", "optimiser": {"lr": NaN}}', "experiments.e.optimiser.lr = nan is not a finite number"),
        ('{"dataset": "fashion-mnist", "widht": 4}', "experiments.e: unknown key 'widht'"),
    ],
)  # fmt: skip
def test_write_settings_refuses_bad_settings_with_one_line_and_keeps_the_old_file(
    text, words, tmp_path
):
    output = tmp_path / "settings.json"
    output.write_text('{"experiment": "e"}\n')
    before = snapshot(tmp_path)
    result = run_script(
        "write_settings.py",
        "--experiment",
        "e",
        "--settings",
        text,
        "--output",
        output,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("needle: error: ") and words in line, line
    assert snapshot(tmp_path) == before
