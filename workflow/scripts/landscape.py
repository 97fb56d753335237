"""Stage: loss and accuracy along straight lines between solutions in FCN weight space, for one seed.

Paths (alpha 0 = start, 1 = end): each eFCN at embedding -> its final weights; each final eFCN ->
the final standard FCN; consecutive relax times' final eFCNs -> each other.
"""

from needle import cli, stages
from needle.errors import run_main
from needle.schema import experiment_default


def main() -> None:
    parser = cli.parser(__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_runtime_arguments(parser)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--relax-times", type=cli.non_negative_int, nargs="+", required=True)
    parser.add_argument(
        "--cnn-checkpoints", nargs="+", required=True, help="the CNN checkpoint at each relax time"
    )
    parser.add_argument(
        "--efcn-finals", nargs="+", required=True, help="the final eFCN weights at each relax time"
    )
    parser.add_argument("--fcn-final", required=True, help="the final standard FCN weights")
    parser.add_argument(
        "--points",
        type=cli.integer(2),
        default=experiment_default("landscape.points"),
        help="points per path, ends included",
    )
    parser.add_argument(
        "--examples",
        type=cli.positive_int,
        default=experiment_default("landscape.examples"),
        help="train and test images evaluated at each point",
    )
    parser.add_argument(
        "--eval-batch-size", type=cli.positive_int, default=experiment_default("eval_batch_size")
    )
    parser.add_argument("--output", required=True, help="landscape CSV")
    args = parser.parse_args()
    if not len(args.relax_times) == len(args.cnn_checkpoints) == len(args.efcn_finals):
        parser.error("--relax-times, --cnn-checkpoints and --efcn-finals need one entry per t_w")
    data = cli.load_data(args, cli.runtime_device(args))
    stages.map_landscape(
        data,
        cli.architecture(args, data),
        experiment=args.experiment,
        seed=args.seed,
        relax_times=args.relax_times,
        cnn_checkpoints=args.cnn_checkpoints,
        efcn_finals=args.efcn_finals,
        fcn_final=args.fcn_final,
        points=args.points,
        examples=args.examples,
        eval_batch_size=args.eval_batch_size,
        output_path=args.output,
    )


if __name__ == "__main__":
    run_main(main)
