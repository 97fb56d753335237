# Shared helpers: the config checked and completed before any job runs, the experiment grid, and
# the command-line words the rules pass on. Each value is its own word, and each rule's shell writes
# every placeholder as {...:q}, so no config value reaches a shell unquoted.

import json
import os
import re
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The torch-free library (names, schedule, config checks) is imported so that the DAG and the
# scripts can never disagree; the driver needs no torch, even under --use-conda.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))
from needle import names  # noqa: E402
from needle.config_checks import (  # noqa: E402
    check_config,
    check_schema,
    embedding_mb,
    landscape_mb,
    relax_times_of,
    resolved_settings,
    sweep_setting,
    training_mb,
)
from needle.errors import NeedleError  # noqa: E402

# Every value is checked before any job runs, each error one line naming the key: first the schema
# with strict types, then snakemake's validate fills in the defaults, then what a schema cannot say.
try:
    check_schema(config)
    validate(config, workflow.source_path("../schemas/config.schema.yaml"))
    check_config(config)
except NeedleError as error:
    sys.exit(f"needle: error: {error}")

EXPERIMENTS = {
    name: resolved_settings(name, settings)
    for name, settings in config["experiments"].items()
}
SWEEP_SETTING = sweep_setting(config["experiments"])
DATA_DIR = os.path.normpath(config["data_dir"])
# Jobs that run a network ask for a GPU unless the config says cpu; a job finds its device itself
# when it starts (nothing is probed while this file is parsed). Locally, `--resources gpu=N` caps
# the GPU jobs running at once; without it they share the GPUs there are.
GPUS_PER_JOB = 0 if config["device"] == "cpu" else 1


wildcard_constraints:
    experiment="|".join(map(re.escape, EXPERIMENTS)),
    dataset="|".join(map(re.escape, names.DATASETS)),
    seed=r"\d+",
    relax_time=r"\d+",


envvars:
    "PATH",


# `.venv/bin/snakemake` without an activated venv: rules' `python` is the driver's (conda envs,
# when used, come first on PATH anyway).
os.environ["PATH"] = (
    f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)


def settings(wildcards) -> dict:
    return EXPERIMENTS[wildcards.experiment]


def stage_script(name: str) -> str:
    """Absolute path of a stage script, so the workflow also runs with --directory elsewhere."""
    return str(Path(workflow.basedir) / "workflow" / "scripts" / name)


def as_pattern(path: str) -> str:
    """A literal path inside an input/output pattern (braces are not wildcards there)."""
    return path.replace("{", "{{").replace("}", "}}")


def seed_dir(wildcards) -> str:
    return f"results/{wildcards.experiment}/seed{wildcards.seed}"


def run_dir(wildcards) -> str:
    """The folder of one relax run."""
    return f"{seed_dir(wildcards)}/{wildcards.arm}/relax_at_epoch{wildcards.relax_time}"


def checkpoint_file(wildcards, relax_time) -> str:
    return f"{seed_dir(wildcards)}/cnn/checkpoints/epoch{relax_time}.pt"


def dataset_ready(wildcards) -> str:
    return f"{DATA_DIR}/{settings(wildcards)['dataset']}.ready"


def final_weights(path: str) -> str:
    """Final weights are large: temporary unless keep_final_weights asks to keep them all."""
    return path if config["keep_final_weights"] else temp(path)


# -- command-line words (needle/cli.py's argument groups) -------------------------------------------
def data_args(wildcards) -> list[str]:
    """Dataset, subsets, canvas and seed: everything that fixes the tensors a run sees."""
    experiment = settings(wildcards)
    words = [
        "--dataset",
        experiment["dataset"],
        "--data-dir",
        DATA_DIR,
        "--canvas-size",
        str(experiment["canvas_size"]),
        "--validation-size",
        str(experiment["validation_size"]),
        "--seed",
        str(wildcards.seed),
    ]
    for key in ("train_size", "test_size"):
        if experiment[key] is not None:  # null = the whole split, the scripts' default
            words += [f"--{key.replace('_', '-')}", str(experiment[key])]
    return words


def model_args(wildcards) -> list[str]:
    experiment = settings(wildcards)
    return ["--model", experiment["model"], "--width", str(experiment["width"])]


def optimiser_args(wildcards) -> list[str]:
    """The training rule (optimiser and numerics) that every arm shares."""
    experiment = settings(wildcards)
    optimiser = experiment["optimiser"]
    return [
        "--lr",
        repr(optimiser["lr"]),
        "--momentum",
        repr(optimiser["momentum"]),
        "--weight-decay",
        repr(optimiser["weight_decay"]),
        "--batch-size",
        str(optimiser["batch_size"]),
        "--eval-batch-size",
        str(experiment["eval_batch_size"]),
        "--shuffle" if experiment["shuffle"] else "--no-shuffle",
        "--precision",
        experiment["precision"],
        "--readout-epochs",
        str(experiment["comparison"]["readout_epochs"]),
        (
            "--test-every-epoch"
            if experiment["comparison"]["test_every_epoch"]
            else "--no-test-every-epoch"
        ),
    ]


def divergence_args(wildcards) -> list[str]:
    divergence = settings(wildcards)["divergence"]
    return [
        "--on-divergence",
        divergence["on_divergence"],
        "--divergence-loss-factor",
        repr(divergence["loss_factor"]),
        "--divergence-chance-epochs",
        str(divergence["chance_epochs"]),
    ]


# -- inputs of the relax, landscape and aggregate rules ----------------------------------------
def relax_start(wildcards) -> str:
    """The embedded net for efcn/elcn; the CNN checkpoints for the control."""
    if wildcards.arm in names.EMBEDDED_ARMS:
        return f"{run_dir(wildcards)}/embedded.pt"
    return f"{seed_dir(wildcards)}/cnn/checkpoints"


def relax_start_file(wildcards) -> str:
    if wildcards.arm in names.EMBEDDED_ARMS:
        return relax_start(wildcards)
    return checkpoint_file(wildcards, wildcards.relax_time)


def landscape_times(wildcards) -> list[int]:
    return settings(wildcards)["landscape"]["relax_times"]


def landscape_inputs(wildcards) -> dict:
    base = seed_dir(wildcards)
    return {
        "ready": dataset_ready(wildcards),
        "checkpoints": f"{base}/cnn/checkpoints",
        "efcn_finals": [
            f"{base}/{names.EFCN}/relax_at_epoch{relax_time}/final.pt"
            for relax_time in landscape_times(wildcards)
        ],
        "fcn_final": f"{base}/{names.FCN}/final.pt",
    }


def run_words(wildcards) -> list[str]:
    """--run SEED ARM RELAX_TIME CSV for every training run ("-" as the relax time of cnn/fcn)."""
    words = []
    for seed, arm, relax_time, path in run_tables(wildcards.experiment):
        words += ["--run", str(seed), arm, relax_time, path]
    return words


def optional_words(flag: str, paths: list[str]) -> list[str]:
    return [flag, *paths] if paths else []


# -- the runs of an experiment ------------------------------------------------------------------
def relax_runs(name: str) -> list[tuple[str, int]]:
    """(arm, relax time) of every relax run of one experiment (per seed)."""
    experiment = EXPERIMENTS[name]
    return [
        (arm, relax_time)
        for arm in experiment["relax"]["arms"]
        for relax_time in experiment["relax"]["relax_times"]
    ]


def run_tables(name: str) -> list[tuple[int, str, str, str]]:
    """(seed, arm, relax time or "-", per-run metrics CSV) of every training run of an experiment."""
    runs = []
    for seed in EXPERIMENTS[name]["seeds"]:
        base = f"results/{name}/seed{seed}"
        runs.append((seed, names.CNN, "-", f"{base}/cnn/metrics.csv"))
        runs.append((seed, names.FCN, "-", f"{base}/fcn/metrics.csv"))
        for arm, relax_time in relax_runs(name):
            runs.append(
                (
                    seed,
                    arm,
                    str(relax_time),
                    f"{base}/{arm}/relax_at_epoch{relax_time}/metrics.csv",
                )
            )
    return runs


def embedding_records(name: str) -> list[str]:
    return [
        f"results/{name}/seed{seed}/{arm}/relax_at_epoch{relax_time}/embedding.csv"
        for seed in EXPERIMENTS[name]["seeds"]
        for arm, relax_time in relax_runs(name)
        if arm in names.EMBEDDED_ARMS
    ]


def landscape_tables(name: str) -> list[str]:
    experiment = EXPERIMENTS[name]
    if not experiment["landscape"]["relax_times"]:
        return []
    return [f"results/{name}/seed{seed}/landscape.csv" for seed in experiment["seeds"]]


def per_run_outputs(name: str) -> list[str]:
    """Every per-run table the experiment's tables are built from. The default target asks for them too: a
    per-run table lost behind a newer aggregate (a forced rerun killed after Snakemake deleted the
    old one) is rebuilt, and the tables built from it with it, instead of "Nothing to be done".
    """
    return (
        [path for *_, path in run_tables(name)]
        + embedding_records(name)
        + landscape_tables(name)
    )


def experiment_outputs(name: str) -> list[str]:
    """The finished products of one experiment: summary, figures and the per-run tables."""
    base = f"results/{name}"
    return [
        f"{base}/summary.html",
        f"{base}/summary.md",
        f"{base}/summary.csv",
        f"{base}/arms.csv",
        *(f"{base}/figures/{figure}.png" for figure in names.FIGURES),
        f"{base}/figures/parameter_counts.md",
        *per_run_outputs(name),
    ]


# The README holds the results of one experiment: `snakemake publish` needs a config with one.
PUBLISHED = next(iter(EXPERIMENTS)) if len(EXPERIMENTS) == 1 else "needs-one-experiment"


def published_tables(wildcards) -> list[str]:
    """The finished run's tables that `snakemake publish` copies to docs/."""
    if PUBLISHED not in EXPERIMENTS:
        raise NeedleError(
            f"publish needs a config with exactly one experiment, this one has {len(EXPERIMENTS)}:"
            " pass --configfile with the preset to publish (e.g. config/laptop-hour.yaml)"
        )
    tables = ("settings.json", "stamp.json", "metrics.csv", "runs.csv", "arms.csv")
    tables += ("summary.csv", "embedding.csv", "landscape.csv", "parameter_counts.csv")
    return [f"results/{PUBLISHED}/{name}" for name in tables]


def sweep_outputs() -> list[str]:
    return [f"results/sweep/gain_vs_{SWEEP_SETTING}.png"] if SWEEP_SETTING else []
