"""Stage: train the CNN; checkpoints (weights + optimiser) at epoch 0 and the log-spaced epochs, the
relax times t_w."""

from needle import cli, stages
from needle.errors import run_main
from needle.schema import experiment_default


def main() -> None:
    parser = cli.parser(__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_optimiser_arguments(parser)
    cli.add_divergence_arguments(parser)
    cli.add_runtime_arguments(parser)
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=experiment_default("cnn.epochs"),
        help="epochs of this run",
    )
    parser.add_argument(
        "--checkpoint-points",
        type=cli.integer(2),
        default=experiment_default("cnn.checkpoint_points"),
        help="log-spaced points from epoch 1 to the last epoch (needle.schedule)",
    )
    parser.add_argument("--checkpoint-dir", required=True, help="writes epoch<t>.pt here")
    cli.add_run_outputs(parser, final_weights=False)
    args = parser.parse_args()
    config = cli.train_config(args, args.epochs)
    data = cli.load_data(args, cli.runtime_device(args))
    stages.train_cnn(
        data,
        cli.architecture(args, data),
        config,
        checkpoint_points=args.checkpoint_points,
        checkpoint_dir=args.checkpoint_dir,
        metrics_path=args.metrics,
        resume_dir=cli.resume_dir(args),
    )


if __name__ == "__main__":
    run_main(main)
