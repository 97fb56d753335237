"""Draw every figure of one experiment (names.FIGURES) and its parameter-count table from its tables.

    python workflow/scripts/plot_figures.py --settings results/E/settings.json \
        --metrics results/E/metrics.csv --runs results/E/runs.csv \
        [--landscape results/E/landscape.csv] --parameter-counts results/E/parameter_counts.csv \
        --outdir results/E/figures

Without --landscape (or with an empty landscape table) the landscape figure says that no paths
are configured, so the list of outputs never depends on the configuration.
"""

import argparse
import time

from needle import tables
from needle.errors import run_main
from needle.plotting import draw_all


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", required=True, help="results/<e>/settings.json")
    parser.add_argument("--metrics", required=True, help="tidy table results/<e>/metrics.csv")
    parser.add_argument("--runs", required=True, help="one row per run, results/<e>/runs.csv")
    parser.add_argument("--landscape", help="results/<e>/landscape.csv, when configured")
    parser.add_argument(
        "--parameter-counts", required=True, help="results/<e>/parameter_counts.csv"
    )
    parser.add_argument("--outdir", required=True, help="folder for the figures")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    landscape = None
    if arguments.landscape:
        landscape = tables.read_landscape(arguments.landscape)
    paths = draw_all(
        tables.read_settings(arguments.settings),
        tables.read_tidy(arguments.metrics),
        tables.read_runs(arguments.runs),
        landscape,
        tables.read_parameter_counts(arguments.parameter_counts),
        arguments.outdir,
    )
    elapsed = time.perf_counter() - started
    print(f"wrote {len(paths)} files to {arguments.outdir} in {elapsed:.1f} s")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
