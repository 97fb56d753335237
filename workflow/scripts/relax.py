"""Stage: train one relax arm from relax time t_w with a fresh optimiser under the shared rule: the
embedded eFCN or eLCN, or the CNN itself (cnn_continued, the control)."""

from needle import cli, stages
from needle.errors import run_main
from needle.names import RELAX_ARMS
from needle.schema import experiment_default


def main() -> None:
    parser = cli.parser(__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_optimiser_arguments(parser)
    cli.add_divergence_arguments(parser)
    cli.add_runtime_arguments(parser)
    parser.add_argument("--arm", required=True, choices=RELAX_ARMS)
    parser.add_argument("--relax-time", type=cli.non_negative_int, required=True, help="t_w")
    parser.add_argument(
        "--start",
        required=True,
        help="embedded.pt of the embed stage (efcn, elcn), or the CNN checkpoint at t_w "
        "(cnn_continued)",
    )
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=experiment_default("relax.epochs"),
        help="epochs of this run",
    )
    cli.add_run_outputs(parser, final_weights=True)
    args = parser.parse_args()
    config = cli.train_config(args, args.epochs)
    data = cli.load_data(args, cli.runtime_device(args))
    stages.relax(
        data,
        cli.architecture(args, data),
        config,
        arm=args.arm,
        relax_time=args.relax_time,
        start_path=args.start,
        metrics_path=args.metrics,
        final_weights_path=args.final_weights,
        resume_dir=cli.resume_dir(args),
    )


if __name__ == "__main__":
    run_main(main)
