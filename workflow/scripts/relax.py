"""Stage 2: embed the CNN checkpoint at relax time t_w (eFCN or eLCN) and keep training in that space."""

import argparse

from needle import cli, protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_training_arguments(parser)
    parser.add_argument(
        "--arm", choices=protocol.ARMS, required=True, help="eFCN (dense) or eLCN (local)"
    )
    parser.add_argument(
        "--relax-time", type=cli.non_negative_int, required=True, help="CNN epoch t_w"
    )
    parser.add_argument("--checkpoint", required=True, help="the CNN checkpoint at t_w")
    cli.add_run_outputs(parser, final_weights=True)
    args = parser.parse_args()
    device = cli.runtime_device(args)
    data = protocol.load_data(cli.data_spec(args), device)
    arch = protocol.architecture(cli.model_spec(args), data)
    protocol.relax(
        data,
        arch,
        cli.train_config(args),
        arm=args.arm,
        relax_time=args.relax_time,
        checkpoint_path=args.checkpoint,
        metrics_path=args.metrics,
        final_weights_path=args.final_weights,
        resume_dir=cli.resume_dir(args),
    )


if __name__ == "__main__":
    cli.run(main)
