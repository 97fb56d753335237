"""Publish an experiment's small tables under docs/ and rewrite the README's results block from them.

    python workflow/scripts/publish.py --results results/E --docs docs/results/E --readme README.md
    python workflow/scripts/publish.py --check --readme README.md    # exit 1 if the block is stale

Copies the tables (not checkpoints; the tidy table gzipped), redraws every figure and the summary
page from the copies with the same code as the workflow, then replaces the block between the
README's markers. With --check it only compares the README's block with what the tables it names
would give.
"""

import argparse
import gzip
import shutil
import sys
from pathlib import Path

from needle import plotting, readme, summary_page, tables
from needle.atomic import atomic_path, atomic_write_text
from needle.errors import NeedleError, run_main
from needle.summary import Summary

COPIED = (
    "settings.json",
    "stamp.json",
    "runs.csv",
    "arms.csv",
    "summary.csv",
    "embedding.csv",
    "landscape.csv",
    "parameter_counts.csv",
)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", help="results/<experiment> of a finished run")
    parser.add_argument("--docs", help="docs/results/<experiment> to write")
    parser.add_argument("--readme", required=True, help="README.md whose results block to write")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    arguments = parser.parse_args(argv)
    if not arguments.check and not (arguments.results and arguments.docs):
        parser.error("--results and --docs are needed unless --check")
    return arguments


def publish(results: Path, docs: Path) -> None:
    for name in COPIED:
        source = results / name
        if not source.is_file():
            raise NeedleError(f"{source} does not exist: run the experiment to its end first")
        with atomic_path(docs / name) as temporary:
            shutil.copyfile(source, temporary)
    with (
        atomic_path(docs / "metrics.csv.gz") as temporary,
        open(results / "metrics.csv", "rb") as source,
        open(temporary, "wb") as raw,
        gzip.GzipFile(
            "metrics.csv", "wb", fileobj=raw, mtime=0
        ) as target,  # same table, same bytes
    ):
        shutil.copyfileobj(source, target)
    settings = tables.read_settings(docs / "settings.json")
    summary = Summary(
        tables.read_claims(docs / "summary.csv"), tables.read_arm_summary(docs / "arms.csv")
    )
    blocks = summary_page.page(summary, settings, tables.read_stamp(docs / "stamp.json"))
    atomic_write_text(docs / "summary.md", summary_page.markdown(blocks))
    atomic_write_text(docs / "summary.html", summary_page.html_page(blocks))
    plotting.draw_all(
        settings,
        tables.read_tidy(docs / "metrics.csv.gz"),
        tables.read_runs(docs / "runs.csv"),
        tables.read_landscape(docs / "landscape.csv"),
        tables.read_parameter_counts(docs / "parameter_counts.csv"),
        docs / "figures",
    )


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    readme_path = Path(arguments.readme)
    text = readme_path.read_text(encoding="utf-8")
    if arguments.check:
        folder = readme.published_folder(text, readme_path)
        if readme.replace(text, readme.block(folder, readme_path)) != text:
            print(
                f"{readme_path}: the results block differs from the tables in {folder}; "
                "regenerate it with snakemake publish",
                file=sys.stderr,
            )
            sys.exit(1)
        print(f"{readme_path}: the results block matches {folder}")
        return
    docs = Path(arguments.docs)
    publish(Path(arguments.results), docs)
    atomic_write_text(readme_path, readme.replace(text, readme.block(docs, readme_path)))
    print(
        f"[needle] published {arguments.results} to {docs} and rewrote the results block of {readme_path}"
    )


if __name__ == "__main__":
    run_main(main)
