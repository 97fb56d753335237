"""Gain of every arm over the standard FCN against the one setting in which experiments differ.

    python workflow/scripts/plot_sweep.py --settings results/A/settings.json results/B/settings.json \
        --runs results/A/runs.csv results/B/runs.csv --setting train_size \
        --output results/sweep/gain_vs_train_size.png

The gain is paired per seed (same seed = same subset, placement and batch order); its mean and
interval over seeds are needle.stats' (the summary's). Experiments that differ in anything but
--setting are refused: their gains would not be comparable.
"""

import argparse

import pandas as pd

from needle import tables
from needle.config_checks import differing_settings
from needle.errors import NeedleError, run_main
from needle.plotting import gain_vs_setting, save_figure


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", required=True, help="settings.json per experiment")
    parser.add_argument(
        "--runs", nargs="+", required=True, help="runs.csv per experiment, same order"
    )
    parser.add_argument(
        "--setting", required=True, help="the swept key, dotted: train_size, relax.epochs"
    )
    parser.add_argument("--output", required=True, help="PNG to write")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    if len(arguments.settings) != len(arguments.runs):
        raise NeedleError("give one --runs table per --settings file, in the same order")
    settings = [tables.read_settings(path) for path in arguments.settings]
    differing = differing_settings(settings)
    if len(settings) < 2 or differing != [arguments.setting]:
        raise NeedleError(
            f"a sweep needs two or more experiments that differ only in {arguments.setting!r}; "
            f"these differ in {differing or 'nothing'}"
        )
    run_tables = []
    for path, experiment in zip(arguments.runs, settings):
        runs = tables.read_runs(path)
        if set(runs["experiment"]) != {str(experiment["experiment"])}:
            raise NeedleError(f"{path} is not the runs table of {experiment['experiment']!r}")
        run_tables.append(runs)
    save_figure(
        gain_vs_setting(pd.concat(run_tables), settings, arguments.setting), arguments.output
    )
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
