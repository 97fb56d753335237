"""The stage scripts' shared command-line groups (data, model, optimiser, divergence, runtime).

Every default is the config schema's (needle.schema), so a script run by hand trains exactly as
the workflow would with a default config. A bad argument is one line (``needle: error: ...``, exit
status 2) like every other bad input, not argparse's usage block.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from needle import checkpoints
from needle import data as datasets
from needle.device import pick_device
from needle.errors import NeedleError
from needle.names import DATASETS, MODELS, PRECISIONS
from needle.schema import config_default, experiment_default, experiment_enum
from needle.training import DivergenceRule, TrainConfig


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise NeedleError(f"{self.prog}: {message} (see --help)")


class _ShowDefaults(argparse.HelpFormatter):
    """Every default in --help is the schema's: show it beside the argument's help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def parser(description: str | None) -> ArgumentParser:
    return ArgumentParser(description=description, formatter_class=_ShowDefaults)


# -- value types: what the schema accepts, as argparse types -----------------------------------------------
def integer(minimum: int, maximum: int | None = None):
    """Integers in [minimum, maximum], written as integers ("8.0" is refused, as by the schema)."""
    wanted = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = wanted
    return parse


def number(
    *, above: float | None = None, at_least: float | None = None, below: float | None = None
):
    """Finite numbers in the given range (``above`` and ``below`` exclusive)."""
    limits = [
        f"> {above}" if above is not None else None,
        f">= {at_least}" if at_least is not None else None,
        f"< {below}" if below is not None else None,
    ]
    wanted = "a finite number " + " and ".join(limit for limit in limits if limit)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (above is not None and not value > above)
            or (at_least is not None and not value >= at_least)
            or (below is not None and not value < below)
        ):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = wanted
    return parse


positive_int = integer(1)
non_negative_int = integer(0)
SEED_MAXIMUM = 2**31 - 1  # the schema's bound on seeds


# -- the shared groups -----------------------------------------------------------------------------------
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=True, choices=list(DATASETS), help="dataset")
    group.add_argument(
        "--data-dir", default=config_default("data_dir"), help="where the raw dataset files live"
    )
    group.add_argument(
        "--canvas-size",
        type=non_negative_int,
        default=experiment_default("canvas_size"),
        help="place each image at a random position on this canvas (0: as shipped)",
    )
    group.add_argument(
        "--train-size",
        type=positive_int,
        default=experiment_default("train_size"),
        help="class-balanced training subset (default: all images outside the validation split)",
    )
    group.add_argument(
        "--validation-size",
        type=non_negative_int,
        default=experiment_default("validation_size"),
        help="class-balanced validation split held out from the training split (0: none)",
    )
    group.add_argument(
        "--test-size",
        type=positive_int,
        default=experiment_default("test_size"),
        help="class-balanced test subset (default: the whole test set)",
    )
    group.add_argument(
        "--seed",
        type=integer(0, SEED_MAXIMUM),
        default=experiment_default("seeds")[0],
        help="init, training subset, training placement, batch order and dropout",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", choices=list(MODELS), default=experiment_default("model"), help="the CNN"
    )
    group.add_argument(
        "--width",
        type=positive_int,
        default=experiment_default("width"),
        help="channels of the Skinny CNN",
    )


def add_optimiser_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimiser (plain SGD, cross-entropy; shared by every arm)")
    group.add_argument(
        "--lr",
        type=number(above=0),
        default=experiment_default("optimiser.lr"),
        help="learning rate",
    )
    group.add_argument(
        "--momentum",
        type=number(at_least=0, below=1),
        default=experiment_default("optimiser.momentum"),
        help="SGD momentum",
    )
    group.add_argument(
        "--weight-decay",
        type=number(at_least=0),
        default=experiment_default("optimiser.weight_decay"),
        help="L2 weight decay",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=experiment_default("optimiser.batch_size"),
        help="training mini-batch",
    )
    group.add_argument(
        "--eval-batch-size",
        type=positive_int,
        default=experiment_default("eval_batch_size"),
        help="batch for evaluation only",
    )
    group.add_argument(
        "--readout-epochs",
        type=positive_int,
        default=experiment_default("comparison.readout_epochs"),
        help="the run's accuracy is read out over its last this many epochs",
    )
    group.add_argument(
        "--test-every-epoch",
        action=argparse.BooleanOptionalAction,
        default=experiment_default("comparison.test_every_epoch"),
        help="evaluate the test set after every epoch (--no-test-every-epoch: only at the start "
        "and over the readout epochs)",
    )
    group.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=experiment_default("shuffle"),
        help="reshuffle every epoch, in an order fixed by (seed, epoch) (--no-shuffle: the "
        "authors' fixed order)",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=experiment_default("precision"),
        help="fp32 keeps the embedding exact; tf32 and bf16 trade accuracy for GPU speed",
    )


def add_divergence_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("divergence (when a run counts as failed)")
    group.add_argument(
        "--on-divergence",
        choices=experiment_enum("divergence.on_divergence"),
        default=experiment_default("divergence.on_divergence"),
        help="record: stop and mark the run; fail: the job fails with the reason",
    )
    group.add_argument(
        "--divergence-loss-factor",
        type=number(above=1),
        default=experiment_default("divergence.loss_factor"),
        help="a train loss above this multiple of the run's epoch-0 train loss is divergence",
    )
    group.add_argument(
        "--divergence-chance-epochs",
        type=positive_int,
        default=experiment_default("divergence.chance_epochs"),
        help="train accuracy below 1.5 / classes over the run's last this many epochs is divergence",
    )


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--device", default=config_default("device"), help="auto (CUDA when present), cpu, cuda[:N]"
    )
    group.add_argument(
        "--threads", type=positive_int, default=config_default("threads"), help="CPU threads"
    )


def add_run_outputs(parser: argparse.ArgumentParser, *, final_weights: bool) -> None:
    """--metrics, --final-weights and --resume-dir of a training stage."""
    group = parser.add_argument_group("outputs")
    group.add_argument("--metrics", required=True, help="per-epoch metrics CSV")
    if final_weights:
        group.add_argument("--final-weights", help="also save the final weights here (large)")
    group.add_argument("--resume-dir", help="resumable state (default: resume/ beside --metrics)")


# -- from arguments to the library's objects ----------------------------------------------------------------
def train_config(args, epochs: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        seed=args.seed,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        shuffle=args.shuffle,
        precision=args.precision,
        test_every_epoch=args.test_every_epoch,
        readout_epochs=args.readout_epochs,
        divergence=DivergenceRule(
            on_divergence=args.on_divergence,
            loss_factor=args.divergence_loss_factor,
            chance_epochs=args.divergence_chance_epochs,
        ),
    )


def runtime_device(args) -> torch.device:
    """The job's device, found when the job runs (never while a workflow is parsed)."""
    torch.set_num_threads(args.threads)
    return pick_device(args.device)


def load_data(args, device: torch.device):
    return datasets.load_dataset(
        args.dataset,
        args.data_dir,
        train_size=args.train_size,
        validation_size=args.validation_size,
        test_size=args.test_size,
        canvas_size=args.canvas_size,
        seed=args.seed,
        device=device,
    )


def architecture(args, data) -> dict:
    return checkpoints.architecture(args.model, args.width, data)


def resume_dir(args) -> Path:
    """The resume folder: given, or resume/ beside the metrics file (never a declared output)."""
    return Path(args.resume_dir) if args.resume_dir else Path(args.metrics).parent / "resume"
