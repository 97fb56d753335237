"""Shared fixtures and helpers for the tests that run stage scripts and Snakemake as subprocesses.

Stage scripts are started exactly as the workflow starts them (`python workflow/scripts/X.py ...`),
on fake datasets written in the real on-disk formats (tests/fake_datasets.py), on the CPU with one
torch thread each, so that two of them can run side by side on a 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_datasets import write_fake_cifar, write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
SNAKEFILE = REPO / "Snakefile"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
# Every stage run uses the CPU and one torch thread: results must not depend on the machine.
CPU = ("--device", "cpu", "--threads", "1")


def script_env(extra: dict | None = None) -> dict:
    """The environment of a stage subprocess: this venv first on PATH, one OpenMP thread, and
    proxies that refuse connections, so that no test can ever download anything."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONHASHSEED"] = "0"
    for proxy in (
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        env[proxy] = "http://127.0.0.1:9"  # discard port: connection refused at once
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    env.update(extra or {})
    return env


def script_command(name: str, *args) -> list[str]:
    return [PYTHON, str(SCRIPTS / name), *map(str, args)]


def run_script(
    name: str,
    *args,
    env: dict | None = None,
    check: bool = True,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run one stage script to completion; with check=True a failure shows its stderr."""
    result = subprocess.run(
        script_command(name, *args),
        capture_output=True,
        text=True,
        env=script_env(env),
        timeout=timeout,
        cwd=cwd or REPO,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{name} {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


def run_scripts(
    commands: list[tuple],
    *,
    jobs: int = 2,
    env: dict | None = None,
    timeout: float = 300,
    check: bool = True,
) -> list:
    """Run several (script, *args) commands, ``jobs`` at a time (their import time dominates);
    with check=True the first failure stops the others and shows its stderr."""
    pending = list(enumerate(commands))
    running: list[tuple[int, subprocess.Popen, float]] = []
    results: list = [None] * len(commands)
    while pending or running:
        while pending and len(running) < jobs:
            index, (name, *args) = pending.pop(0)
            process = subprocess.Popen(
                script_command(name, *args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=script_env(env),
                cwd=REPO,
            )
            running.append((index, process, time.monotonic()))
        index, process, started = running.pop(0)
        stdout, stderr = process.communicate(
            timeout=max(1.0, timeout - (time.monotonic() - started))
        )
        results[index] = subprocess.CompletedProcess(
            process.args, process.returncode, stdout, stderr
        )
        if check and process.returncode != 0:
            for _, other, _ in running:
                other.kill()
                other.wait()
            pytest.fail(
                f"{' '.join(process.args[1:])} exited {process.returncode}:\n{stderr[-3000:]}"
            )
    return results


def snakemake_command(directory: Path, configfile: Path, *args) -> list[str]:
    """Snakemake on the repository's Snakefile, with a working directory of the test's own."""
    return [
        str(BIN / "snakemake"),
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(directory),
        "--configfile",
        str(configfile),
        *map(str, args),
    ]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime, to prove a failing command left it alone."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def populated_results(folder: Path) -> dict:
    """A results folder as an earlier finished run left it; returns its snapshot."""
    run = folder / "efcn" / "relax_at_epoch1"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,test_accuracy\n1,0.5\n")
    (run / "final.pt").write_bytes(b"earlier weights")
    (folder / "cnn").mkdir()
    (folder / "cnn" / "metrics.csv").write_text("epoch,test_accuracy\n0,0.1\n")
    return snapshot(folder)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run ({} for "Nothing to be done")."""
    lines = output.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("Job stats")]
    counts = {}
    for line in lines[starts[0] + 3 :] if starts else []:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def tiny_config(data_dir: Path, **overrides) -> dict:
    """A complete tiny experiment "tiny" on fake Fashion-MNIST (every stage runs in a few seconds).

    Keyword arguments replace experiment keys; a dict is merged into the block of that name."""
    experiment = {
        "dataset": "fashion-mnist",
        "train_size": 200,
        "test_size": 100,
        "model": "skinny",
        "width": 4,
        "seeds": [0],
        "eval_batch_size": 500,
        "optimiser": {"lr": 0.05, "batch_size": 50},
        "divergence": {"on_divergence": "record"},
        "cnn": {"epochs": 3, "checkpoint_points": 3},
        "fcn": {"epochs": 2},
        "relax": {"arms": ["efcn"], "relax_times": [1], "epochs": 2},
        "embedding": {"check_images": 50},
        "landscape": {"relax_times": []},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(experiment.get(key), dict):
            experiment[key] = {**experiment[key], **value}
        else:
            experiment[key] = value
    return {
        "data_dir": str(data_dir),
        "device": "cpu",
        "threads": 1,
        "experiments": {"tiny": experiment},
    }


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> Path:
    """A --data-dir holding fake Fashion-MNIST: 200 training and 100 test images."""
    root = tmp_path_factory.mktemp("fake-fashion-mnist")
    write_fake_fashion_mnist(root, 200, 100)
    return root


def fake_cifar_env(tmp_path_factory, which: str) -> tuple[Path, dict]:
    """A --data-dir with fake CIFAR files, and the environment that makes torchvision accept them.

    torchvision checks CIFAR files against the md5s of the real archives. A subprocess cannot be
    monkeypatched, so a sitecustomize module (first on PYTHONPATH) swaps in the fake files' md5s
    when the interpreter starts; the stage script itself runs unchanged.
    """
    root = tmp_path_factory.mktemp(f"fake-{which}")
    write_fake_cifar(root / "data", which, n_train=200, n_test=100)
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from fake_datasets import patch_torchvision_cifar


        class _SetAttributes:
            setattr = staticmethod(setattr)


        patch_torchvision_cifar(_SetAttributes, {str(root / "data")!r}, {which!r})
        """)
    )
    return root / "data", {"PYTHONPATH": str(hook)}


@pytest.fixture(scope="session")
def cifar10(tmp_path_factory):
    return fake_cifar_env(tmp_path_factory, "cifar10")


@pytest.fixture(scope="session")
def cifar100(tmp_path_factory):
    return fake_cifar_env(tmp_path_factory, "cifar100")
