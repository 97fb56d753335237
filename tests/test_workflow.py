"""The workflow as users run it: formatting, lint, dry runs of every preset, a real tiny run to its
figures and report, and figures redrawn from cached tables without any training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fake_datasets import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRESETS = sorted((REPO / "config").glob("*.yaml")) + [REPO / "config.yaml"]
TRAINING_RULES = ("train_cnn", "train_fcn", "relax", "landscape")

pytestmark = pytest.mark.workflow


def snakemake(*args, cwd=REPO, check=True, env=None):
    command = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *map(str, args)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a snakemake run or dry run."""
    lines = output.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_snakefiles_are_formatted():
    rules = sorted(str(path) for path in (REPO / "workflow" / "rules").glob("*.smk"))
    result = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", *rules],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_lint_is_clean():
    result = snakemake("--lint")
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.name)
def test_dry_run_of_every_preset_lists_the_protocol(preset, tmp_path):
    config = yaml.safe_load(preset.read_text())
    result = snakemake("-n", "--cores", "8", "--directory", tmp_path, "--configfile", preset)
    counts = job_counts(result.stdout + result.stderr)
    from needle.config_checks import relax_times_of

    expected_cnn = expected_relax = 0
    for settings in config["experiments"].values():
        filled = snakemake_defaults(settings)
        expected_cnn += len(filled["seeds"])
        expected_relax += (
            len(filled["seeds"]) * len(filled["relax"]["arms"]) * len(relax_times_of(filled))
        )
    assert counts["train_cnn"] == counts["train_fcn"] == expected_cnn
    assert counts["relax"] == expected_relax
    assert counts["plot_figures"] == counts["summarize"] == len(config["experiments"])


def snakemake_defaults(settings: dict) -> dict:
    """The schema's defaults for the keys the dry-run test needs."""
    filled = {"seeds": [0], **settings}
    filled["cnn"] = {"epochs": 100, "checkpoint_points": 20, **settings.get("cnn", {})}
    filled["relax"] = {"arms": ["efcn"], "relax_times": "all", **settings.get("relax", {})}
    return filled


def test_local_gpu_limit_follows_the_gpus_present(tmp_path):
    """On a machine without GPUs, training rules ask for none (they would never be scheduled)."""
    result = snakemake(
        "-n",
        "--cores",
        "2",
        "--directory",
        tmp_path,
        "--configfile",
        REPO / ".test/config/config.yaml",
    )
    if shutil.which("nvidia-smi") is None:
        assert "gpu=1" not in result.stdout


# -- a real run of the tiny experiment ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The .test experiment run for real into a scratch folder, on fake Fashion-MNIST files."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    source = workdir / "debian-fashion-mnist"
    write_fake_fashion_mnist(source, 600, 200, gzipped=True)
    env = {**os.environ, "NEEDLE_FASHION_MNIST_DIR": str(source)}
    config = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(
        "--cores", "2", "--directory", workdir, "--configfile", workdir / "config.yaml", env=env
    )
    return workdir, config, env, result


def test_tiny_experiment_runs_to_its_figures_and_report(tiny_run):
    workdir, config, env, result = tiny_run
    (name,) = config["experiments"]
    results = workdir / "results" / name
    metrics = pd.read_csv(results / "metrics.csv")
    assert set(metrics["arm"]) == {"cnn", "fcn", "efcn", "elcn"}
    assert {
        "test_accuracy",
        "train_loss",
        "deviation",
        "deviation_nonlocal",
        "deviation_nonsharing",
        "projected_test_accuracy",
        "distance_from_embedding",
    } <= set(metrics["metric"])
    for figure in (
        "accuracy_vs_relax_time.png",
        "learning_curves.png",
        "deviation.png",
        "landscape.png",
        "projection_probe.png",
        "parameter_counts.md",
    ):
        assert (results / "figures" / figure).stat().st_size > 0
    assert (results / "summary.md").read_text().startswith("#")
    landscape = pd.read_csv(results / "landscape.csv")
    assert (
        landscape["path"].nunique() == 5
    )  # 2 embedding->final, 2 final->fcn, 1 between relax times
    # final weights are temporary by default: the landscape used them, nothing keeps them
    assert not list((results / "seed0").glob("*/relax_at_epoch*/final.pt"))
    snakemake(
        "--report",
        workdir / "report.html",
        "--directory",
        workdir,
        "--configfile",
        workdir / "config.yaml",
        env=env,
    )
    assert (workdir / "report.html").stat().st_size > 100_000


def test_tables_and_figures_rebuild_from_the_per_run_outputs_without_training(tiny_run):
    """Delete the experiment's tables and figures but keep checkpoints and per-run metrics: the
    figures target aggregates again and redraws, and no training job runs."""
    workdir, config, env, _ = tiny_run
    (name,) = config["experiments"]
    results = workdir / "results" / name
    for table in ("metrics.csv", "landscape.csv", "summary.md", "summary.csv"):
        (results / table).unlink()
    shutil.rmtree(results / "figures")
    result = snakemake(
        "--cores",
        "2",
        "figures",
        "--directory",
        workdir,
        "--configfile",
        workdir / "config.yaml",
        env=env,
    )
    counts = job_counts(result.stdout + result.stderr)
    assert counts.get("aggregate_metrics") == 1
    assert not set(counts) & set(TRAINING_RULES), counts
    assert (results / "figures" / "deviation.png").exists()


def test_every_figure_redraws_from_the_metrics_table_alone(tiny_run):
    """Delete every checkpoint and per-run file: the figures target redraws without training."""
    workdir, config, env, _ = tiny_run
    (name,) = config["experiments"]
    results = workdir / "results" / name
    shutil.rmtree(results / "seed0")
    shutil.rmtree(results / "figures")
    (results / "summary.md").unlink()
    result = snakemake(
        "--cores",
        "2",
        "figures",
        "--directory",
        workdir,
        "--configfile",
        workdir / "config.yaml",
        env=env,
    )
    counts = job_counts(result.stdout + result.stderr)
    assert not set(counts) & set(TRAINING_RULES), counts
    assert (results / "figures" / "accuracy_vs_relax_time.png").exists()
    assert (results / "summary.md").exists()


def test_figures_rule_lists_the_figures_the_library_draws():
    from needle.plotting import OUTPUTS

    rules = (REPO / "workflow/rules/figures.smk").read_text()
    for name in OUTPUTS:
        assert f'"{name.removesuffix(".md")}' in rules or name in rules


@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.name)
def test_slurm_profile_dry_run_asks_a_gpu_for_every_training_job(preset, tmp_path):
    """The committed SLURM profile, unchanged: each training job requests one GPU, nothing else does."""
    result = snakemake(
        "-n",
        "--workflow-profile",
        REPO / "profiles/slurm",
        "--directory",
        tmp_path,
        "--configfile",
        preset,
    )
    counts = job_counts(result.stdout + result.stderr)
    training_jobs = sum(counts.get(rule, 0) for rule in TRAINING_RULES)
    assert training_jobs > 0
    assert (result.stdout + result.stderr).count("gpu=1") == training_jobs
