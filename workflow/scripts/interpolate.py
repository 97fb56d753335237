"""Landscape: loss and accuracy along straight lines between saved solutions in FCN weight space.

Paths (alpha 0 = start, 1 = end): each eFCN at embedding -> its final weights; each final eFCN ->
the final standard FCN; consecutive relax times' final eFCNs -> each other.
"""

import argparse

import pandas as pd

from needle import checkpoints, cli, embed, landscape, protocol
from needle.errors import NeedleError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_data_arguments(parser)
    cli.add_model_arguments(parser)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--relax-times", type=cli.non_negative_int, nargs="+", required=True)
    parser.add_argument(
        "--cnn-checkpoints", nargs="+", required=True, help="CNN checkpoint at each relax time"
    )
    parser.add_argument(
        "--efcn-finals", nargs="+", required=True, help="final eFCN weights at each relax time"
    )
    parser.add_argument("--fcn-final", required=True, help="final standard FCN weights")
    parser.add_argument(
        "--points", type=cli.positive_int, default=11, help="points per path, ends included"
    )
    parser.add_argument(
        "--examples", type=cli.positive_int, default=2000, help="train and test images evaluated"
    )
    parser.add_argument("--eval-batch-size", type=cli.positive_int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    parser.add_argument("--output", required=True, help="landscape CSV")
    args = parser.parse_args()
    if not len(args.relax_times) == len(args.cnn_checkpoints) == len(args.efcn_finals):
        parser.error(
            "--relax-times, --cnn-checkpoints and --efcn-finals need one entry per relax time"
        )
    device = cli.runtime_device(args)
    data = protocol.load_data(cli.data_spec(args), device)
    arch = protocol.architecture(cli.model_spec(args), data)
    splits = {
        "train": (data.train_x[: args.examples], data.train_y[: args.examples]),
        "test": (data.test_x[: args.examples], data.test_y[: args.examples]),
    }

    def final(path):
        payload = checkpoints.load(path, what="final weights")
        checkpoints.check_architecture(payload, arch, path)
        if payload.get("dense_layout") != embed.DENSE_LAYOUT:
            raise NeedleError(
                f"final weights {path} store their dense layers in another layout "
                f"({payload.get('dense_layout')!r}, this code reads {embed.DENSE_LAYOUT!r}); "
                "delete them and rerun the relax / train_fcn rule that makes them"
            )
        return payload["model"]

    efcn = embed.to_efcn(protocol.build_cnn(arch)).to(device)  # reused for every eFCN/FCN point
    fcn_final = final(args.fcn_final)
    finals = {}
    paths = []
    for relax_time, cnn_path, efcn_path in zip(
        args.relax_times, args.cnn_checkpoints, args.efcn_finals
    ):
        cnn, _ = protocol.load_cnn_checkpoint(cnn_path, arch, "cpu")
        finals[relax_time] = final(efcn_path)
        paths.append(
            (
                f"efcn_tw{relax_time}: embedding -> final",
                embed.to_efcn(cnn).state_dict(),
                finals[relax_time],
            )
        )
        paths.append((f"efcn_tw{relax_time} final -> fcn final", finals[relax_time], fcn_final))
    for earlier, later in zip(args.relax_times, args.relax_times[1:]):
        paths.append(
            (f"efcn_tw{earlier} final -> efcn_tw{later} final", finals[earlier], finals[later])
        )
    rows = []
    for name, start, end in paths:
        for row in landscape.evaluate_path(
            efcn, start, end, splits, args.points, args.eval_batch_size
        ):
            rows.append({"experiment": args.experiment, "seed": args.seed, "path": name, **row})
        print(f"[needle] landscape path done: {name}", flush=True)
    table = pd.DataFrame(
        rows, columns=["experiment", "seed", "path", "alpha", "split", "loss", "accuracy"]
    )
    checkpoints.atomic_write_text(args.output, table.to_csv(index=False))


if __name__ == "__main__":
    cli.run(main)
