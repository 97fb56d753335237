"""Training stages survive SIGKILL at any moment: the rerun ends bit-identical to an uninterrupted run,
and no declared output (metrics.csv, checkpoints/epoch*.pt, final.pt) is ever seen truncated.

Each stage runs once uninterrupted (the reference), then as a chain: start, SIGKILL at a seeded random
moment, start the same command again, ... and a last start runs to the end. A kill moment is an epoch
drawn uniformly from those the run has left, plus a uniform fraction of one epoch's time: the test
counts the run's resume-state writes (one per epoch, each a new file) and kills that long after the
drawn one. So kills land in training, in saving state or checkpoints, or in writing the outputs,
wherever the machine's load puts the run, never while torch is still being imported.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import CPU, run_script, script_command, script_env, snakemake_command, tiny_config

pytestmark = pytest.mark.slow

KILL_SEED = 20190207
WIDTH, CNN_EPOCHS, POINTS, RELAX_TIME = 8, 40, 8, 4  # checkpoints 0 1 2 4 8 13 23 40
KILLS = {"cnn": 4, "relax": 3, "fcn": 3}  # 10 trials in all


EPOCHS = {"cnn": CNN_EPOCHS, "relax": 10, "fcn": 8}


def stage_commands(data_dir, out: Path, cnn_checkpoints: Path) -> dict[str, tuple]:
    common = (
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        data_dir,
        "--width",
        WIDTH,
        "--batch-size",
        50,
        "--lr",
        "0.05",
        *CPU,
    )
    return {
        "cnn": (
            "train_cnn.py",
            *common,
            "--epochs",
            CNN_EPOCHS,
            "--checkpoint-points",
            POINTS,
            "--checkpoint-dir",
            out / "checkpoints",
            "--metrics",
            out / "metrics.csv",
        ),
        "relax": (
            "relax.py",
            *common,
            "--epochs",
            EPOCHS["relax"],
            "--arm",
            "efcn",
            "--relax-time",
            RELAX_TIME,
            "--checkpoint",
            cnn_checkpoints / f"epoch{RELAX_TIME}.pt",
            "--metrics",
            out / "metrics.csv",
            "--final-weights",
            out / "final.pt",
        ),
        "fcn": (
            "train_fcn.py",
            *common,
            "--epochs",
            EPOCHS["fcn"],
            "--metrics",
            out / "metrics.csv",
            "--final-weights",
            out / "final.pt",
        ),
    }


def declared_outputs(out: Path) -> list[Path]:
    """The stage's declared outputs (and any temporaries beside them) that exist now."""
    candidates = [
        out / "metrics.csv",
        out / "final.pt",
        *(out / "checkpoints").glob("*"),
        *out.glob(".*.tmp"),
    ]
    return sorted(path for path in candidates if path.is_file())


def load_tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_payload(path: Path, reference: Path) -> None:
    got, want = load_tensors(path), load_tensors(reference)
    assert got.keys() == want.keys(), path
    assert got["model"].keys() == want["model"].keys(), path
    for key, tensor in want["model"].items():
        assert torch.equal(got["model"][key], tensor), (
            f"{path}: {key} differs from the uninterrupted run"
        )
    assert got.get("optimizer", {}).get("param_groups") == want.get("optimizer", {}).get(
        "param_groups"
    ), path
    for key in set(want) - {"model", "optimizer"}:
        assert got[key] == want[key], f"{path}: {key}"


def assert_outputs_complete(out: Path, reference: Path) -> None:
    """Whatever declared output exists is whole: it equals the reference run's file of that name."""
    for path in declared_outputs(out):
        if path.name.startswith("."):
            continue  # a temporary of an atomic write: never a name anyone trusts
        twin = reference / path.relative_to(out)
        assert twin.exists(), f"{path} is not an output of the uninterrupted run"
        if path.suffix == ".csv":
            assert path.read_bytes() == twin.read_bytes(), f"{path} is truncated or differs"
        else:
            assert_same_payload(path, twin)


def training_seconds(stderr: str) -> float:
    match = re.search(r"epochs in ([0-9.]+) s", stderr)
    assert match, stderr
    return float(match.group(1))


def resumed_epochs(state: Path) -> int:
    """Epochs a rerun will skip: those in the resume state (0 when there is none)."""
    return len(load_tensors(state)["rows"]) - 1 if state.exists() else 0


def state_identity(state: Path):
    try:
        status = state.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns  # an atomic rewrite is a new inode


def kill_at_random(command: tuple, out: Path, writes: int, delay: float, log: list) -> None:
    """Start ``command``; after its ``writes``-th resume-state write, wait ``delay`` s and SIGKILL it."""
    state = out / "resume" / "state.pt"
    seen, last = 0, state_identity(state)
    process = subprocess.Popen(
        script_command(*command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=script_env(),
    )
    try:
        while process.poll() is None and seen < writes:
            current = state_identity(state)
            if current is not None and current != last:
                seen, last = seen + 1, current
            time.sleep(0.005)
        time.sleep(delay)
        finished = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    where = (
        "after the run ended"
        if finished
        else (
            f"with resume state at epoch {resumed_epochs(state)}"
            if state.exists()
            else "while exiting"
        )
    )
    log.append(f"{out.name}: SIGKILL {delay:.2f} s after resume-state write {writes}, {where}")


def kill_chain(
    name: str,
    command: tuple,
    out: Path,
    reference: Path,
    seconds: float,
    rng: random.Random,
    log: list,
) -> None:
    per_epoch = seconds / EPOCHS[name]
    for _ in range(KILLS[name]):
        left = EPOCHS[name] - resumed_epochs(out / "resume" / "state.pt")
        kill_at_random(command, out, rng.randint(1, max(left, 1)), rng.uniform(0, per_epoch), log)
        assert_outputs_complete(out, reference)
    result = run_script(*command)
    assert "ignoring resume state" not in result.stderr


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, fashion_dir):
    """Reference runs, and the same runs killed KILLS[stage] times each and rerun to the end."""
    root = tmp_path_factory.mktemp("resume")
    reference = {stage: root / "reference" / stage for stage in KILLS}
    killed = {stage: root / "killed" / stage for stage in KILLS}
    cnn_checkpoints = reference["cnn"] / "checkpoints"
    commands = {
        stage: stage_commands(fashion_dir, reference[stage], cnn_checkpoints)[stage]
        for stage in KILLS
    }
    chains = {
        stage: stage_commands(fashion_dir, killed[stage], cnn_checkpoints)[stage] for stage in KILLS
    }
    seconds = {}
    log: list[str] = []
    rngs = {stage: random.Random(f"{KILL_SEED}-{stage}") for stage in KILLS}
    lock = threading.Lock()

    def reference_run(stage):
        result = run_script(*commands[stage])
        with lock:
            seconds[stage] = training_seconds(result.stderr)

    def chain(stage):
        kill_chain(
            stage, chains[stage], killed[stage], reference[stage], seconds[stage], rngs[stage], log
        )

    with ThreadPoolExecutor(2) as pool:  # two processes at a time on 2 cores
        list(pool.map(reference_run, ["cnn", "fcn"]))
        list(pool.map(lambda job: job(), [lambda: reference_run("relax"), lambda: chain("cnn")]))
        list(pool.map(chain, ["fcn", "relax"]))
    print("\n".join(log))
    return reference, killed, log


def test_at_least_ten_kills_landed_while_training_or_writing(killed_runs):
    _, _, log = killed_runs
    assert len(log) >= 10
    assert sum("with resume state" in line for line in log) >= 8, "\n".join(log)


@pytest.mark.parametrize("stage", list(KILLS))
def test_a_killed_and_rerun_stage_ends_identical_to_an_uninterrupted_run(killed_runs, stage):
    reference, killed, _ = killed_runs
    ref, out = reference[stage], killed[stage]
    assert (out / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes()
    names = [path.relative_to(ref) for path in declared_outputs(ref)]
    assert names == [path.relative_to(out) for path in declared_outputs(out)]
    for name in names:
        if name.suffix == ".pt":
            assert_same_payload(out / name, ref / name)
    assert not (out / "resume").exists(), "a finished run leaves no resume state behind"
    leftovers = [p for p in out.rglob("*.tmp")]
    assert not leftovers, f"temporaries of killed writes were left behind: {leftovers}"


# -- the same through Snakemake -----------------------------------------------------------------------------
def test_snakemake_killed_during_training_resumes_on_rerun(tmp_path, fashion_dir):
    """SIGKILL to the driver and its jobs (a lost node), then a plain rerun: the default profile's
    rerun-incomplete reruns the interrupted job, which continues from its resume state."""
    config = tiny_config(
        fashion_dir,
        width=8,
        cnn={"epochs": 60, "checkpoint_points": 4},
        relax={"relax_times": [1], "epochs": 1},
        fcn={"epochs": 1},
    )
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = snakemake_command(tmp_path, configfile, "--cores", 2, "metrics")
    state = tmp_path / "results" / "tiny" / "seed0" / "cnn" / "resume" / "state.pt"
    driver = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=script_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (state.exists() and len(load_tensors(state)["rows"]) > 3):
            assert driver.poll() is None, "the workflow ended before the CNN got going"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the training job with it
        driver.wait()
    assert not (tmp_path / "results" / "tiny" / "seed0" / "cnn" / "metrics.csv").exists()
    env = script_env()
    # A killed driver leaves its lock: the documented first step is --unlock.
    subprocess.run(
        snakemake_command(tmp_path, configfile, "--unlock"),
        env=env,
        check=True,
        capture_output=True,
    )
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (tmp_path / "logs" / "tiny" / "seed0" / "train_cnn.log").read_text()
    assert "resuming cnn after epoch" in log, log[-2000:]
    metrics = pd.read_csv(tmp_path / "results" / "tiny" / "metrics.csv")
    assert set(metrics["arm"]) == {"cnn", "fcn", "efcn"}
    assert not state.parent.exists()
