"""Where and how a run was made: commit, machine, package versions, wall time (torch-free).

Every published result carries this stamp, so that a number in the README can be traced to the
code, the machine and the command that produced it.
"""

from __future__ import annotations

import csv
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "numpy", "pandas", "snakemake")


def commit(repository: str | os.PathLike) -> str:
    """The checkout's commit, with "+ uncommitted changes" when its tracked files differ."""

    def git(*args) -> str:
        result = subprocess.run(
            ["git", "-C", str(repository), *args], capture_output=True, text=True, timeout=30
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    head = git("rev-parse", "--short=12", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    return head + (
        " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def gpus() -> list[str]:
    """GPU names as nvidia-smi lists them (none without it): read in the job, never at parse time."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [
        line.split(":", 1)[1].split("(UUID")[0].strip()
        for line in listing.stdout.splitlines()
        if line.startswith("GPU ")
    ]


def machine() -> str:
    memory = memory_gib()
    parts = [cpu_model(), f"{os.cpu_count()} CPU cores"]
    if memory:
        parts.append(f"{memory:.0f} GiB")
    parts.append(", ".join(gpus()) or "no GPU")
    return ", ".join(parts)


def versions() -> dict[str, str]:
    """Python and the main packages, read from their metadata (nothing is imported)."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def wall_time(benchmarks) -> tuple[float, int, float]:
    """(wall seconds from the first job's start to the last job's end, jobs, summed job seconds)
    from Snakemake benchmark files: each is written when its job ends (its modification time) and
    records the job's seconds, so the job started that much earlier."""
    starts, ends, total = [], [], 0.0
    for path in benchmarks:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        seconds = float(rows[-1]["s"]) if rows else 0.0
        end = Path(path).stat().st_mtime
        starts.append(end - seconds)
        ends.append(end)
        total += seconds
    if not ends:
        return 0.0, 0, 0.0
    return max(ends) - min(starts), len(ends), total
