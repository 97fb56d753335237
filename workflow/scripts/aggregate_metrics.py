"""Metrics: gather every run of one experiment into its tidy table (and its landscape table)."""

import argparse

import pandas as pd

from needle import tables
from needle.atomic import atomic_write_text
from needle.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--run",
        nargs=4,
        action="append",
        default=[],
        metavar=("SEED", "ARM", "RELAX_TIME", "CSV"),
        help="one run's metrics CSV; RELAX_TIME is - for cnn and fcn (repeat for every run)",
    )
    parser.add_argument(
        "--landscape", nargs="*", default=[], help="per-seed landscape CSVs to concatenate"
    )
    parser.add_argument("--output", required=True, help="tidy metrics CSV")
    parser.add_argument("--landscape-output", help="concatenated landscape CSV")
    args = parser.parse_args()
    runs = []
    for seed, arm, relax_time, path in args.run:
        identity = {
            "experiment": args.experiment,
            "dataset": args.dataset,
            "model": args.model,
            "seed": int(seed),
            "arm": arm,
            "relax_time": None if relax_time == "-" else int(relax_time),
        }
        runs.append((identity, pd.read_csv(path)))
    if not runs:
        parser.error("give at least one --run")
    table = tables.tidy_experiment(runs)
    atomic_write_text(args.output, table.to_csv(index=False))
    if args.landscape_output:
        frames = [pd.read_csv(path) for path in args.landscape]
        landscape = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=tables.LANDSCAPE_COLUMNS)
        )
        atomic_write_text(args.landscape_output, landscape.to_csv(index=False))
    print(f"[needle] {args.experiment}: {len(runs)} runs, {len(table)} rows -> {args.output}")


if __name__ == "__main__":
    run_main(main)
