"""Stage: parameter counts of the CNN and of its eLCN, eFCN and standard FCN, without training."""

import csv
import io

from needle import cli, embed, models
from needle import data as datasets
from needle.atomic import atomic_write_text
from needle.errors import run_main
from needle.names import DATASETS, NETWORKS, PARAMETER_COLUMNS
from needle.schema import experiment_default


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
    parser.add_argument(
        "--canvas-size", type=cli.non_negative_int, default=experiment_default("canvas_size")
    )
    cli.add_model_arguments(parser)
    parser.add_argument("--output", required=True, help="parameter-count CSV")
    args = parser.parse_args()
    in_channels, image_size, num_classes = datasets.dataset_shape(args.dataset, args.canvas_size)
    cnn = models.build_cnn(args.model, in_channels, image_size, num_classes, args.width)
    counts = embed.parameter_counts(cnn)  # shape arithmetic: nothing big is allocated
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PARAMETER_COLUMNS)
    width = args.width if args.model == "skinny" else ""
    for network in NETWORKS:
        writer.writerow(
            [args.experiment, args.dataset, args.model, width, network, counts[network]]
        )
    atomic_write_text(args.output, buffer.getvalue())


if __name__ == "__main__":
    run_main(main)
