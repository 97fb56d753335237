"""Stage: embed the CNN checkpoint at relax time t_w as an eFCN or eLCN, and record how exactly the
embedding computes the CNN's function (largest |logit difference| in float32 and float64)."""

from needle import cli, stages
from needle.errors import run_main
from needle.names import EMBEDDED_ARMS
from needle.schema import experiment_default


def main() -> None:
    parser = cli.parser(__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_runtime_arguments(parser)
    parser.add_argument("--arm", required=True, choices=EMBEDDED_ARMS)
    parser.add_argument("--relax-time", type=cli.non_negative_int, required=True, help="t_w")
    parser.add_argument("--checkpoint", required=True, help="the CNN checkpoint at t_w")
    parser.add_argument(
        "--check-images",
        type=cli.positive_int,
        default=experiment_default("embedding.check_images"),
        help="held-out images (validation, else test) on which both nets are compared",
    )
    parser.add_argument("--embedded", required=True, help="the embedded net (.pt)")
    parser.add_argument("--record", required=True, help="the exactness record (.csv)")
    args = parser.parse_args()
    data = cli.load_data(args, cli.runtime_device(args))
    stages.embed_checkpoint(
        data,
        cli.architecture(args, data),
        arm=args.arm,
        relax_time=args.relax_time,
        seed=args.seed,
        checkpoint_path=args.checkpoint,
        check_images=args.check_images,
        embedded_path=args.embedded,
        record_path=args.record,
    )


if __name__ == "__main__":
    run_main(main)
