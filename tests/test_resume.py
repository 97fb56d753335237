"""Resume: a run killed at any moment continues from its last finished epoch, never redoes one, and
ends bit-identical to an uninterrupted run; state made from other inputs is never continued; no
declared output is ever seen truncated.

The first part runs the loop in-process (a kill is an exception raised right after a state write).
The second part runs the stage scripts as subprocesses and SIGKILLs them at observable events:
right after the n-th resume-state write (n drawn with a fixed seed: the process is then training
the next epoch), or as soon as its first declared output appears (the process is then publishing
its outputs). Each restarted process must say from which epoch it resumed and which epochs it
trained itself, and those must be exactly the ones left.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml
from conftest import CPU, run_script, script_command, script_env, snakemake_command, tiny_config

from needle import checkpoints
from needle.resume import ResumeState
from needle.training import TrainConfig, Trainer


# -- in-process: the loop and its resume state ----------------------------------------------------------
class Killed(Exception):
    """Stands for SIGKILL right after a state write."""


class KilledAfterWrites(ResumeState):
    writes_left = None

    def save(self, rows, model, optimizer):
        super().save(rows, model, optimizer)
        if self.writes_left is not None:
            self.writes_left -= 1
            if self.writes_left == 0:
                raise Killed


def tiny_data():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    images = torch.randn(60, 1, 2, 2, generator=generator)
    images.view(60, -1)[torch.arange(60), labels] += 3.0
    return SimpleNamespace(
        train_x=images,
        train_y=labels,
        validation_x=images[:0],
        validation_y=labels[:0],
        test_x=images[:30],
        test_y=labels[:30],
        num_classes=3,
    )


def model():
    torch.manual_seed(0)  # the same init in every "process", as a stage builds it
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def same(rows, other) -> bool:
    """Equal rows, NaN (no validation split) equal to NaN."""
    return repr(rows) == repr(other)


def start_process(folder, *, identity="run A", kill_after=None, probe=None):
    """One 'process': a fresh network and trainer on the resume folder; returns (rows, model, log)
    or raises Killed."""
    log = io.StringIO()
    resume = KilledAfterWrites.claim(folder, identity, log=log)
    resume.writes_left = kill_after
    net = model()
    config = TrainConfig(epochs=6, lr=0.05, momentum=0.5, batch_size=10)
    trainer = Trainer(net, tiny_data(), config, name="run", probe=probe, resume=resume, log=log)
    try:
        return trainer.run(), net, log.getvalue()
    except Killed:
        return None, net, log.getvalue()


def test_a_resumed_run_trains_only_the_epochs_left_and_ends_identical(tmp_path):
    reference_rows, reference, _ = start_process(tmp_path / "reference")
    folder = tmp_path / "killed"
    rows, _, log = start_process(folder, kill_after=4)  # the state of epoch 3 is written
    assert rows is None and "this process trained" not in log

    probed = []
    rows, resumed, log = start_process(folder, probe=lambda net, test: probed.append(1) or {})
    assert "resuming after epoch 3" in log
    assert "this process trained epochs 4-6" in log
    assert len(probed) == 3, "only epochs 4, 5 and 6 were evaluated by this process"
    assert same(rows, reference_rows)
    for key, tensor in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], tensor), key


def test_a_run_killed_after_its_last_epoch_trains_nothing_when_restarted(tmp_path):
    reference_rows, _, _ = start_process(tmp_path / "reference")
    start_process(tmp_path / "killed", kill_after=7)
    rows, _, log = start_process(tmp_path / "killed")
    assert "this process trained no epochs" in log and same(rows, reference_rows)


def test_state_made_from_other_inputs_is_cleared_and_the_run_starts_afresh(tmp_path):
    start_process(tmp_path, identity="run A", kill_after=3)
    assert (tmp_path / "state.pt").exists()
    rows, _, log = start_process(tmp_path, identity="run A with another lr")
    assert "ignoring resume state" in log and "resuming" not in log
    assert "this process trained epochs 1-6" in log and len(rows) == 7


def test_an_unreadable_state_is_ignored_with_one_line_and_the_run_starts_afresh(tmp_path):
    start_process(tmp_path, kill_after=3)
    (tmp_path / "state.pt").write_bytes(b"truncated by a full disk")
    rows, _, log = start_process(tmp_path)
    assert re.search(r"ignoring resume state: resume state \S+state.pt is unreadable", log)
    assert "this process trained epochs 1-6" in log and len(rows) == 7


def test_clearing_removes_what_the_resume_state_wrote_and_nothing_else(tmp_path):
    start_process(tmp_path, kill_after=3)
    resume = ResumeState.claim(tmp_path, "run A")
    resume.stage_checkpoint(0, {"format": checkpoints.FORMAT, "model": {}})
    (tmp_path / "notes.txt").write_text("a user's file in the wrong place")
    resume.clear()
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["notes.txt"]
    (tmp_path / "notes.txt").unlink()
    ResumeState.claim(tmp_path, "run A").clear()
    assert not tmp_path.exists(), "an emptied resume folder is removed"


def test_published_checkpoints_are_whole_copies_and_the_staged_files_stay_until_cleared(tmp_path):
    resume = ResumeState.claim(tmp_path / "resume", "cnn")
    for epoch in (0, 2):
        resume.stage_checkpoint(epoch, {"format": checkpoints.FORMAT, "epoch": epoch})
    resume.publish_checkpoints([0, 2], tmp_path / "checkpoints")
    for epoch in (0, 2):
        published = tmp_path / "checkpoints" / f"epoch{epoch}.pt"
        assert checkpoints.load(published)["epoch"] == epoch
        assert (tmp_path / "resume" / "checkpoints" / published.name).exists()
    resume.clear()
    assert not (tmp_path / "resume").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch0.pt",
        "epoch2.pt",
    ]


# -- stage scripts killed with SIGKILL ------------------------------------------------------------------------
KILL_SEED = 20190207
WIDTH, CNN_EPOCHS, POINTS, RELAX_TIME = 8, 40, 8, 4  # checkpoints 0 1 2 4 8 13 23 40
EPOCHS = {"cnn": CNN_EPOCHS, "relax": 10, "fcn": 8}
KILLS = {"cnn": 4, "relax": 3, "fcn": 3}  # the last kill of each chain lands in publishing
FIRST_OUTPUT = {"cnn": "checkpoints/epoch0.pt", "relax": "final.pt", "fcn": "final.pt"}


def stage_commands(data_dir, out: Path, start: Path) -> dict[str, tuple]:
    common = (
        *("--dataset", "fashion-mnist", "--data-dir", data_dir, "--width", WIDTH),
        *("--batch-size", 50, "--lr", "0.05", "--momentum", "0.5", *CPU),
    )
    metrics = ("--metrics", out / "metrics.csv")
    return {
        "cnn": (
            "train_cnn.py",
            *common,
            *("--epochs", CNN_EPOCHS, "--checkpoint-points", POINTS),
            *("--checkpoint-dir", out / "checkpoints", *metrics),
        ),
        "relax": (
            "relax.py",
            *common,
            *("--epochs", EPOCHS["relax"], "--arm", "efcn", "--relax-time", RELAX_TIME),
            *("--start", start, *metrics, "--final-weights", out / "final.pt"),
        ),
        "fcn": (
            "train_fcn.py",
            *common,
            *("--epochs", EPOCHS["fcn"], *metrics, "--final-weights", out / "final.pt"),
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
    for key, tensor in want["model"].items():
        assert torch.equal(got["model"][key], tensor), f"{path}: {key} differs"
    for key in set(want) - {"model", "optimizer"}:
        assert got[key] == want[key], f"{path}: {key}"


def assert_outputs_whole(out: Path, reference: Path) -> None:
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


def state_epoch(out: Path) -> int | None:
    """The last epoch in the run's resume state (None when there is none)."""
    state = out / "resume" / "state.pt"
    return load_tensors(state)["rows"][-1]["epoch"] if state.exists() else None


def state_identity(state: Path):
    try:
        status = state.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns  # an atomic rewrite is a new inode


def start_and_kill(command: tuple, out: Path, event: tuple, stderr: Path) -> str:
    """Start ``command`` and SIGKILL it at ``event``: ("state", n) right after its n-th
    resume-state write, ("publish", path) as soon as ``out / path`` exists. Returns where it was."""
    state = out / "resume" / "state.pt"
    seen, last = 0, state_identity(state)
    with open(stderr, "w") as log:
        process = subprocess.Popen(
            script_command(*command), stdout=subprocess.DEVNULL, stderr=log, env=script_env()
        )
        try:
            while process.poll() is None:
                if event[0] == "publish" and (out / event[1]).exists():
                    break
                current = state_identity(state)
                if current is not None and current != last:
                    seen, last = seen + 1, current
                    if event[0] == "state" and seen == event[1]:
                        break
                time.sleep(0.002)  # polling interval, not a wait for a guessed moment
            finished = process.poll() is not None
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return "after the run ended" if finished else f"at {event[0]} event {event[1]}"


def assert_resumed_without_redoing(log: str, resumed_after: int | None, last_epoch: int):
    """The process said where it resumed and trained exactly the epochs left."""
    if resumed_after is None:
        assert "resuming after epoch" not in log, log[-2000:]
        return
    assert f"resuming after epoch {resumed_after} " in log, log[-2000:]
    trained = re.search(r"this process trained (no epochs|epochs? (\d+)(-(\d+))?)", log)
    if trained:  # the process lived to the end of its run
        if resumed_after == last_epoch:
            assert trained.group(1) == "no epochs", log[-2000:]
        else:
            first, last = trained.group(2), trained.group(4) or trained.group(2)
            assert (first, last) == (str(resumed_after + 1), str(last_epoch)), log[-2000:]


def kill_chain(name, command, out, reference, rng, log_lines) -> None:
    last_epoch = {"cnn": CNN_EPOCHS, "relax": RELAX_TIME + EPOCHS["relax"], "fcn": EPOCHS["fcn"]}
    for kill in range(KILLS[name]):
        resumed_after = state_epoch(out)
        done = (
            0 if resumed_after is None else resumed_after - (RELAX_TIME if name == "relax" else 0)
        )
        left = EPOCHS[name] - done
        if kill == KILLS[name] - 1:
            event = ("publish", FIRST_OUTPUT[name])
        else:  # a write before the last one: the process is then training the next epoch
            event = ("state", rng.randint(1, max(left - 1, 1)))
        stderr = out.parent / f"{name}-start{kill}.log"
        where = start_and_kill(command, out, event, stderr)
        log_lines.append(f"{name} start {kill}: resumed after {resumed_after}, SIGKILL {where}")
        assert_resumed_without_redoing(stderr.read_text(), resumed_after, last_epoch[name])
        assert_outputs_whole(out, reference)
    resumed_after = state_epoch(out)
    result = run_script(*command)
    assert "ignoring resume state" not in result.stderr
    assert "this process trained" in result.stderr
    assert_resumed_without_redoing(result.stderr, resumed_after, last_epoch[name])


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, fashion_dir):
    """Reference runs, and the same runs killed KILLS[stage] times each and rerun to the end."""
    root = tmp_path_factory.mktemp("resume")
    reference = {stage: root / "reference" / stage for stage in KILLS}
    killed = {stage: root / "killed" / stage for stage in KILLS}
    start = root / "embedded.pt"
    commands = {
        stage: stage_commands(fashion_dir, reference[stage], start)[stage] for stage in KILLS
    }
    chains = {stage: stage_commands(fashion_dir, killed[stage], start)[stage] for stage in KILLS}
    log: list[str] = []
    rngs = {stage: random.Random(f"{KILL_SEED}-{stage}") for stage in KILLS}

    def embed():
        run_script(
            "embed.py",
            *("--dataset", "fashion-mnist", "--data-dir", fashion_dir, "--width", WIDTH, *CPU),
            *("--arm", "efcn", "--relax-time", RELAX_TIME, "--embedded", start),
            *("--checkpoint", reference["cnn"] / "checkpoints" / f"epoch{RELAX_TIME}.pt"),
            *("--record", root / "embedding.csv"),
        )

    def chain(stage):
        killed[stage].mkdir(parents=True)
        kill_chain(stage, chains[stage], killed[stage], reference[stage], rngs[stage], log)

    with ThreadPoolExecutor(2) as pool:  # two processes at a time on 2 cores
        list(pool.map(lambda stage: run_script(*commands[stage]), ["cnn", "fcn"]))
        list(pool.map(lambda job: job(), [embed, lambda: chain("cnn")]))
        list(
            pool.map(
                lambda job: job(), [lambda: run_script(*commands["relax"]), lambda: chain("fcn")]
            )
        )
        chain("relax")
    print("\n".join(log))
    return reference, killed, log


@pytest.mark.slow
def test_every_kill_landed_while_the_run_was_training_or_publishing(killed_runs):
    _, _, log = killed_runs
    assert len(log) == sum(KILLS.values())
    assert all("after the run ended" not in line for line in log), "\n".join(log)


@pytest.mark.slow
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
    assert not list(out.rglob("*.tmp")), "temporaries of killed writes were left behind"


# -- the same through Snakemake -----------------------------------------------------------------------------
@pytest.mark.slow
def test_snakemake_killed_during_training_resumes_on_rerun(tmp_path, fashion_dir):
    """SIGKILL to the driver and its jobs (a lost node), then a plain rerun: the default profile's
    rerun-incomplete reruns the interrupted job, which continues from its resume state."""
    config = tiny_config(fashion_dir, width=8, cnn={"epochs": 60, "checkpoint_points": 4})
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = snakemake_command(tmp_path, configfile, "--cores", 2, "cnn")
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
    resumed_after = load_tensors(state)["rows"][-1]["epoch"]
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
    assert_resumed_without_redoing(log, resumed_after, 60)
    assert len(pd.read_csv(tmp_path / "results" / "tiny" / "seed0" / "cnn" / "metrics.csv")) == 61
    assert not state.parent.exists()
