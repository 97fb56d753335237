"""Bad input to a stage script stops it with one line that names what is wrong and how to fix it,
and touches no results: bad arguments, bad start files (checkpoints, embeddings, final weights),
divergence under `fail`, and a full disk.

Every case starts from a results folder that already holds files, and proves afterwards that each
of them still has the same bytes and modification time.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import (
    CPU,
    PYTHON,
    SCRIPTS,
    populated_results,
    run_script,
    run_scripts,
    script_env,
    snapshot,
)

from needle import checkpoints

pytestmark = pytest.mark.slow  # ~30 stage subprocesses

WIDTH = ("--width", 4)
DATA = ("--dataset", "fashion-mnist", "--validation-size", 20, *WIDTH, *CPU)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and one error line, the last thing on stderr (progress bars may precede it)."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.stderr[-2000:]
    line = lines[-1]
    assert line.startswith("needle: error: "), line
    for needle in needles:
        assert needle in line, line
    return line


def relax_command(fashion_dir, results: Path, start: Path, *, arm="efcn", extra=()):
    out = results / arm / "relax_at_epoch1"
    return (
        "relax.py",
        *DATA,
        *("--data-dir", fashion_dir, "--epochs", 1, "--batch-size", 50),
        *("--arm", arm, "--relax-time", 1, "--start", start),
        *("--metrics", out / "metrics.csv", "--final-weights", out / "final.pt", *extra),
    )


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, fashion_dir) -> Path:
    """A CNN with checkpoints at epochs 0 and 1, and the eFCN embedding of epoch 1."""
    out = tmp_path_factory.mktemp("cnn")
    run_script(
        "train_cnn.py",
        *DATA,
        *("--data-dir", fashion_dir, "--epochs", 1, "--checkpoint-points", 2, "--batch-size", 50),
        *("--checkpoint-dir", out / "checkpoints", "--metrics", out / "metrics.csv"),
    )
    run_script(
        "embed.py",
        *DATA,
        *("--data-dir", fashion_dir, "--arm", "efcn", "--relax-time", 1),
        *("--checkpoint", out / "checkpoints" / "epoch1.pt"),
        *("--embedded", out / "embedded.pt", "--record", out / "embedding.csv"),
    )
    return out


# -- bad arguments ---------------------------------------------------------------------------------------
ARGUMENT_ERRORS = {
    # case: (arguments replacing the good ones, words the error line must contain)
    "lr 0": (("--lr", "0"), ["argument --lr: must be a finite number > 0, got 0"]),
    "lr nan": (("--lr", "nan"), ["argument --lr: must be a finite number > 0, got nan"]),
    "momentum 1": (("--momentum", "1"), ["argument --momentum: must be a finite number >= 0"]),
    "width 8.0": (("--width", "8.0"), ["argument --width: must be an integer >= 1, got '8.0'"]),
    "seed 2^64": (
        ("--seed", str(2**64)),
        ["argument --seed: must be an integer >= 0 and <= 2147483647"],
    ),
    "loss factor 1": (
        ("--divergence-loss-factor", "1"),
        ["argument --divergence-loss-factor: must be a finite number > 1"],
    ),
    "epochs 0": (("--epochs", "0"), ["argument --epochs: must be an integer >= 1, got 0"]),
    "unknown flag": (("--learning-rate", "0.1"), ["unrecognized arguments: --learning-rate"]),
    "unknown arm": (("--arm", "fcn"), ["argument --arm: invalid choice: 'fcn'"]),
}


def test_bad_arguments_are_one_line_naming_the_flag_and_nothing_is_written(tmp_path, cnn):
    results = tmp_path / "results"
    before = populated_results(results)
    good = relax_command(tmp_path / "data", results, cnn / "embedded.pt")
    outcomes = run_scripts(
        [good + arguments for arguments, _ in ARGUMENT_ERRORS.values()], check=False
    )
    for (case, (_, words)), result in zip(ARGUMENT_ERRORS.items(), outcomes):
        line = assert_one_line_error(result, "relax.py", *words)
        assert "see --help" in line, case
    assert snapshot(results) == before


# -- start files ---------------------------------------------------------------------------------------------
def bad_starts(cnn: Path, folder: Path) -> dict[str, Path]:
    """Broken or mismatched files for relax.py --start, each named for what is wrong with it."""
    folder.mkdir()
    good_cnn, good_efcn = cnn / "checkpoints" / "epoch1.pt", cnn / "embedded.pt"
    paths = {name: folder / f"{name}.pt" for name in EXPECTED_START_ERRORS}
    content = good_efcn.read_bytes()
    paths["truncated"].write_bytes(content[: len(content) // 2])
    paths["corrupt"].write_bytes(b"\x89 this is not a checkpoint \x00" * 64)
    torch.save({"weights": torch.zeros(3)}, paths["not_needle"])
    embedded = torch.load(good_efcn, weights_only=True)
    wider = dict(embedded["architecture"], width=8)
    checkpoints.save(dict(embedded, architecture=wider), paths["wrong_width"])
    wrong_tensors = dict(embedded["model"], **{"conv1.weight": torch.zeros(3, 3)})
    checkpoints.save(dict(embedded, model=wrong_tensors), paths["wrong_tensors"])
    checkpoints.save(dict(embedded, relax_time=0), paths["wrong_relax_time"])
    checkpoints.save(dict(embedded, kind="elcn"), paths["an_elcn"])
    checkpoints.save(dict(embedded, dense_layout="dense2d-v1"), paths["old_layout"])
    shutil.copyfile(good_cnn, paths["a_cnn_checkpoint"])
    return paths


EXPECTED_START_ERRORS = {
    "truncated": ("is unreadable (truncated or corrupt", "delete it and rerun"),
    "corrupt": ("is unreadable (truncated or corrupt", "delete it and rerun"),
    "not_needle": ("is not a needle checkpoint", "delete it and rerun"),
    "wrong_width": ("was made for another architecture: width=8 (config says 4)", "fix the config"),
    "wrong_tensors": ("does not fit the configured network", "conv1.weight", "fix the config"),
    "wrong_relax_time": ("holds relax_time 0, not relax time 1",),
    "an_elcn": ("holds a 'elcn', not the efcn", "delete it and rerun"),
    "old_layout": ("another layout ('dense2d-v1'", "delete it and rerun"),
    "a_cnn_checkpoint": ("holds a 'cnn', not the efcn",),
}


def test_relax_refuses_bad_start_files_with_one_line_and_leaves_results_alone(
    cnn, tmp_path, fashion_dir
):
    paths = bad_starts(cnn, tmp_path / "bad")
    results = tmp_path / "results"
    before = populated_results(results)
    commands = [relax_command(fashion_dir, results, paths[name]) for name in EXPECTED_START_ERRORS]
    for name, result in zip(EXPECTED_START_ERRORS, run_scripts(commands, check=False)):
        assert_one_line_error(result, str(paths[name]), *EXPECTED_START_ERRORS[name])
    assert snapshot(results) == before


def test_embed_and_the_control_refuse_a_file_that_is_no_cnn_checkpoint(cnn, tmp_path, fashion_dir):
    results = tmp_path / "results"
    before = populated_results(results)
    wrong_epoch = tmp_path / "epoch0_as_1.pt"
    shutil.copyfile(cnn / "checkpoints" / "epoch0.pt", wrong_epoch)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((cnn / "checkpoints" / "epoch1.pt").read_bytes()[:100])
    embed, control = run_scripts(
        [
            (
                "embed.py",
                *DATA,
                *("--data-dir", fashion_dir, "--arm", "elcn", "--relax-time", 1),
                *("--checkpoint", truncated),
                *("--embedded", results / "e.pt", "--record", results / "e.csv"),
            ),
            relax_command(fashion_dir, results, wrong_epoch, arm="cnn_continued"),
        ],
        check=False,
    )
    assert_one_line_error(embed, f"CNN checkpoint {truncated} is unreadable")
    assert_one_line_error(control, str(wrong_epoch), "holds epoch 0, not relax time 1")
    assert snapshot(results) == before


def test_the_landscape_refuses_final_weights_written_with_another_dense_layout(
    cnn, tmp_path, fashion_dir
):
    run = tmp_path / "relax"
    run_script(*relax_command(fashion_dir, run, cnn / "embedded.pt"))
    final = run / "efcn" / "relax_at_epoch1" / "final.pt"
    old = tmp_path / "old_final.pt"
    checkpoints.save(dict(torch.load(final, weights_only=True), dense_layout="dense2d-v1"), old)
    results = tmp_path / "results"
    before = populated_results(results)
    result = run_script(
        "landscape.py",
        *DATA,
        *("--data-dir", fashion_dir, "--experiment", "tiny", "--relax-times", 1),
        *("--cnn-checkpoints", cnn / "checkpoints" / "epoch1.pt"),
        *("--efcn-finals", final, "--fcn-final", old, "--points", 2, "--examples", 10),
        *("--output", results / "landscape.csv"),
        check=False,
    )
    assert_one_line_error(result, str(old), "another layout", "'dense2d-v1'", "delete it")
    assert snapshot(results) == before


# -- divergence under fail -------------------------------------------------------------------------------------
def test_a_diverging_run_under_fail_stops_with_its_reason_and_leaves_nothing(
    cnn, tmp_path, fashion_dir
):
    results = tmp_path / "results"
    before = populated_results(results)
    failing = ("--on-divergence", "fail")
    at_chance = results / "cnn_at_chance"
    relax, chance = run_scripts(
        [
            # over the earlier finished run of the same arm and relax time
            relax_command(
                fashion_dir, results, cnn / "embedded.pt", extra=("--lr", "1e6", *failing)
            ),
            (
                "train_cnn.py",
                *DATA,
                *("--data-dir", fashion_dir, "--epochs", 3, "--lr", "1e-9", *failing),
                *("--checkpoint-dir", at_chance / "checkpoints"),
                *("--metrics", at_chance / "metrics.csv"),
            ),
        ],
        check=False,
    )
    assert_one_line_error(
        relax,
        "efcn relaxed at epoch 1 diverged at epoch 2: non-finite loss",
        "lower optimiser.lr",
        "on_divergence: record",
    )
    assert_one_line_error(
        chance,
        "cnn diverged at epoch 3: train accuracy at chance",
        "divergence.chance_epochs",
    )
    assert snapshot(results) == before, "no outputs, checkpoints or resume state of a failed run"


# -- a full disk -------------------------------------------------------------------------------------------------
def run_on_a_full_disk(tmp_path: Path, command: tuple, size: str) -> tuple[int, str, list[str]]:
    """Run a stage script with its outputs on a tmpfs of ``size`` (a private mount in a user
    namespace); returns its exit status, stderr and the files it left on that file system."""
    disk, report = tmp_path / "disk", tmp_path / "report"
    disk.mkdir()
    report.mkdir()
    arguments = " ".join(
        f"'{argument}'" for argument in (PYTHON, SCRIPTS / command[0], *command[1:])
    )
    script = (
        f"mount -t tmpfs -o size={size} needle-full-disk '{disk}' || exit 97\n"
        f"{arguments} 2> '{report}/stderr'; echo $? > '{report}/status'\n"
        f"cd '{disk}' && find . -type f | sort > '{report}/files'\n"
    )
    namespace = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
    result = subprocess.run(namespace, env=script_env(), capture_output=True, text=True)
    if result.returncode == 97 or not (report / "status").exists():
        pytest.skip(f"cannot mount a small file system here: {result.stderr.strip()[:200]}")
    files = (report / "files").read_text().split()
    return int((report / "status").read_text()), (report / "stderr").read_text(), files


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(
    tmp_path, fashion_dir
):
    out = tmp_path / "disk" / "fcn"
    command = (
        "train_fcn.py",
        *DATA,
        *("--data-dir", fashion_dir, "--epochs", 1, "--batch-size", 50),
        *("--metrics", out / "metrics.csv", "--final-weights", out / "final.pt"),
    )
    status, stderr, files = run_on_a_full_disk(tmp_path, command, "1m")  # the state needs 3 MB
    result = subprocess.CompletedProcess(command, status, "", stderr)
    assert_one_line_error(result, f"no space left on device: {out / 'resume' / 'state.pt'}")
    assert files == ["./fcn/resume/identity.txt"], "no temporary, no output, no partial state"
