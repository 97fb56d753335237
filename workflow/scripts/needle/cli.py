"""Command-line arguments shared by the stage scripts, and the one-line error convention."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from needle.device import PRECISIONS, pick_device
from needle.errors import run_main
from needle.protocol import DataSpec, ModelSpec
from needle.training import TrainConfig


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=True, choices=["fashion-mnist", "cifar10", "cifar100"])
    group.add_argument(
        "--data-dir", default="resources/data", help="where the raw dataset files live"
    )
    group.add_argument(
        "--canvas-size",
        type=non_negative_int,
        default=0,
        help="place each image at a seeded random position on this canvas (0: as shipped)",
    )
    group.add_argument(
        "--train-size", type=positive_int, default=None, help="class-balanced training subset"
    )
    group.add_argument(
        "--test-size", type=positive_int, default=None, help="first N test images (default: all)"
    )
    group.add_argument(
        "--seed", type=non_negative_int, default=0, help="init, subset, placement and order"
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=["skinny", "alexnet"], default="skinny")
    group.add_argument("--width", type=positive_int, default=64, help="channels of the Skinny CNN")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimiser (plain SGD, cross-entropy)")
    group.add_argument("--epochs", type=non_negative_int, required=True)
    group.add_argument("--lr", type=non_negative_float, default=0.1)
    group.add_argument("--momentum", type=non_negative_float, default=0.0)
    group.add_argument("--weight-decay", type=non_negative_float, default=0.0)
    group.add_argument("--batch-size", type=positive_int, default=250)
    group.add_argument("--eval-batch-size", type=positive_int, default=1000)
    group.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="seeded reshuffle every epoch (--no-shuffle: the authors' fixed order)",
    )
    group.add_argument("--precision", choices=PRECISIONS, default="fp32")
    group.add_argument("--on-divergence", choices=["fail", "record"], default="fail")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]"
    )
    runtime.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")


def add_run_outputs(parser: argparse.ArgumentParser, *, final_weights: bool) -> None:
    """--metrics, --resume-dir (and --final-weights) of a training stage."""
    parser.add_argument("--metrics", required=True, help="per-epoch metrics CSV")
    if final_weights:
        parser.add_argument("--final-weights", help="also save the final weights here (large)")
    parser.add_argument("--resume-dir", help="resumable state (default: resume/ beside --metrics)")


def resume_dir(args):
    """The resume folder: given, or resume/ beside the metrics file (never a declared output)."""
    return args.resume_dir or Path(args.metrics).parent / "resume"


def data_spec(args) -> DataSpec:
    return DataSpec(
        args.dataset, args.data_dir, args.canvas_size, args.train_size, args.test_size, args.seed
    )


def model_spec(args) -> ModelSpec:
    return ModelSpec(args.model, args.width)


def train_config(args) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        shuffle=args.shuffle,
        seed=args.seed,
        precision=args.precision,
        on_divergence=args.on_divergence,
    )


def runtime_device(args) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


run = run_main  # the one-line error convention, shared with the torch-free scripts
