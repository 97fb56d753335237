"""Every check of a configuration, made before any job runs; each failure is one line naming the key.

Torch-free (the Snakemake driver imports it). Two passes:
- ``check_schema``: the schema with strict types (8.0 is not an integer, .nan and .inf are not
  numbers), reported as the single most relevant error in one line instead of jsonschema's dump;
- ``check_config``: what the schema cannot express, on the config with its defaults filled in
  (subset sizes against the dataset, relax times against the checkpoint schedule, memory).
The layer arithmetic mirrors needle.models; a test checks both agree on parameter counts, so the
memory estimates cannot drift from the real nets.
"""

from __future__ import annotations

import difflib
import math
import os

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

from needle.errors import NeedleError
from needle.names import CNN, CNN_CONTINUED, DATASETS, EFCN, FCN
from needle.schedule import checkpoint_epochs
from needle.schema import load_schema

# Reserved below results/: the sweep figures of a config with several experiments.
SWEEP_FOLDER = "sweep"
# Memory of everything in a job but the dense weights: data tensors, torch, the CNN.
JOB_OVERHEAD_MB = 4096


# -- schema, strictly typed -----------------------------------------------------------------------
def _is_integer(_checker, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(_checker, value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_finite_number}
    ),
)

TYPE_WORDS = {
    "integer": "an integer",
    "number": "a finite number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def key_name(path) -> str:
    """experiments.tiny.seeds[2] from jsonschema's path deque."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "the config"


def describe(error) -> str:
    """One line for one jsonschema error: the key, its value and what the schema wants."""
    parent = error.parent
    if (
        parent is not None
        and parent.validator in ("oneOf", "anyOf")
        and list(error.absolute_path) == list(parent.absolute_path)
    ):
        error = parent  # a value of none of the alternatives' kinds: say what they are for
    where, value, schema = key_name(error.absolute_path), error.instance, error.schema
    kind = error.validator
    if "propertyNames" in error.relative_schema_path:
        return f"{where}: the name {value!r} is not allowed ({schema.get('description', error.message)})"
    if kind == "type":
        wanted = error.validator_value
        wanted = [wanted] if isinstance(wanted, str) else wanted
        hint = ""
        if isinstance(value, float) and value.is_integer() and "integer" in wanted:
            hint = f" (write {int(value)})"
        return f"{where} = {value!r} is not {' or '.join(TYPE_WORDS[w] for w in wanted)}{hint}"
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(str(key) for key in value if key not in allowed)
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
        return f"{where}: unknown key '{unknown[0]}' ({hint})"
    if kind == "required":
        return f"{where}: {error.message}"
    if kind == "enum":
        return f"{where} = {value!r} is not one of {', '.join(map(str, error.validator_value))}"
    if kind in ("pattern", "oneOf", "const"):
        return f"{where} = {value!r} is not allowed: {schema.get('description', error.message)}"
    return f"{where}: {error.message}"


def check_schema(config) -> None:
    """Raise NeedleError (one line) for the most relevant schema violation of ``config``."""
    error = best_match(StrictValidator(load_schema()).iter_errors(config))
    if error is not None:
        raise NeedleError(f"{describe(error)} (schema: workflow/schemas/config.schema.yaml)")


# -- network sizes and memory ---------------------------------------------------------------------
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
    """(input channels, input image size, classes) of an experiment's networks."""
    facts = DATASETS[settings["dataset"]]
    return facts.in_channels, settings["canvas_size"] or facts.image_size, facts.num_classes


def network_parameters(settings: dict, arm: str) -> int:
    """Parameters of the network an arm trains (the control trains the CNN itself)."""
    channels, size, classes = experiment_shape(settings)
    counts = parameter_counts(settings["model"], settings["width"], channels, size, classes)
    return counts[CNN if arm == CNN_CONTINUED else arm]


def training_mb(settings: dict, arm: str) -> int:
    """Memory of a training job of one arm: weights, gradients, a spare copy (+ momentum)."""
    copies = 3 + (1 if settings["optimiser"]["momentum"] > 0 else 0)
    return int(network_parameters(settings, arm) * 4 * copies / 2**20) + 1 + JOB_OVERHEAD_MB


def embedding_mb(settings: dict, arm: str) -> int:
    """Memory of an embed job: the float32 net, its float64 copy and one float64 temporary."""
    return int(network_parameters(settings, arm) * (4 + 8 + 8) / 2**20) + 1 + JOB_OVERHEAD_MB


def landscape_mb(settings: dict) -> int:
    """Memory of a landscape job: two dense ends and the point between them (float32)."""
    return int(network_parameters(settings, EFCN) * 4 * 3 / 2**20) + 1 + JOB_OVERHEAD_MB


def _machine_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        return None


def _size(megabytes: float) -> str:
    """A memory size people can compare at a glance (MiB below 1 GiB, else GiB)."""
    return f"{megabytes:.0f} MiB" if megabytes < 1024 else f"{megabytes / 1024:.1f} GiB"


# -- what the schema cannot express ---------------------------------------------------------------
def relax_times_of(settings: dict) -> list[int]:
    """The experiment's relax times: every checkpoint epoch for "all", else the listed ones."""
    cnn = settings["cnn"]
    available = checkpoint_epochs(cnn["epochs"], cnn["checkpoint_points"])
    requested = settings["relax"]["relax_times"]
    return available if requested == "all" else sorted(requested)


def check_experiment(name: str, settings: dict, memory_limit_mb: float | None, limit_key: str):
    where = f"experiments.{name}"
    dataset = settings["dataset"]
    facts = DATASETS[dataset]
    if name == SWEEP_FOLDER:
        raise NeedleError(
            f"{where}: the name '{SWEEP_FOLDER}' is reserved (results/{SWEEP_FOLDER}/ holds the sweep figures); rename the experiment"
        )
    held_out, train_size = settings["validation_size"], settings["train_size"]
    if held_out + (train_size or 1) > facts.train_images:
        wanted = f"train_size ({train_size})" if train_size else "at least one training image"
        raise NeedleError(
            f"{where}: validation_size ({held_out}) + {wanted} exceeds the {facts.train_images} "
            f"training images of {facts.label}; lower one of them"
        )
    if (settings["test_size"] or 0) > facts.test_images:
        raise NeedleError(
            f"{where}.test_size = {settings['test_size']} exceeds the {facts.test_images} test images of {facts.label}"
        )
    canvas = settings["canvas_size"]
    if canvas and canvas < facts.image_size:
        raise NeedleError(
            f"{where}.canvas_size = {canvas} is smaller than the {facts.image_size}-pixel images; use 0 or >= {facts.image_size}"
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
                f"(with cnn.epochs = {cnn['epochs']} and cnn.checkpoint_points = {cnn['checkpoint_points']}: {available})"
            )
    landscape = settings["landscape"]["relax_times"]
    if landscape:
        if EFCN not in settings["relax"]["arms"]:
            raise NeedleError(f"{where}.landscape.relax_times needs '{EFCN}' in {where}.relax.arms")
        missing = sorted(set(landscape) - set(relax_times_of(settings)))
        if missing:
            raise NeedleError(
                f"{where}.landscape.relax_times {missing} are not relax times of this experiment "
                f"({relax_times_of(settings)})"
            )
    if memory_limit_mb is None:
        return
    for arm in sorted({FCN, *settings["relax"]["arms"]}):
        needed = training_mb(settings, arm)
        if needed > memory_limit_mb:
            raise NeedleError(
                f"{where}: training its {arm} needs about {_size(needed)}, more than the "
                f"{_size(memory_limit_mb)} of {limit_key}; lower {where}.width or "
                f"{where}.canvas_size, or raise max_memory_gb"
            )


def check_config(config: dict) -> None:
    """Raise NeedleError (one line, naming the key) for the first impossible setting.

    ``config`` has passed ``check_schema`` and has its defaults filled in."""
    limit_gb = config["max_memory_gb"]
    if limit_gb:
        memory_limit_mb, limit_key = limit_gb * 1024, "max_memory_gb"
    else:
        memory_limit_mb, limit_key = _machine_memory_mb(), "this machine's memory (max_memory_gb)"
    for name, settings in config["experiments"].items():
        check_experiment(name, settings, memory_limit_mb, limit_key)


# -- what the workflow derives from a valid config ------------------------------------------------
def resolved_settings(name: str, settings: dict) -> dict:
    """An experiment's settings as its runs use them: defaults filled in, "all" relax times listed,
    and its name; what results/<name>/settings.json records."""
    resolved = {**settings, "experiment": name}
    resolved["relax"] = {**settings["relax"], "relax_times": relax_times_of(settings)}
    return resolved


def _flatten(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_settings(experiments) -> list[str]:
    """The dotted keys (e.g. "train_size", "optimiser.lr") whose values differ between the given
    experiments' settings, their names ("experiment" in settings.json) left out."""
    flat = [_flatten(settings) for settings in experiments]
    keys = sorted(set().union(*flat) - {"experiment"})
    return [key for key in keys if len({repr(one.get(key)) for one in flat}) > 1]


def sweep_setting(experiments: dict) -> str | None:
    """The one setting in which the experiments differ, when there are several and they differ in
    exactly one scalar setting (a sweep: results/sweep/gain_vs_<setting>.png); else None."""
    if len(experiments) < 2:
        return None
    differing = differing_settings(experiments.values())
    if len(differing) != 1:
        return None
    (key,) = differing
    values = [_flatten(settings).get(key) for settings in experiments.values()]
    return key if all(isinstance(value, int | float | str) for value in values) else None
