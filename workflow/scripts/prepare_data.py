"""Stage: make a dataset's raw files available under --data-dir (Debian package, cache or download)."""

from pathlib import Path

from needle import cli
from needle import data as datasets
from needle.atomic import atomic_write_text
from needle.errors import run_main
from needle.names import DATASETS
from needle.schema import config_default


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
    parser.add_argument("--data-dir", default=config_default("data_dir"))
    parser.add_argument("--done", required=True, help="marker written once the files are in place")
    args = parser.parse_args()
    datasets.prepare_dataset(args.dataset, args.data_dir)
    atomic_write_text(args.done, f"{args.dataset} prepared in {Path(args.data_dir).resolve()}\n")


if __name__ == "__main__":
    run_main(main)
