"""Summarise experiments: accuracies (mean ± sd over seeds) and claim verdicts, as CSV and markdown.

Standalone:
    python workflow/scripts/summarize.py --metrics results/E/metrics.csv [more.csv ...] \
        --csv results/summary.csv --markdown results/summary.md [--deviation-threshold 0.5]
Under Snakemake's `script:`: input.metrics (one or several tables), output.csv and
output.markdown (or output.md, or output[0] and output[1]), optional params.deviation_threshold.
"""

import argparse
import sys
from pathlib import Path

from needle.errors import run_main
from needle.summary import DEFAULT_DEVIATION_THRESHOLD, read_metrics, write_summary


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        help="tidy metrics table(s), results/<exp>/metrics.csv",
    )
    parser.add_argument(
        "--csv", required=True, help="summary table to write (one row per experiment)"
    )
    parser.add_argument("--markdown", required=True, help="one-page markdown summary to write")
    parser.add_argument(
        "--deviation-threshold",
        type=float,
        default=DEFAULT_DEVIATION_THRESHOLD,
        help="claim 3 holds when every finished eFCN's final pooled deviation is below this "
        "(fraction of ||W||; default %(default)s)",
    )
    return parser.parse_args(argv)


def summarize_files(
    metrics_paths, csv_path, markdown_path, deviation_threshold=DEFAULT_DEVIATION_THRESHOLD
):
    metrics = read_metrics(
        [metrics_paths] if isinstance(metrics_paths, (str, Path)) else list(metrics_paths)
    )
    return write_summary(metrics, csv_path, markdown_path, deviation_threshold=deviation_threshold)


def main(argv=None):
    arguments = parse_arguments(argv)
    summary = summarize_files(
        arguments.metrics, arguments.csv, arguments.markdown, arguments.deviation_threshold
    )
    print(f"summarised {len(summary)} experiment(s) into {arguments.csv} and {arguments.markdown}")


def run_under_snakemake(smk):
    csv_path = getattr(smk.output, "csv", None) or smk.output[0]
    markdown_path = (
        getattr(smk.output, "markdown", None) or getattr(smk.output, "md", None) or smk.output[1]
    )
    threshold = float(getattr(smk.params, "deviation_threshold", DEFAULT_DEVIATION_THRESHOLD))
    summary = summarize_files(smk.input.metrics, csv_path, markdown_path, threshold)
    message = f"summarised {len(summary)} experiment(s) into {csv_path} and {markdown_path}\n"
    if smk.log:
        Path(smk.log[0]).write_text(message)
    else:
        sys.stdout.write(message)


if "snakemake" in globals():
    run_under_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script: directive)
elif __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
