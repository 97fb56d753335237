"""Stage: train the standard FCN (the eFCN's layer shapes, PyTorch's default init) under the shared
rule."""

from needle import cli, stages
from needle.errors import run_main
from needle.schema import experiment_default, experiment_enum


def main() -> None:
    parser = cli.parser(__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_optimiser_arguments(parser)
    cli.add_divergence_arguments(parser)
    cli.add_runtime_arguments(parser)
    parser.add_argument(
        "--fan-in",
        choices=experiment_enum("fcn_init_fan_in"),
        default=experiment_default("fcn_init_fan_in"),
        help="init bounds from the real input (PyTorch's default) or the zero-padded one (authors)",
    )
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=experiment_default("fcn.epochs"),
        help="epochs of this run",
    )
    cli.add_run_outputs(parser, final_weights=True)
    args = parser.parse_args()
    config = cli.train_config(args, args.epochs)
    data = cli.load_data(args, cli.runtime_device(args))
    stages.train_fcn(
        data,
        cli.architecture(args, data),
        config,
        fan_in=args.fan_in,
        metrics_path=args.metrics,
        final_weights_path=args.final_weights,
        resume_dir=cli.resume_dir(args),
    )


if __name__ == "__main__":
    run_main(main)
