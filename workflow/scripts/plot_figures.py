"""Draw every figure (needle.plotting.FIGURES) and the parameter-count table from the tidy tables.

Standalone:
    python workflow/scripts/plot_figures.py --metrics results/E/metrics.csv \
        [--landscape results/E/landscape.csv] --parameter-counts results/E/parameter_counts.csv \
        --outdir results/E/figures
(--metrics, --landscape and --parameter-counts accept several files: their experiments are drawn
side by side.) Under Snakemake's `script:` the inputs are input.metrics, input.landscape
(optional) and input.parameter_counts; the output folder is that of output[0], and the outputs
should be needle.plotting.OUTPUTS in that folder.
"""

import argparse
import sys
import time
from pathlib import Path

from needle.errors import NeedleError, run_main
from needle.plotting import OUTPUTS, draw_all
from needle.summary import LANDSCAPE_COLUMNS, PARAMETER_COLUMNS, read_metrics, read_tables


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, (str, Path)) else list(value)


def build(metrics_paths, landscape_paths, parameter_count_paths, outdir):
    """Read the tables and write every output; return the list of written paths."""
    metrics = read_metrics(_as_list(metrics_paths))
    landscape_paths = _as_list(landscape_paths)
    landscape = (
        read_tables(landscape_paths, LANDSCAPE_COLUMNS, "landscape table")
        if landscape_paths
        else None
    )
    parameter_counts = read_tables(
        _as_list(parameter_count_paths), PARAMETER_COLUMNS, "parameter-count table"
    )
    return draw_all(metrics, landscape, parameter_counts, outdir)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        help="tidy metrics table(s), results/<exp>/metrics.csv",
    )
    parser.add_argument(
        "--landscape",
        nargs="*",
        default=[],
        help="landscape table(s); leave out when landscape is disabled (the figure then says so)",
    )
    parser.add_argument(
        "--parameter-counts", nargs="+", required=True, help="results/<exp>/parameter_counts.csv"
    )
    parser.add_argument("--outdir", required=True, help="folder for " + ", ".join(OUTPUTS))
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    paths = build(
        arguments.metrics, arguments.landscape, arguments.parameter_counts, arguments.outdir
    )
    print(
        f"wrote {len(paths)} files to {arguments.outdir} in {time.perf_counter() - started:.1f} s"
    )


def run_under_snakemake(smk):
    started = time.perf_counter()
    outdir = Path(smk.output[0]).parent
    expected = {Path(p).name for p in smk.output}
    unknown = expected - set(OUTPUTS)
    if unknown:
        raise NeedleError(
            f"rule declares outputs {sorted(unknown)} that plot_figures does not write; "
            f"declare needle.plotting.OUTPUTS: {OUTPUTS}"
        )
    paths = build(
        smk.input.metrics, getattr(smk.input, "landscape", None), smk.input.parameter_counts, outdir
    )
    message = f"wrote {len(paths)} files to {outdir} in {time.perf_counter() - started:.1f} s\n"
    if smk.log:
        Path(smk.log[0]).write_text(message)
    else:
        sys.stdout.write(message)


if "snakemake" in globals():
    run_under_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script: directive)
elif __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
