"""Stamp an experiment's results with how they were made: command, commit, seeds, machine, wall time.

    python workflow/scripts/stamp.py --settings results/E/settings.json \
        --benchmarks results/E/benchmarks --configfile config/laptop-hour.yaml \
        --output results/E/stamp.json

The wall time runs from the first benchmarked job's start to the last one's end (Snakemake's
benchmark files); it leaves out data preparation and the table and figure jobs, which take seconds.
"""

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from needle import provenance, tables
from needle.atomic import atomic_write_text
from needle.errors import NeedleError, run_main

REPOSITORY = Path(__file__).resolve().parents[2]


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", required=True, help="results/<e>/settings.json")
    parser.add_argument(
        "--benchmarks", required=True, help="the folder of its jobs' benchmark records (*.tsv)"
    )
    parser.add_argument("--configfile", nargs="*", default=[], help="the config file(s) of the run")
    parser.add_argument("--output", required=True, help="stamp.json to write")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_arguments(argv)
    settings = tables.read_settings(args.settings)
    records = sorted(Path(args.benchmarks).rglob("*.tsv"))
    if not records:
        raise NeedleError(
            f"no benchmark records (*.tsv) in {args.benchmarks}: run the experiment's jobs first"
        )
    wall, jobs, job_seconds = provenance.wall_time(records)
    last_end = max(path.stat().st_mtime for path in records)
    configfiles = " ".join(f"--configfile {path}" for path in args.configfile)
    stamp = {
        "experiment": settings["experiment"],
        "command": f"snakemake --cores {os.cpu_count()} {configfiles}".strip(),
        "commit": provenance.commit(REPOSITORY),
        "machine": provenance.machine(),
        "versions": provenance.versions(),
        "seeds": settings["seeds"],
        "finished": datetime.fromtimestamp(last_end, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": round(wall, 1),
        "jobs": jobs,
        "job_seconds": round(job_seconds, 1),
    }
    atomic_write_text(args.output, json.dumps(stamp, indent=2) + "\n")
    print(f"[needle] {settings['experiment']}: {jobs} jobs in {wall:.0f} s of wall time")


if __name__ == "__main__":
    run_main(main)
