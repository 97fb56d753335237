"""Checks of a whole configuration that JSON Schema cannot express, made before any job runs.

Torch-free (the Snakemake driver imports it). The layer arithmetic mirrors needle.models; a test
checks both agree on parameter counts, so the memory estimate cannot drift from the real nets.
"""

from __future__ import annotations

import os

from needle.errors import NeedleError
from needle.schedule import checkpoint_epochs

# (channels, train images, test images, image size, classes) as the datasets ship.
DATASET_FACTS = {
    "fashion-mnist": (1, 60000, 10000, 28, 10),
    "cifar10": (3, 50000, 10000, 32, 10),
    "cifar100": (3, 50000, 10000, 32, 100),
}


def conv_layers(model: str, width: int) -> list[tuple[int, int, int, int, bool]]:
    """(out channels, kernel, stride, padding, followed by MaxPool(3, 2)) for each conv."""
    if model == "skinny":
        return [(width, 4, 2, 2, True), (width, 5, 1, 2, True), (width, 3, 1, 1, True)]
    return [
        (64, 4, 2, 2, True),
        (192, 5, 1, 2, True),
        (384, 3, 1, 1, False),
        (256, 3, 1, 1, False),
        (256, 3, 1, 1, True),
    ]


def parameter_counts(
    model: str, width: int, in_channels: int, image_size: int, num_classes: int
) -> dict[str, int]:
    """CNN, eLCN, eFCN (= standard FCN) parameter counts with padding folded into the dense layers."""
    counts = {"cnn": 0, "elcn": 0, "efcn": 0}
    channels, size = in_channels, image_size
    for out_channels, kernel, stride, padding, pooled in conv_layers(model, width):
        out_size = (size + 2 * padding - kernel) // stride + 1
        if out_size < 1:
            raise NeedleError(
                f"image size {image_size} is too small for the {model} CNN (a conv output is empty)"
            )
        positions = out_size * out_size
        counts["cnn"] += out_channels * (channels * kernel * kernel + 1)
        counts["elcn"] += positions * out_channels * (channels * kernel * kernel + 1)
        counts["efcn"] += positions * out_channels * (channels * size * size + 1)
        channels, size = out_channels, out_size
        if pooled:
            size = (size - 3) // 2 + 1
            if size < 1:
                raise NeedleError(
                    f"image size {image_size} is too small for the {model} CNN (a pooling output is empty)"
                )
    features = channels * size * size
    head_sizes = [features, num_classes] if model == "skinny" else [features, 512, 512, num_classes]
    head = sum(a * b + b for a, b in zip(head_sizes, head_sizes[1:]))
    counts = {network: count + head for network, count in counts.items()}
    counts["fcn"] = counts["efcn"]
    return counts


def experiment_shape(settings: dict) -> tuple[int, int, int]:
    channels, _, _, size, classes = DATASET_FACTS[settings["dataset"]]
    return channels, settings.get("canvas_size") or size, classes


def relax_times_of(settings: dict) -> list[int]:
    """The experiment's relax times: every checkpoint epoch for "all", else the listed ones."""
    cnn = settings["cnn"]
    available = checkpoint_epochs(cnn["epochs"], cnn["checkpoint_points"])
    requested = settings["relax"]["relax_times"]
    return available if requested == "all" else sorted(requested)


def efcn_training_mb(settings: dict, arm: str = "efcn") -> int:
    """Memory of training the dense net of one arm: weights, gradients, spare copy (+ momentum)."""
    channels, size, classes = experiment_shape(settings)
    counts = parameter_counts(settings["model"], settings["width"], channels, size, classes)
    stage = settings["fcn"] if arm == "fcn" else settings["relax"]
    copies = 3 + (1 if stage["momentum"] > 0 else 0)
    return int(counts[arm] * 4 * copies / 2**20) + 1


def _machine_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        return None


def _size(megabytes: float) -> str:
    """A memory size people can compare at a glance (MiB below 1 GiB, else GiB)."""
    return f"{megabytes:.0f} MiB" if megabytes < 1024 else f"{megabytes / 1024:.1f} GiB"


def check_experiment(
    name: str, settings: dict, memory_limit_mb: float | None, configured_limit: bool = False
) -> None:
    where = f"experiments.{name}"
    channels, train_images, test_images, image_size, _ = DATASET_FACTS[settings["dataset"]]
    for key, limit in (("train_size", train_images), ("test_size", test_images)):
        if settings.get(key) is not None and settings[key] > limit:
            raise NeedleError(
                f"{where}.{key} = {settings[key]} exceeds the {limit} images of {settings['dataset']}"
            )
    canvas = settings.get("canvas_size", 0)
    if canvas and canvas < image_size:
        raise NeedleError(
            f"{where}.canvas_size = {canvas} is smaller than the {image_size}-pixel images; use 0 or >= {image_size}"
        )
    experiment_shape(settings)
    cnn = settings["cnn"]
    available = checkpoint_epochs(cnn["epochs"], cnn["checkpoint_points"])
    requested = settings["relax"]["relax_times"]
    if requested != "all":
        missing = sorted(set(requested) - set(available))
        if missing:
            raise NeedleError(
                f"{where}.relax.relax_times {missing} are not CNN checkpoint epochs "
                f"(with cnn.epochs = {cnn['epochs']}: {available})"
            )
    landscape = settings["landscape"]["relax_times"]
    if landscape:
        if "efcn" not in settings["relax"]["arms"]:
            raise NeedleError(f"{where}.landscape.relax_times needs 'efcn' in {where}.relax.arms")
        missing = sorted(set(landscape) - set(relax_times_of(settings)))
        if missing:
            raise NeedleError(
                f"{where}.landscape.relax_times {missing} are not relax times of this experiment"
            )
    if memory_limit_mb is not None:
        for arm in sorted({"fcn", *settings["relax"]["arms"]}):
            needed = efcn_training_mb(settings, arm)
            if needed > memory_limit_mb:
                limit = (
                    "max_memory_gb"
                    if configured_limit
                    else "this machine's memory (set max_memory_gb)"
                )
                raise NeedleError(
                    f"{where}: training its {arm} needs about {_size(needed)}, more than the {_size(memory_limit_mb)} "
                    f"of {limit}; lower {where}.width or {where}.canvas_size, or raise max_memory_gb"
                )


def check_config(config: dict) -> None:
    """Raise NeedleError (one line, naming the key) for the first impossible setting."""
    limit_gb = config.get("max_memory_gb")
    memory_limit_mb = limit_gb * 1024 if limit_gb else _machine_memory_mb()
    for name, settings in config["experiments"].items():
        check_experiment(name, settings, memory_limit_mb, configured_limit=bool(limit_gb))
