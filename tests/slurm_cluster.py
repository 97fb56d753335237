"""A throwaway single-node SLURM cluster on 127.0.0.1 for tests.

`local_slurm_cluster()` starts munged (if no munge daemon answers yet), writes a
one-node slurm.conf, starts slurmctld and slurmd in the foreground as child
processes, waits until the node is idle and yields a `SlurmCluster` with
helpers to submit and inspect jobs. On exit it cancels all jobs, stops the
daemons it started and restores the machine's previous /etc/slurm/slurm.conf
and gres.conf.

The config has to live at /etc/slurm/slurm.conf: `srun` inside a job (which
Snakemake's slurm-jobstep executor uses) reads the compiled-in path, not the
caller's SLURM_CONF, so the daemons, the clients and the job steps all have to
agree on that file. That, binding ports 6817/6818 and running jobs as any user
is why this needs root.

When the packages are missing, we are not root, or another SLURM already runs
here, the context manager raises `SlurmUnavailable`; the `slurm_cluster`
pytest fixture turns that into a skip (or a failure when
NEEDLE_REQUIRE_SLURM=1, so CI cannot pass by skipping).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
CTLD_PORT, SLURMD_PORT = 6817, 6818
NODE = "localhost"
PARTITION = "debug"
REQUIRED_BINARIES = (
    "munged",
    "munge",
    "unmunge",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
# Jobs must stay visible to `squeue`/`scontrol` for a while after they end:
# without accounting, squeue is the only status source for Snakemake.
MIN_JOB_AGE_S = 3600
# GPUs backed by empty placeholder files: the scheduler grants `--gpus=N` requests, so that the
# workflow's GPU requests meet a real scheduler; nothing in a job can use them.
FAKE_GPUS = 2
CONF_MARKER = "# Throwaway single-node test cluster written by tests/slurm_cluster.py"


class SlurmUnavailable(RuntimeError):
    """This machine cannot host the throwaway cluster (no packages, not root, ...)."""


@dataclass
class SlurmCluster:
    """Handle on the running throwaway cluster."""

    workdir: Path
    cpus: int
    real_memory_mb: int
    ctld_log: Path
    slurmd_log: Path
    partition: str = PARTITION

    def run(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a SLURM client command and return the completed process (text mode)."""
        return subprocess.run(
            list(args), capture_output=True, text=True, check=check, timeout=timeout
        )

    def sbatch(self, *args: str) -> str:
        """Submit with `sbatch --parsable ARGS...` and return the job id."""
        out = self.run("sbatch", "--parsable", *args).stdout.strip()
        return out.split(";")[0]

    def show_job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (keys like JobState, NumCPUs, TimeLimit, ...)."""
        text = self.run("scontrol", "-o", "show", "job", str(job_id)).stdout
        return parse_scontrol_record(text)

    def all_jobs(self) -> list[dict[str, str]]:
        """Every job the controller still remembers (finished ones for MinJobAge seconds)."""
        text = self.run("scontrol", "-o", "show", "job", check=False).stdout
        return [
            parse_scontrol_record(line) for line in text.splitlines() if line.startswith("JobId=")
        ]

    def wait_for_job(self, job_id: str, timeout: float = 60) -> dict[str, str]:
        """Poll until the job left PENDING/RUNNING/COMPLETING; return its record."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.show_job(job_id)
            if info.get("JobState") not in {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING"}:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"SLURM job {job_id} still {info.get('JobState')} after {timeout}s"
                )
            time.sleep(0.5)

    def ctld_log_text(self) -> str:
        """The controller's log so far (records every submission, start and end)."""
        return self.ctld_log.read_text(errors="replace") if self.ctld_log.exists() else ""

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait until none runs any more."""
        self.run("scancel", "--full", "--user", "root", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(
                "squeue",
                "--noheader",
                "--states=PENDING,RUNNING,COMPLETING,CONFIGURING",
                "--format=%i",
                check=False,
            ).stdout
            if not out.strip():
                return
            time.sleep(0.5)


def parse_scontrol_record(text: str) -> dict[str, str]:
    """Parse one `scontrol -o show ...` line of space-separated `Key=Value` pairs
    (values with spaces, e.g. paths, come out truncated: the tests use none)."""
    record: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep:
            record[key] = value
    return record


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise SlurmUnavailable(reason)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        check = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10)
        return check.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munged(workdir: Path) -> subprocess.Popen | None:
    """Start munged unless one already answers; return the process we started."""
    if _munge_works():
        return None
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
    # munged insists that the key belongs to the daemon's user and is private.
    try:
        import pwd

        munge_user = pwd.getpwnam("munge")
        uid, gid = munge_user.pw_uid, munge_user.pw_gid
    except KeyError:
        uid = gid = 0
    os.chown(MUNGE_KEY, uid, gid)
    os.chmod(MUNGE_KEY, 0o400)
    os.chown(MUNGE_KEY.parent, uid, gid)
    os.chmod(MUNGE_KEY.parent, 0o700)
    for folder in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, uid, gid)
    os.chmod("/run/munge", 0o755)

    log = open(workdir / "munged.out", "wb")  # noqa: SIM115 (open while munged runs)
    # -F: foreground, so that the process is ours to stop; run as the munge user
    # when it exists (munged refuses root unless --force).
    cmd = ["munged", "-F"] if uid == 0 else ["runuser", "-u", "munge", "--", "munged", "-F"]
    if uid == 0:
        cmd.append("--force")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _munge_works():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(
        f"munged did not start: {(workdir / 'munged.out').read_text(errors='replace')}"
    )


def _machine_memory_mb() -> int:
    """RealMemory as slurmd itself measures it (a larger value would drain the node)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
    match = re.search(r"RealMemory=(\d+)", out)
    if match:
        return int(match.group(1))
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return kib // 1024


def write_slurm_conf(workdir: Path, cpus: int, real_memory_mb: int) -> str:
    """The one-node config: cons_tres on cores+memory, no accounting, no cgroups."""
    state, spool = workdir / "state", workdir / "spool"
    state.mkdir(exist_ok=True)
    spool.mkdir(exist_ok=True)
    return f"""\
{CONF_MARKER}
ClusterName=needletest
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
SlurmctldLogFile={workdir}/slurmctld.log
SlurmdLogFile={workdir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
ReturnToService=2
MinJobAge={MIN_JOB_AGE_S}
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_memory_mb} Gres=gpu:{FAKE_GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def write_gres_conf(workdir: Path) -> str:
    """FAKE_GPUS gpu GRES backed by placeholder files (slurmd counts the device files)."""
    devices = []
    for index in range(FAKE_GPUS):
        device = workdir / f"fakegpu{index}"
        device.touch()
        devices.append(str(device))
    return f"{CONF_MARKER}\nNodeName={NODE} Name=gpu File={','.join(devices)}\n"


def _stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _node_state() -> str:
    out = subprocess.run(
        ["sinfo", "--noheader", "--nodes", NODE, "--format=%T"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return out.stdout.strip()


@contextlib.contextmanager
def local_slurm_cluster(startup_timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start a one-node SLURM on 127.0.0.1 and tear it down afterwards.

    Raises SlurmUnavailable when this machine cannot host it; RuntimeError when
    the daemons were started but did not come up (with their log tails).
    """
    missing = [
        b
        for b in REQUIRED_BINARIES
        if shutil.which(b) is None and not Path("/usr/sbin", b).exists()
    ]
    _require(
        not missing,
        f"SLURM/munge binaries missing: {' '.join(missing)} (apt-get install -y slurm-wlm munge)",
    )
    _require(os.geteuid() == 0, "needs root: writes /etc/slurm/slurm.conf and runs slurmd")
    _require(
        subprocess.run(["pgrep", "-x", "slurmctld|slurmd"], capture_output=True).returncode != 0,
        "a slurmctld/slurmd already runs on this machine; not touching it",
    )
    _require(
        _port_free(CTLD_PORT) and _port_free(SLURMD_PORT),
        f"ports {CTLD_PORT}/{SLURMD_PORT} are taken",
    )

    workdir = Path(tempfile.mkdtemp(prefix="needle-slurm-"))
    os.chmod(workdir, 0o755)
    installed: dict[Path, Path | None] = {}  # config file -> backup of the machine's own (or None)
    procs: list[subprocess.Popen] = []
    munged = None
    cluster = None
    try:
        munged = _start_munged(workdir)
        cpus = os.cpu_count() or 1
        memory = _machine_memory_mb()
        configs = {
            SLURM_CONF: write_slurm_conf(workdir, cpus, memory),
            GRES_CONF: write_gres_conf(workdir),
        }
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        for path, text in configs.items():
            backup = None
            # (a leftover of ours from a killed session is not worth keeping)
            if path.exists() and CONF_MARKER not in path.read_text(errors="replace"):
                backup = workdir / f"{path.name}.orig"
                shutil.copy2(path, backup)
            installed[path] = backup
            path.write_text(text)

        cluster = SlurmCluster(
            workdir=workdir,
            cpus=cpus,
            real_memory_mb=memory,
            ctld_log=workdir / "slurmctld.log",
            slurmd_log=workdir / "slurmd.log",
        )
        # -D: stay in the foreground so that the processes are ours to stop;
        # -i: ignore any old state. slurmd -N: our node name is not the hostname.
        for cmd, out in (
            (["slurmctld", "-D", "-i"], "slurmctld.out"),
            (["slurmd", "-D", "-N", NODE], "slurmd.out"),
        ):
            with open(workdir / out, "wb") as log:
                procs.append(
                    subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        deadline = time.monotonic() + startup_timeout
        state = ""
        while time.monotonic() < deadline:
            dead = [p.args[0] for p in procs if p.poll() is not None]
            if dead:
                break
            try:
                state = _node_state()
            except subprocess.TimeoutExpired:
                state = ""
            if state == "idle" or state.startswith(("inval", "drain")):
                break
            time.sleep(0.5)
        if state != "idle":
            raise RuntimeError(
                f"local SLURM did not come up (node state {state!r}).\n"
                f"slurmctld log:\n{_tail(cluster.ctld_log)}\n{_tail(workdir / 'slurmctld.out', 10)}\n"
                f"slurmd log:\n{_tail(cluster.slurmd_log)}\n{_tail(workdir / 'slurmd.out', 10)}"
            )
        yield cluster
    finally:
        if cluster is not None and all(p.poll() is None for p in procs):
            with contextlib.suppress(Exception):
                cluster.cancel_all()
        for proc in reversed(procs):
            _stop(proc)
        _stop(munged)
        for path, backup in installed.items():
            if backup is not None:
                shutil.copy2(backup, path)
            elif path.exists() and CONF_MARKER in path.read_text(errors="replace"):
                path.unlink()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The throwaway cluster for the whole session; skipped where it cannot run."""
    try:
        with local_slurm_cluster() as cluster:
            yield cluster
    except SlurmUnavailable as reason:
        if os.environ.get("NEEDLE_REQUIRE_SLURM") == "1":
            pytest.fail(f"NEEDLE_REQUIRE_SLURM=1 but no local SLURM: {reason}")
        pytest.skip(f"no local SLURM cluster: {reason}")
