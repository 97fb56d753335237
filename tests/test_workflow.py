"""The workflow as users run it: formatting and lint of the whole tree, quoted command lines, the
plan of every preset, GPU requests, sweeps, and a real tiny run to its summary, figures and report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import job_counts
from fake_datasets import write_fake_fashion_mnist
from snakemake.utils import validate

from needle import names, schema
from needle.config_checks import relax_times_of, resolved_settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRESETS = sorted((REPO / "config").glob("*.yaml")) + [REPO / "config.yaml"]
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"
# The rules that run a network: they ask for a GPU, and no table or figure rebuild may run them.
NETWORK_RULES = ("train_cnn", "embed", "relax", "train_fcn", "landscape")

pytestmark = pytest.mark.workflow


def snakemake(*args, cwd=REPO, check=True, env=None) -> subprocess.CompletedProcess:
    command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *map(str, args)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        header = re.match(r"(?:local)?rule (\w+):", block)
        if header:
            fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.MULTILINE))
            resources = dict(
                pair.split("=", 1)
                for pair in fields.get("resources", "").split(", ")
                if "=" in pair
            )
            jobs.append((header.group(1), resources))
    return jobs


def completed(config: dict) -> dict:
    """A config with the schema's defaults filled in, as the workflow sees it."""
    config = json.loads(json.dumps(config))
    validate(config, str(schema.SCHEMA_PATH))
    return config


# -- formatting and lint of the whole tree ------------------------------------------------------------
def test_snakefiles_are_formatted():
    rules = sorted(str(path) for path in (REPO / "workflow" / "rules").glob("*.smk"))
    result = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", *rules],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_snakemake_lint_is_clean():
    result = snakemake("--lint")
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_ruff_is_clean_on_the_whole_tree(command):
    result = subprocess.run(
        [str(BIN / "ruff"), *command, "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def shell_placeholders(text: str) -> list[str]:
    """Every {placeholder} of the shell: strings of a rules file."""
    placeholders, in_shell = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "shell:":
            in_shell = True
        elif in_shell and stripped.startswith('"'):
            placeholders += re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", stripped)
        elif stripped:
            in_shell = False
    return placeholders


def test_every_value_on_a_command_line_is_shell_quoted():
    placeholders = [
        placeholder
        for path in (REPO / "workflow" / "rules").glob("*.smk")
        for placeholder in shell_placeholders(path.read_text())
    ]
    assert len(placeholders) > 50, "the shell commands were not found"
    assert [p for p in placeholders if not p.endswith(":q")] == []


# -- the plan ---------------------------------------------------------------------------------------
def expected_jobs(config: dict) -> dict[str, int]:
    """Jobs of a full run of a config, counted from the protocol."""
    counts: dict[str, int] = {}

    def add(rule, number):
        if number:
            counts[rule] = counts.get(rule, 0) + number

    experiments = completed(config)["experiments"]
    for settings in experiments.values():
        seeds, arms = len(settings["seeds"]), settings["relax"]["arms"]
        times = len(relax_times_of(settings))
        add("train_cnn", seeds)
        add("train_fcn", seeds)
        add("embed", seeds * times * len(set(arms) & set(names.EMBEDDED_ARMS)))
        add("relax", seeds * times * len(arms))
        add("landscape", seeds if settings["landscape"]["relax_times"] else 0)
        for rule in ("write_settings", "parameter_counts", "aggregate_metrics", "stamp"):
            add(rule, 1)
        for rule in ("summarize",):
            add(rule, 1)
        add("plot_figures", 1)
    add("prepare_data", len({settings["dataset"] for settings in experiments.values()}))
    add("all", 1)
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.name)
def test_dry_run_of_every_preset_plans_the_whole_protocol(preset, tmp_path):
    config = yaml.safe_load(preset.read_text())
    result = snakemake("-n", "--cores", "8", "--directory", tmp_path, "--configfile", preset)
    assert job_counts(result.stdout + result.stderr) == expected_jobs(config)


def test_the_rule_graph_shows_the_embedding_as_a_stage(tmp_path):
    result = snakemake("--rulegraph", "--directory", tmp_path, "--configfile", TEST_CONFIG)
    labels = dict(re.findall(r'(\d+)\[label = "(\w+)"', result.stdout))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"(\d+) -> (\d+)", result.stdout)}
    assert {("train_cnn", "embed"), ("embed", "relax"), ("train_cnn", "relax")} <= edges
    assert {("relax", "aggregate_metrics"), ("aggregate_metrics", "summarize")} <= edges
    assert {("write_settings", "summarize"), ("aggregate_metrics", "plot_figures")} <= edges


def write_config(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("device, gpus", [("cpu", "0"), ("cuda:1", "1")])
def test_jobs_that_run_a_network_ask_for_a_gpu_unless_the_device_is_cpu(device, gpus, tmp_path):
    """Decided from the config alone: nvidia-smi is never run while the workflow is planned."""
    fake_bin, probed = tmp_path / "bin", tmp_path / "nvidia-smi-was-run"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text(f"#!/bin/sh\ntouch '{probed}'\necho 'GPU 0: fake'\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    config = {**yaml.safe_load(TEST_CONFIG.read_text()), "device": device}
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    result = snakemake(
        "-n", "--directory", tmp_path, "--configfile", write_config(tmp_path, config), env=env
    )
    jobs = planned_jobs(result.stdout)
    assert {rule for rule, _ in jobs} >= set(NETWORK_RULES)
    for rule, resources in jobs:
        assert resources.get("gpu", "0") == (gpus if rule in NETWORK_RULES else "0"), (
            rule,
            resources,
        )
    assert not probed.exists()


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.name)
def test_slurm_profile_asks_one_gpu_for_every_network_job_and_none_for_the_rest(preset, tmp_path):
    """The committed SLURM profile, unchanged, on every preset (they all run on device auto)."""
    result = snakemake(
        "-n",
        "--workflow-profile",
        REPO / "profiles/slurm",
        "--directory",
        tmp_path,
        "--configfile",
        preset,
    )
    jobs = planned_jobs(result.stdout)
    assert any(rule in NETWORK_RULES for rule, _ in jobs)
    for rule, resources in jobs:
        if rule == "all":
            continue
        assert resources.get("gpu", "0") == ("1" if rule in NETWORK_RULES else "0"), (
            rule,
            resources,
        )
        assert int(resources["mem_mb"]) >= 1024 and int(resources["runtime"]) >= 5, rule


@pytest.mark.slow
def test_experiments_that_differ_in_one_setting_get_a_sweep_figure(tmp_path):
    base = yaml.safe_load(TEST_CONFIG.read_text())
    (experiment,) = base["experiments"].values()
    config = {**base, "experiments": {"w4": experiment, "w8": {**experiment, "width": 8}}}
    result = snakemake(
        "-n", "--directory", tmp_path, "--configfile", write_config(tmp_path, config)
    )
    assert job_counts(result.stdout)["plot_sweep"] == 1
    assert "results/sweep/gain_vs_width.png" in result.stdout
    config["experiments"]["w8"]["train_size"] = 100  # two settings differ: no sweep
    result = snakemake(
        "-n", "--directory", tmp_path, "--configfile", write_config(tmp_path, config)
    )
    assert "plot_sweep" not in job_counts(result.stdout)


@pytest.mark.slow
def test_settings_json_records_the_resolved_settings_and_follows_a_change(tmp_path):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    (name,) = config["experiments"]
    target = f"results/{name}/settings.json"
    configfile = write_config(tmp_path, config)
    snakemake(target, "--cores", "1", "--directory", tmp_path, "--configfile", configfile)
    written = json.loads((tmp_path / target).read_text())
    expected = resolved_settings(name, completed(config)["experiments"][name])
    assert written == expected
    assert written["experiment"] == name and written["relax"]["relax_times"] == [0, 1]
    assert written["optimiser"] == {
        "lr": 0.05,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "batch_size": 50,
    }
    result = snakemake(target, "-n", "--directory", tmp_path, "--configfile", configfile)
    assert job_counts(result.stdout) == {}, "an unchanged config leaves settings.json alone"
    config["experiments"][name]["optimiser"]["lr"] = 0.01
    configfile = write_config(tmp_path, config)
    result = snakemake(target, "-n", "--directory", tmp_path, "--configfile", configfile)
    assert job_counts(result.stdout) == {"write_settings": 1}, "a changed setting rewrites it"


# -- a real run of the tiny experiment (needs every stage script) --------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The .test experiment run for real into a scratch folder, on fake Fashion-MNIST files."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    source = workdir / "debian-fashion-mnist"
    write_fake_fashion_mnist(source, 600, 200, gzipped=True)
    env = {**os.environ, "NEEDLE_FASHION_MNIST_DIR": str(source)}
    config = yaml.safe_load(TEST_CONFIG.read_text())
    configfile = write_config(workdir, config)
    result = snakemake("--cores", "2", "--directory", workdir, "--configfile", configfile, env=env)
    (name,) = config["experiments"]
    return workdir, configfile, completed(config)["experiments"][name], env, result


def run_snakemake(tiny_run, *args) -> dict[str, int]:
    workdir, configfile, _, env, _ = tiny_run
    result = snakemake(
        "--cores", "2", *args, "--directory", workdir, "--configfile", configfile, env=env
    )
    return job_counts(result.stdout + result.stderr)


@pytest.mark.slow
def test_tiny_experiment_runs_every_arm_to_its_tables_summary_and_figures(tiny_run):
    workdir, _, settings, _, result = tiny_run
    name = next(iter(yaml.safe_load(TEST_CONFIG.read_text())["experiments"]))
    results = workdir / "results" / name
    seeds, times = settings["seeds"], settings["relax"]["relax_times"]

    assert json.loads((results / "settings.json").read_text())["experiment"] == name
    runs = pd.read_csv(results / "runs.csv")
    expected_runs = {(seed, arm, "") for seed in seeds for arm in (names.CNN, names.FCN)} | {
        (seed, arm, str(time)) for seed in seeds for arm in names.RELAX_ARMS for time in times
    }
    found = {
        (seed, arm, "" if pd.isna(time) else str(int(time)))
        for seed, arm, time in runs[["seed", "arm", "relax_time"]].itertuples(index=False)
    }
    assert found == expected_runs
    assert set(runs["readout_epochs"]) == {settings["comparison"]["readout_epochs"]}

    per_run = pd.read_csv(results / "seed0" / names.EFCN / "relax_at_epoch1" / "metrics.csv")
    assert tuple(per_run.columns[: len(names.RUN_COLUMNS)]) == names.RUN_COLUMNS
    assert list(per_run["epoch"]) == [1, 2, 3] and list(per_run["epochs_since_relax"]) == [0, 1, 2]
    assert per_run["validation_accuracy"].notna().all(), "the .test config has a validation split"

    tidy = pd.read_csv(results / "metrics.csv")
    assert tuple(tidy.columns) == names.TIDY_COLUMNS
    assert set(tidy["arm"]) == set(names.ARMS)

    embedding = pd.read_csv(results / "embedding.csv")
    assert tuple(embedding.columns) == names.EMBEDDING_COLUMNS
    assert len(embedding) == len(seeds) * len(times) * len(names.EMBEDDED_ARMS)
    scale = embedding["max_abs_logit"].clip(lower=1.0)
    assert (embedding["max_abs_logit_difference_fp64"] <= 1e-9 * scale).all(), "claim 1: exact"

    landscape = pd.read_csv(results / "landscape.csv")
    assert tuple(landscape.columns) == names.LANDSCAPE_COLUMNS
    assert set(landscape["path_kind"]) == set(names.LANDSCAPE_PATH_KINDS)
    assert set(landscape["seed"]) == set(seeds)

    for figure in names.FIGURES:
        assert (results / "figures" / f"{figure}.png").stat().st_size > 0, figure
    assert (results / "figures" / "parameter_counts.md").exists()
    assert len(pd.read_csv(results / "parameter_counts.csv")) == len(names.NETWORKS)
    for table in ("summary.csv", "arms.csv", "summary.md", "summary.html"):
        assert (results / table).stat().st_size > 0, table
    # the embedded nets and final weights are temporary: nothing keeps them once used
    assert not list(results.rglob("embedded.pt")) and not list(results.rglob("final.pt"))
    assert not list(results.rglob("resume")), "finished runs leave no resume state"


@pytest.mark.slow
def test_a_finished_run_has_nothing_left_to_do_and_writes_its_report(tiny_run):
    workdir, configfile, _, env, _ = tiny_run
    assert run_snakemake(tiny_run, "-n") == {}
    snakemake(
        "--report",
        workdir / "report.html",
        "--directory",
        workdir,
        "--configfile",
        configfile,
        env=env,
    )
    assert (workdir / "report.html").stat().st_size > 100_000


@pytest.mark.slow
def test_tables_summary_and_figures_rebuild_from_the_per_run_tables_without_training(tiny_run):
    workdir, _, settings, _, _ = tiny_run
    results = workdir / "results" / settings_name()
    for table in ("metrics.csv", "runs.csv", "landscape.csv", "embedding.csv", "summary.html"):
        (results / table).unlink()
    shutil.rmtree(results / "figures")
    counts = run_snakemake(tiny_run)
    assert counts.get("aggregate_metrics") == 1 and counts.get("plot_figures") == 1, counts
    assert not set(counts) & set(NETWORK_RULES), counts
    assert (results / "figures" / "deviation.png").exists()


@pytest.mark.slow
def test_a_per_run_table_lost_behind_newer_tables_is_rebuilt_by_the_default_target(tiny_run):
    """The state a killed --forcerun leaves: Snakemake deleted the run's metrics.csv, the tables
    built from it are newer than everything that still exists."""
    workdir, _, _, _, _ = tiny_run
    results = workdir / "results" / settings_name()
    lost = results / "seed1" / names.ELCN / "relax_at_epoch1" / "metrics.csv"
    lost.unlink()
    runs_before = (results / "runs.csv").stat().st_mtime_ns
    assert run_snakemake(tiny_run, "-n", "figures") == {}, (
        "figures: drawn from the tables as they are"
    )
    counts = run_snakemake(tiny_run)
    assert counts.get("embed") == 1 and counts.get("relax") == 1, counts
    assert counts.get("aggregate_metrics") == 1 and counts.get("summarize") == 1, counts
    assert not {"train_cnn", "train_fcn"} & set(counts), counts
    assert lost.exists() and (results / "runs.csv").stat().st_mtime_ns > runs_before


def settings_name() -> str:
    return next(iter(yaml.safe_load(TEST_CONFIG.read_text())["experiments"]))


def test_each_rule_runs_the_stage_script_of_its_name():
    scripts = {}
    rule_pattern = re.compile(r"^ *rule (\w+):\n(.*?)(?=^ *rule \w+:|\Z)", re.M | re.S)
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for rule, body in rule_pattern.findall(path.read_text()):
            for script in re.findall(r'stage_script\("(\w+)\.py"\)', body):
                scripts[rule] = script
    assert len(scripts) >= 12, scripts
    assert {rule: script for rule, script in scripts.items() if rule != script} == {}
