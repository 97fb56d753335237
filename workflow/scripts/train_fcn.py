"""Baseline: train a standard FCN with the eFCN's layer shapes and PyTorch's default init."""

import argparse

from needle import cli, protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_training_arguments(parser)
    cli.add_run_outputs(parser, final_weights=True)
    args = parser.parse_args()
    device = cli.runtime_device(args)
    data = protocol.load_data(cli.data_spec(args), device)
    arch = protocol.architecture(cli.model_spec(args), data)
    protocol.train_fcn(
        data,
        arch,
        cli.train_config(args),
        metrics_path=args.metrics,
        final_weights_path=args.final_weights,
        resume_dir=cli.resume_dir(args),
    )


if __name__ == "__main__":
    cli.run(main)
