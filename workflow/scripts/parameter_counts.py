"""Parameter counts of the CNN and its eLCN, eFCN and standard FCN, without training anything."""

import argparse

from needle import checkpoints, cli, data, models, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--dataset", required=True, choices=sorted(data.DATASETS))
    parser.add_argument("--canvas-size", type=cli.non_negative_int, default=0)
    cli.add_model_arguments(parser)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    in_channels, image_size, num_classes = data.dataset_shape(args.dataset, args.canvas_size)
    cnn = models.build_cnn(args.model, in_channels, image_size, num_classes, args.width)
    width = args.width if args.model == "skinny" else None
    table = tables.parameter_count_rows(
        cnn, experiment=args.experiment, dataset=args.dataset, model=args.model, width=width
    )
    checkpoints.atomic_write_text(args.output, table.to_csv(index=False))


if __name__ == "__main__":
    cli.run(main)
