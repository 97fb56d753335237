"""Data: make a dataset's raw files available under --data-dir (Debian package, cache or download)."""

import argparse
from pathlib import Path

from needle import checkpoints, cli, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(data.DATASETS))
    parser.add_argument("--data-dir", default="resources/data")
    parser.add_argument(
        "--done", required=True, help="marker file written once the files are in place"
    )
    args = parser.parse_args()
    data.prepare_dataset(args.dataset, args.data_dir)
    checkpoints.atomic_write_text(
        args.done, f"{args.dataset} prepared in {Path(args.data_dir).resolve()}\n"
    )


if __name__ == "__main__":
    cli.run(main)
