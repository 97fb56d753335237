# Shared helpers: config validation, the experiment grid, and the arguments every rule passes on.

import os
import shutil
import subprocess
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

validate(config, workflow.source_path("../schemas/config.schema.yaml"))

# The torch-free parts of the library (relax-time schedule, config checks) are imported here so that
# the DAG and the scripts can never disagree; the driver needs no torch, even under --use-conda.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))
from needle.config_checks import (
    check_config,
    relax_times_of,
    efcn_training_mb,
)  # noqa: E402
from needle.schedule import checkpoint_epochs  # noqa: E402

check_config(config)  # impossible combinations stop here, before any job runs

EXPERIMENTS = config["experiments"]


wildcard_constraints:
    experiment="|".join(map(re.escape, EXPERIMENTS)) if EXPERIMENTS else "x",
    seed=r"\d+",
    relax_time=r"\d+",
    arm="efcn|elcn",


def local_gpus() -> int:
    """GPUs visible on this machine (0 without nvidia-smi): local GPU jobs never exceed them."""
    if config["device"] == "cpu" or shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


envvars:
    "PATH",


# `.venv/bin/snakemake` without an activated venv: rules' `python` is the driver's (conda envs,
# when used, come first on PATH anyway).
os.environ["PATH"] = (
    f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
)

GPUS = local_gpus()
workflow.global_resources.setdefault("gpu", GPUS)  # local runs: at most one job per GPU
TRAINING_GPU = (
    1 if GPUS else 0
)  # the slurm profile sets gpu=1 for training rules itself


def experiment(wildcards):
    return EXPERIMENTS[wildcards.experiment]


def stage_script(name: str) -> str:
    """Absolute path of a stage script, so the workflow also runs with --directory elsewhere."""
    return str(Path(workflow.basedir) / "workflow" / "scripts" / name)


def run_dir(wildcards) -> str:
    return f"results/{wildcards.experiment}/seed{wildcards.seed}"


def dataset_ready(wildcards):
    return f"{config['data_dir']}/{experiment(wildcards)['dataset']}.ready"


def data_args(wildcards) -> str:
    """Dataset, subset, canvas and seed: everything that fixes the tensors a run sees."""
    settings = experiment(wildcards)
    args = [
        f"--dataset {settings['dataset']}",
        f"--data-dir {config['data_dir']}",
        f"--canvas-size {settings['canvas_size']}",
        f"--seed {wildcards.seed}",
    ]
    for key in ("train_size", "test_size"):
        if settings[key] is not None:
            args.append(f"--{key.replace('_', '-')} {settings[key]}")
    return " ".join(args)


def model_args(wildcards) -> str:
    settings = experiment(wildcards)
    return f"--model {settings['model']} --width {settings['width']}"


def optimiser_args(wildcards, stage: str) -> str:
    """Optimiser, schedule and numerics of one stage (cnn, relax or fcn) as command-line flags."""
    settings = experiment(wildcards)
    stage_settings = settings[stage]
    return " ".join(
        [
            f"--epochs {stage_settings['epochs']}",
            f"--lr {stage_settings['lr']}",
            f"--momentum {stage_settings['momentum']}",
            f"--weight-decay {stage_settings['weight_decay']}",
            f"--batch-size {stage_settings['batch_size']}",
            f"--eval-batch-size {settings['eval_batch_size']}",
            "--shuffle" if settings["shuffle"] else "--no-shuffle",
            f"--precision {settings['precision']}",
            f"--on-divergence {settings['on_divergence']}",
        ]
    )


def runtime_args(threads) -> str:
    return f"--device {config['device']} --threads {threads}"


def relax_runs(name: str) -> list[tuple[str, int]]:
    """(arm, relax time) pairs of one experiment."""
    settings = EXPERIMENTS[name]
    return [
        (arm, time)
        for arm in settings["relax"]["arms"]
        for time in relax_times_of(settings)
    ]


def run_metrics(name: str) -> list[tuple[int, str, str, str]]:
    """(seed, arm, relax time or '-', metrics CSV) for every training run of one experiment."""
    runs = []
    for seed in EXPERIMENTS[name]["seeds"]:
        base = f"results/{name}/seed{seed}"
        runs.append((seed, "cnn", "-", f"{base}/cnn/metrics.csv"))
        runs.append((seed, "fcn", "-", f"{base}/fcn/metrics.csv"))
        for arm, time in relax_runs(name):
            runs.append(
                (seed, arm, str(time), f"{base}/{arm}/relax_at_epoch{time}/metrics.csv")
            )
    return runs


def final_weights(path: str) -> str:
    """Final weights are large: temporary unless keep_final_weights asks to keep them all."""
    return path if config["keep_final_weights"] else temp(path)


def training_mem_mb(wildcards, stage: str) -> int:
    """Memory request of a training job (the eFCN dominates): estimate + 2 GiB for data and torch."""
    settings = experiment(wildcards)
    if stage == "cnn":
        return 4096
    return efcn_training_mb(settings, arm=getattr(wildcards, "arm", "fcn")) + 2048


def landscape_inputs(wildcards):
    settings = experiment(wildcards)
    base = run_dir(wildcards)
    times = settings["landscape"]["relax_times"]
    return {
        "ready": dataset_ready(wildcards),
        "checkpoints": f"{base}/cnn/checkpoints",
        "efcn_finals": [f"{base}/efcn/relax_at_epoch{time}/final.pt" for time in times],
        "fcn_final": f"{base}/fcn/final.pt",
    }


def run_arguments(wildcards) -> str:
    return " ".join(
        f"--run {seed} {arm} {relax_time} {path}"
        for seed, arm, relax_time, path in run_metrics(wildcards.experiment)
    )


def landscape_tables(wildcards) -> list[str]:
    settings = experiment(wildcards)
    if not settings["landscape"]["relax_times"]:
        return []
    return [
        f"results/{wildcards.experiment}/seed{seed}/landscape.csv"
        for seed in settings["seeds"]
    ]
