"""Stage 1: train the CNN and save checkpoints at epoch 0 and the log-spaced epochs (the relax times)."""

import argparse
from pathlib import Path

from needle import cli, protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_training_arguments(parser)
    parser.add_argument("--checkpoint-points", type=cli.positive_int, default=20,
                        help="log-spaced points between epoch 1 and the last epoch")
    parser.add_argument("--checkpoint-dir", required=True, help="writes epoch<t>.pt here")
    parser.add_argument("--metrics", required=True, help="per-epoch metrics CSV")
    parser.add_argument("--resume-dir", help="resumable state (default: resume/ beside --metrics)")
    args = parser.parse_args()
    device = cli.runtime_device(args)
    data = protocol.load_data(cli.data_spec(args), device)
    arch = protocol.architecture(cli.model_spec(args), data)
    protocol.train_cnn(
        data, arch, cli.train_config(args),
        checkpoint_dir=args.checkpoint_dir, metrics_path=args.metrics,
        resume_dir=args.resume_dir or Path(args.metrics).parent / "resume",
        checkpoint_points=args.checkpoint_points,
    )


if __name__ == "__main__":
    cli.run(main)
