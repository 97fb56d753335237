"""Specification of the SLURM profile, checked on a real (throwaway, one-node) SLURM scheduler.

The cluster comes from tests/slurm_cluster.py: 2 CPUs, the machine's memory, two count-only
GPUs (so `--gpus=1` requests are granted, nothing can use them), no accounting database.
What is test-specific is passed on the command line, exactly as a site would:
- `--slurm-status-command squeue`: without accounting, `sacct` never answers.
- short status-check intervals, so that a run does not sit idle between jobs;
- `--slurm-keep-successful-logs`, so that every job's log can be inspected;
- `--set-threads`: so that a value other than the config's one thread reaches --cpus-per-task.
Everything else (executor, retries, ...) is the profile as committed, and the resources are the
rules' own (runtime, memory, one GPU per job that runs a network).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import script_env
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
PROFILE_DIR = REPO / "profiles" / "slurm"
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"
# The rules that run a network: each asks SLURM for one GPU (the run below uses device auto).
NETWORK_RULES = ("train_cnn", "embed", "relax", "train_fcn", "landscape")
# landscape gets 2 so that threads -> --cpus-per-task is seen with a value other than 1; the others
# get 1 so that two jobs share the 2-CPU node and the run stays short.
TEST_THREADS = {"train_cnn": 1, "embed": 1, "relax": 1, "train_fcn": 1, "landscape": 2}
# The .test config runs on device cpu; the interrupted run uses auto, so that the network jobs ask
# for GPUs (the node's count-only GPUs are granted; the jobs then find no CUDA and use the CPU).
# Every call of that run passes the same config, or changed params would rerun finished jobs.
DEVICE_AUTO = ("--config", "device=auto")
CLUSTER_FLAGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
    "--slurm-keep-successful-logs",
    "--latency-wait",
    "5",
    "--set-threads",
    *(f"{rule}={threads}" for rule, threads in TEST_THREADS.items()),
]
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}
RUN_TIMEOUT_S = 600


def write_cluster_config(workdir: Path) -> str:
    """The .test experiment with its first seed only (every rule and arm, half the jobs), written
    into `workdir`; returns the experiment's name."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    ((name, settings),) = config["experiments"].items()
    settings["seeds"] = settings["seeds"][:1]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return name


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """`snakemake` on the real workflow and profile, results in `workdir`, test flags added."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        *args,  # first: targets must not follow a many-valued option such as --set-threads
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--executor",
        "slurm",
        "--workflow-profile",
        str(PROFILE_DIR),
        "--configfile",
        str(workdir / "config.yaml"),
        *CLUSTER_FLAGS,
    ]


def job_environment() -> dict[str, str]:
    """The driver's environment, which sbatch --export=ALL hands to every job: this venv first on
    PATH and no way to download anything (conftest.script_env), no SLURM_* of an enclosing job."""
    env = script_env()
    for name in [name for name in env if name.startswith("SLURM_")]:
        del env[name]
    return env


def run_snakemake(
    workdir: Path, *args: str, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_command(workdir, *args),
        cwd=REPO,
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class PlannedJob:
    """One job of a dry run: its rule, the SLURM comment the plugin gives it, its resources."""

    rule: str
    comment: str
    outputs: list[str]
    resources: dict[str, str]


def parse_dry_run(output: str) -> tuple[list[PlannedJob], list[str]]:
    """Jobs (rule, wildcards, resources) of a dry run, and the inputs of the final `all` job."""
    jobs, final_inputs = [], []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        header = re.match(r"(local)?rule (\w+):", block)
        if not header:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.MULTILINE))
        rule = header.group(2)
        if rule == "all":
            final_inputs = fields.get("input", "").split(", ")
            continue
        values = [
            pair.split("=", 1)[1] for pair in fields.get("wildcards", "").split(", ") if "=" in pair
        ]
        comment = f"rule_{rule}" + (f"_wildcards_{'_'.join(values)}" if values else "")
        resources = dict(
            pair.split("=", 1) for pair in fields.get("resources", "").split(", ") if "=" in pair
        )
        jobs.append(PlannedJob(rule, comment, fields.get("output", "").split(", "), resources))
    return jobs, final_inputs


def rule_of(comment: str) -> str:
    """`rule_relax_wildcards_...` -> `relax` (the plugin's --comment for each job)."""
    return re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment).group(1)


def slurm_minutes(time_limit: str) -> int:
    """scontrol's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = time_limit.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def slurm_megabytes(memory: str) -> int:
    """scontrol's MinMemoryNode (e.g. 2063M, 4G) in MB."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", memory).groups()
    return round(float(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit])


def jobs_of(cluster: SlurmCluster, workdir: Path) -> list[dict[str, str]]:
    """Every SLURM job the controller remembers that ran in `workdir`."""
    return [
        job
        for job in cluster.all_jobs()
        if os.path.realpath(job.get("WorkDir", "")) == os.path.realpath(workdir)
    ]


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class InterruptedRun:
    """The .test experiment on SLURM: driver SIGKILLed mid-run, then resumed to the end."""

    workdir: Path
    planned: list[PlannedJob]
    final_inputs: list[str]
    finished_before_kill: dict[
        str, dict[str, str]
    ]  # comment -> SLURM job, COMPLETED before the kill
    interrupted: list[dict[str, str]]  # SLURM jobs still queued or running at the kill
    output_mtimes: dict[str, float]  # outputs that existed once the interrupted jobs were cancelled
    jobs: list[dict[str, str]]  # every SLURM job of both runs, at the end
    first_log: str
    resumed_log: str


def killed_mid_relax(jobs: list[dict[str, str]]) -> bool:
    """Some relax job has finished while others still wait or run: kill the driver now."""
    relax_states = [
        job["JobState"] for job in jobs if rule_of(job.get("Comment", "rule_x")) == "relax"
    ]
    return "COMPLETED" in relax_states and any(state in ACTIVE_STATES for state in relax_states)


@pytest.fixture(scope="module")
def interrupted_run(slurm_cluster, tmp_path_factory) -> InterruptedRun:  # noqa: F811
    if not (SNAKEFILE.exists() and TEST_CONFIG.exists()):
        pytest.skip("workflow or .test config missing")
    workdir = tmp_path_factory.mktemp("slurm-run")
    write_cluster_config(workdir)
    logs = tmp_path_factory.mktemp("slurm-driver")

    dry = run_snakemake(workdir, "--dry-run", *DEVICE_AUTO, timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    planned, final_inputs = parse_dry_run(dry.stdout + dry.stderr)

    first_log = logs / "first.log"
    with open(first_log, "w") as log:
        driver = subprocess.Popen(
            snakemake_command(workdir, *DEVICE_AUTO),
            cwd=REPO,
            env=job_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not killed_mid_relax(jobs_of(slurm_cluster, workdir)):
            assert driver.poll() is None, f"driver ended before the kill point:\n{tail(first_log)}"
            assert time.monotonic() < deadline, f"no relax job finished in time:\n{tail(first_log)}"
            time.sleep(0.5)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(30)

    # The SLURM jobs outlive their driver; cancel them before resuming (docs/slurm.md).
    at_kill = jobs_of(slurm_cluster, workdir)
    interrupted = [job for job in at_kill if job["JobState"] in ACTIVE_STATES]
    if interrupted:
        slurm_cluster.run("scancel", *(job["JobId"] for job in interrupted))
    deadline = time.monotonic() + 60
    while any(job["JobState"] in ACTIVE_STATES for job in jobs_of(slurm_cluster, workdir)):
        assert time.monotonic() < deadline, "interrupted SLURM jobs did not end after scancel"
        time.sleep(0.5)
    finished = {job["Comment"]: job for job in at_kill if job["JobState"] == "COMPLETED"}
    output_mtimes = {
        output: (workdir / output).stat().st_mtime
        for job in planned
        for output in job.outputs
        if (workdir / output).exists()
    }

    # A SIGKILLed driver leaves its lock behind: unlock, then resume.
    unlock = run_snakemake(workdir, "--unlock", *DEVICE_AUTO, timeout=120)
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    resumed = run_snakemake(workdir, "--rerun-incomplete", *DEVICE_AUTO)
    resumed_log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, resumed_log[-6000:]
    return InterruptedRun(
        workdir,
        planned,
        final_inputs,
        finished,
        interrupted,
        output_mtimes,
        jobs_of(slurm_cluster, workdir),
        first_log.read_text(errors="replace"),
        resumed_log,
    )


def test_sbatch_and_srun_run_a_trivial_job_on_the_local_cluster(slurm_cluster):  # noqa: F811
    output = slurm_cluster.workdir / "trivial.out"
    job_id = slurm_cluster.sbatch(
        "--cpus-per-task=1",
        "--mem=50",
        "--time=1",
        f"--output={output}",
        "--wrap",
        "srun -n1 echo hello-from-slurm",
    )
    job = slurm_cluster.wait_for_job(job_id)
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
    assert "hello-from-slurm" in output.read_text()
    assert f"JobId={job_id}" in slurm_cluster.ctld_log_text()


@pytest.mark.slow
def test_every_training_job_runs_as_a_slurm_job_and_the_workflow_finishes(
    interrupted_run,
    slurm_cluster,  # noqa: F811 (the imported fixture)
):
    run = interrupted_run
    missing = [path for path in run.final_inputs if not (run.workdir / path).exists()]
    assert run.final_inputs and not missing, f"final outputs missing: {missing}"
    assert not [job for job in run.jobs if job["JobState"] not in {"COMPLETED", "CANCELLED"}], (
        run.jobs
    )

    submitted = {job["Comment"] for job in run.jobs}
    for rule in NETWORK_RULES:
        planned = {job.comment for job in run.planned if job.rule == rule}
        assert planned, f"the .test experiment has no {rule} job"
        assert planned <= submitted, f"{rule} jobs never submitted to SLURM: {planned - submitted}"
        for log in (run.first_log, run.resumed_log):
            assert f"localrule {rule}:" not in log, f"{rule} ran on the submit host"
    controller_log = slurm_cluster.ctld_log_text()
    for job in run.jobs:
        assert re.search(rf"submit_batch_job: JobId={job['JobId']}\b", controller_log), job["JobId"]
        assert Path(job["StdOut"]).is_relative_to(run.workdir / ".snakemake" / "slurm_logs")


@pytest.mark.slow
def test_threads_memory_runtime_and_gpus_reach_the_scheduler(interrupted_run):
    """threads -> --cpus-per-task, mem_mb -> --mem, runtime -> --time, gpu -> --gpus: what each
    rule declares reaches the scheduler through the profile as committed."""
    run = interrupted_run
    # The last submission of each job (a job cancelled by the kill asked for the same resources).
    submitted = {job["Comment"]: job for job in sorted(run.jobs, key=lambda job: int(job["JobId"]))}
    for planned in run.planned:
        job = submitted[planned.comment]
        threads = TEST_THREADS.get(planned.rule, 1)
        assert job["CPUs/Task"] == str(threads), (planned.comment, job["CPUs/Task"])
        assert slurm_megabytes(job["MinMemoryNode"]) == int(planned.resources["mem_mb"]), (
            planned.comment
        )
        assert slurm_minutes(job["TimeLimit"]) == int(planned.resources["runtime"]), planned.comment
        if planned.rule in NETWORK_RULES and Path(job["StdOut"]).exists():
            # the CPUs SLURM grants are the threads torch uses (the stage script's --threads)
            assert f"--threads {threads} " in Path(job["StdOut"]).read_text(errors="replace"), (
                planned.comment
            )
        if planned.rule in NETWORK_RULES:
            assert planned.resources["gpu"] == "1", planned.comment
            assert job.get("TresPerJob") == "gres:gpu:1", (planned.comment, job.get("TresPerJob"))
        else:
            assert "gpu" not in job.get("TresPerJob", ""), planned.comment


@pytest.mark.slow
def test_resumed_run_does_not_retrain_jobs_that_finished_before_the_kill(interrupted_run):
    run = interrupted_run
    finished_rules = {rule_of(comment) for comment in run.finished_before_kill}
    assert "train_cnn" in finished_rules and "relax" in finished_rules, finished_rules

    submissions: dict[str, list[dict[str, str]]] = {}
    for job in sorted(run.jobs, key=lambda job: int(job["JobId"])):
        submissions.setdefault(job["Comment"], []).append(job)
    resubmitted = [
        comment for comment in run.finished_before_kill if len(submissions[comment]) != 1
    ]
    assert not resubmitted, f"finished jobs submitted again: {resubmitted}"

    # A job cancelled in its last second may have completed its outputs (and Snakemake's record of
    # them): it need not run again. Every other interrupted job must, and must complete.
    outputs = {job.comment: job.outputs for job in run.planned}
    unfinished = [
        job["Comment"]
        for job in run.interrupted
        if not all(output in run.output_mtimes for output in outputs[job["Comment"]])
    ]
    assert unfinished, "the kill interrupted no unfinished job"
    for comment in unfinished:
        attempts = submissions[comment]
        assert len(attempts) == 2 and attempts[-1]["JobState"] == "COMPLETED", (comment, attempts)

    # Every output of a job finished before the kill was still there at the kill, except the
    # temp() ones the first driver removed as planned once their consumers had finished.
    removed_as_temporary = set(re.findall(r"Removing temporary output (\S+)\.\n", run.first_log))
    finished_outputs = [
        output for comment in run.finished_before_kill for output in outputs[comment]
    ]
    lost = [
        output
        for output in finished_outputs
        if output not in run.output_mtimes and output not in removed_as_temporary
    ]
    assert finished_outputs and not lost, f"outputs of finished jobs gone at the kill: {lost}"
    changed = [
        output
        for output in finished_outputs
        if (run.workdir / output).exists()  # temp() outputs may be gone once used
        and (run.workdir / output).stat().st_mtime != run.output_mtimes[output]
    ]
    assert not changed, f"outputs of finished jobs rewritten: {changed}"


@pytest.fixture
def prepared_data(tmp_path) -> Path:
    """Fashion-MNIST prepared by the real stage script, outside SLURM (the failing run needs no prepare job)."""
    data_dir = tmp_path / "data"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "workflow" / "scripts" / "prepare_data.py"),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(data_dir),
            "--done",
            str(data_dir / "fashion-mnist.ready"),
        ],
        check=True,
        env=job_environment(),
    )
    return data_dir


@pytest.mark.slow
def test_a_training_job_that_fails_on_the_cluster_is_reported_with_its_slurm_log(
    slurm_cluster,  # noqa: F811 (the imported fixture)
    prepared_data,
    tmp_path,
):
    """A GPU job that finds no CUDA device (device=cuda on the CPU-only node) fails; the driver says where to look."""
    if not (SNAKEFILE.exists() and TEST_CONFIG.exists()):
        pytest.skip("workflow or .test config missing")
    workdir = tmp_path / "failing"
    workdir.mkdir()
    one_cnn = f"results/{write_cluster_config(workdir)}/seed0/cnn/metrics.csv"
    result = run_snakemake(workdir, one_cnn, "--config", "device=cuda", f"data_dir={prepared_data}")
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-4000:]

    jobs = [
        job for job in jobs_of(slurm_cluster, workdir) if rule_of(job["Comment"]) == "train_cnn"
    ]
    assert len(jobs) == 1, log[-4000:]
    job = jobs[0]
    assert job["JobState"] == "FAILED" and job["ExitCode"] != "0:0", job
    slurm_log = Path(job["StdOut"])
    assert slurm_log.exists() and "Error in rule train_cnn" in slurm_log.read_text(errors="replace")
    assert "Error in rule train_cnn" in log
    assert f"SLURM-job '{job['JobId']}' failed" in log, log[-4000:]
    assert str(slurm_log) in log, f"driver does not name the SLURM log {slurm_log}:\n{log[-4000:]}"
    assert "no CUDA device is visible" in log  # show-failed-logs: the rule's own log is printed
