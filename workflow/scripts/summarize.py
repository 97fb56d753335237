"""Decide an experiment's claims on paired per-seed differences and write its summary: the claims
(summary.csv), the arms (arms.csv) and a page stating every rule (summary.md, summary.html)."""

import argparse

from needle import summary, summary_page, tables
from needle.atomic import atomic_write_text
from needle.errors import run_main


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", required=True, help="results/<e>/settings.json")
    parser.add_argument("--runs", required=True, help="results/<e>/runs.csv")
    parser.add_argument("--embedding", required=True, help="results/<e>/embedding.csv")
    parser.add_argument("--landscape", help="results/<e>/landscape.csv (when configured)")
    parser.add_argument("--stamp", help="results/<e>/stamp.json: how the run was made")
    parser.add_argument("--csv", required=True, help="summary.csv to write (claims)")
    parser.add_argument("--arms", required=True, help="arms.csv to write")
    parser.add_argument("--markdown", required=True, help="summary.md to write")
    parser.add_argument("--html", required=True, help="summary.html to write")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_arguments(argv)
    settings = tables.read_settings(args.settings)
    result = summary.summarize(
        settings,
        tables.read_runs(args.runs),
        tables.read_embedding(args.embedding),
        tables.read_landscape(args.landscape) if args.landscape else None,
    )
    stamp = tables.read_stamp(args.stamp) if args.stamp else None
    blocks = summary_page.page(result, settings, stamp)
    atomic_write_text(args.csv, result.claims.to_csv(index=False))
    atomic_write_text(args.arms, result.arms.to_csv(index=False))
    atomic_write_text(args.markdown, summary_page.markdown(blocks))
    atomic_write_text(args.html, summary_page.html_page(blocks))
    verdicts = result.claims.drop_duplicates("claim").set_index("claim")["claim_verdict"]
    print(
        f"[needle] {settings['experiment']}: "
        + ", ".join(f"claim {c} {v}" for c, v in verdicts.items())
    )


if __name__ == "__main__":
    run_main(main)
