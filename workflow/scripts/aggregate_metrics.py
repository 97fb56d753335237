"""Gather one experiment's runs: the tidy table, runs.csv (each run's readout), and the
concatenated landscape and embedding tables. Every per-run table is validated first; a bad one
stops the stage with one line naming it, and nothing is written."""

import argparse

from needle import names, tables
from needle.atomic import atomic_write_text
from needle.errors import NeedleError, run_main
from needle.schema import experiment_default


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--dataset", required=True, choices=sorted(names.DATASETS))
    parser.add_argument("--model", required=True, choices=names.MODELS)
    parser.add_argument(
        "--readout-epochs",
        type=int,
        default=experiment_default("comparison.readout_epochs"),
        help="a run's readout is its mean over its last K epochs after its start "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--run",
        nargs=4,
        action="append",
        default=[],
        metavar=("SEED", "ARM", "RELAX_TIME", "CSV"),
        help="one run's metrics CSV; RELAX_TIME is - for cnn and fcn (repeat for every run)",
    )
    parser.add_argument("--landscape", nargs="*", default=[], help="per-seed landscape CSVs")
    parser.add_argument("--embedding", nargs="*", default=[], help="per-embedding records")
    parser.add_argument("--metrics-output", required=True, help="tidy table to write")
    parser.add_argument("--runs-output", required=True, help="runs.csv to write")
    parser.add_argument("--landscape-output", required=True, help="landscape table to write")
    parser.add_argument("--embedding-output", required=True, help="embedding table to write")
    return parser.parse_args(argv)


def parse_run(seed: str, arm: str, relax_time: str) -> tables.Run:
    """One --run's identity, or one line saying what is wrong with it."""
    if arm not in names.ARMS:
        raise NeedleError(
            f"--run {seed} {arm}: unknown arm; expected one of {', '.join(names.ARMS)}"
        )
    if not seed.isdigit():
        raise NeedleError(f"--run {seed} {arm}: the seed must be a whole number >= 0")
    relax = arm in names.RELAX_ARMS
    if relax != relax_time.isdigit() or (not relax and relax_time != "-"):
        needed = "an epoch >= 0" if relax else "-"
        raise NeedleError(
            f"--run {seed} {arm} {relax_time}: the relax time of {arm} must be {needed}"
        )
    return tables.Run(int(seed), arm, int(relax_time) if relax else None)


def main(argv=None) -> None:
    args = parse_arguments(argv)
    if args.readout_epochs < 1:
        raise NeedleError(f"--readout-epochs {args.readout_epochs}: must be at least 1")
    if not args.run:
        raise NeedleError("no --run given: pass every run's metrics CSV")
    identity = {"experiment": args.experiment, "dataset": args.dataset, "model": args.model}
    runs, seen = [], set()
    for seed, arm, relax_time, path in args.run:
        run = parse_run(seed, arm, relax_time)
        if run in seen:
            raise NeedleError(f"--run {seed} {arm} {relax_time} is given twice")
        seen.add(run)
        runs.append((run, tables.read_run_metrics(path, run)))
    outcomes = tables.runs_table(
        tables.run_outcome(frame, run, **identity, readout_epochs=args.readout_epochs)
        for run, frame in runs
    )
    outputs = {
        args.metrics_output: tables.tidy_table(runs, **identity),
        args.runs_output: outcomes,
        args.landscape_output: tables.landscape_table(args.landscape),
        args.embedding_output: tables.embedding_table(args.embedding, args.experiment),
    }
    for path, table in outputs.items():  # everything read and built: now write
        atomic_write_text(path, table.to_csv(index=False))
    diverged = int(outcomes["diverged"].sum())
    print(
        f"[needle] {args.experiment}: {len(runs)} runs ({diverged} diverged) -> "
        f"{args.metrics_output}, {args.runs_output}"
    )


if __name__ == "__main__":
    run_main(main)
