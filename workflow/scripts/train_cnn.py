"""Stage 1: train the CNN and save checkpoints at epoch 0 and the log-spaced epochs (the relax times)."""

import argparse

from needle import cli, protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_training_arguments(parser)
    parser.add_argument(
        "--checkpoint-points",
        type=cli.positive_int,
        default=20,
        help="log-spaced points between epoch 1 and the last epoch",
    )
    parser.add_argument("--checkpoint-dir", required=True, help="writes epoch<t>.pt here")
    cli.add_run_outputs(parser, final_weights=False)
    args = parser.parse_args()
    device = cli.runtime_device(args)
    data = protocol.load_data(cli.data_spec(args), device)
    arch = protocol.architecture(cli.model_spec(args), data)
    protocol.train_cnn(
        data,
        arch,
        cli.train_config(args),
        checkpoint_dir=args.checkpoint_dir,
        metrics_path=args.metrics,
        resume_dir=cli.resume_dir(args),
        checkpoint_points=args.checkpoint_points,
    )


if __name__ == "__main__":
    cli.run(main)
