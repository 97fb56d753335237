"""The torch-free config layer: the exact checkpoint schedule, network sizes, the schema as the one
source of defaults and names, derived settings, and one set of pinned versions."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
import re
import runpy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

import needle
from needle import config_checks, names, schema
from needle.errors import NeedleError
from needle.schedule import checkpoint_epochs, integer_root

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"


# -- the checkpoint schedule: exact integers, literal expectations --------------------------------
@pytest.mark.parametrize(
    "epochs, points, expected",
    [
        # the authors' relax times (paper-notes: logspace(0, 2, 20) truncated)
        (100, 20, [0, 1, 2, 3, 4, 5, 6, 8, 11, 14, 18, 23, 29, 37, 48, 61, 78, 100]),
        # 53^(19/19) = 53 exactly; a float computation gives 52.99999999999999 on some CPUs
        (53, 20, [0, 1, 2, 3, 4, 5, 6, 8, 9, 12, 15, 18, 22, 28, 34, 43, 53]),
        # 16^(3/4) = 8 and 27^(1/3) = 3 exactly; floats truncate them to 7 and 2 on common CPUs
        (16, 5, [0, 1, 2, 4, 8, 16]),
        (27, 4, [0, 1, 3, 9, 27]),
        (12, 20, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]),
        (1000, 20, [0, 1, 2, 4, 6, 8, 12, 18, 26, 37, 54, 78, 112, 162, 233, 335, 483, 695, 1000]),
        (3, 3, [0, 1, 3]),
        (2, 20, [0, 1, 2]),
        (1, 20, [0, 1]),
        (100, 2, [0, 1, 100]),
    ],
)
def test_checkpoint_epochs_are_the_exact_truncated_log_spaced_epochs(epochs, points, expected):
    assert checkpoint_epochs(epochs, points) == expected


@pytest.mark.parametrize(
    "value, degree, root",
    [(0, 3, 0), (1, 5, 1), (26, 3, 2), (27, 3, 3), (28, 3, 3), (10**38, 19, 100),
     (10**38 - 1, 19, 99), (2**64, 64, 2), (2**64 - 1, 64, 1), (7, 1, 7)],
)  # fmt: skip
def test_integer_root_is_the_floor_of_the_real_root(value, degree, root):
    assert integer_root(value, degree) == root


@pytest.mark.parametrize("epochs, points", [(0, 20), (12, 1), (12.0, 20), (12, 3.0), (True, 20)])
def test_schedule_refuses_what_is_not_a_positive_integer(epochs, points):
    with pytest.raises(NeedleError, match="checkpoint schedule"):
        checkpoint_epochs(epochs, points)


# -- network sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model, width, channels, size, classes, cnn, elcn, efcn",
    [  # paper-notes' table (padding folded into the dense layers)
        ("skinny", 64, 3, 32, 10, 143_178, 7_797_002, 73_952_522),
        ("skinny", 64, 1, 28, 10, 141_130, 5_598_538, 21_474_634),
        ("skinny", 32, 1, 28, 10, 35_754, 1_461_930, 8_195_754),
        ("skinny", 16, 1, 28, 10, 9_178, 396_634, 3_462_490),
    ],
)
def test_parameter_counts_match_the_papers_arithmetic(
    model, width, channels, size, classes, cnn, elcn, efcn
):
    counts = config_checks.parameter_counts(model, width, channels, size, classes)
    assert counts == {"cnn": cnn, "elcn": elcn, "efcn": efcn, "fcn": efcn}


def test_alexnet_count_matches_the_papers():
    assert config_checks.parameter_counts("alexnet", 0, 3, 32, 10)["cnn"] == 2_848_906


@pytest.mark.parametrize(
    "model, width, channels, size, classes",
    [("skinny", 8, 1, 40, 10), ("skinny", 4, 1, 32, 10), ("alexnet", 0, 1, 40, 10)],
)
def test_arithmetic_parameter_counts_match_the_real_networks(model, width, channels, size, classes):
    embed, models = pytest.importorskip("needle.embed"), pytest.importorskip("needle.models")
    cnn = models.build_cnn(model, channels, size, classes, width)
    expected = config_checks.parameter_counts(model, width, channels, size, classes)
    assert embed.parameter_counts(cnn) == expected


def test_too_small_images_are_refused():
    with pytest.raises(NeedleError, match="too small"):
        config_checks.parameter_counts("alexnet", 0, 3, 8, 10)


# -- the schema: one source of names and defaults ---------------------------------------------------
def test_schema_enums_are_the_names_of_needle_names():
    assert schema.experiment_enum("relax.arms") == list(names.RELAX_ARMS)
    assert schema.experiment_enum("dataset") == list(names.DATASETS)
    assert schema.experiment_enum("model") == list(names.MODELS)
    assert schema.experiment_enum("precision") == list(names.PRECISIONS)


def test_schema_defaults_are_read_through_needle_schema():
    assert schema.experiment_default("optimiser.lr") == 0.1
    assert schema.experiment_default("optimiser.batch_size") == 250
    assert schema.experiment_default("cnn.checkpoint_points") == 20
    assert schema.config_default("device") == "auto"


# Command-line options and dataclass fields that carry a configured value, and where the schema
# keeps its default ("" prefix = top level of the config). --epochs is per stage: checked per script.
SCHEMA_KEYS = {
    "data_dir": "config:data_dir",
    "device": "config:device",
    "threads": "config:threads",
    "canvas_size": "canvas_size",
    "train_size": "train_size",
    "validation_size": "validation_size",
    "test_size": "test_size",
    "model": "model",
    "width": "width",
    "lr": "optimiser.lr",
    "momentum": "optimiser.momentum",
    "weight_decay": "optimiser.weight_decay",
    "batch_size": "optimiser.batch_size",
    "eval_batch_size": "eval_batch_size",
    "shuffle": "shuffle",
    "precision": "precision",
    "on_divergence": "divergence.on_divergence",
    "divergence_loss_factor": "divergence.loss_factor",
    "loss_factor": "divergence.loss_factor",
    "divergence_chance_epochs": "divergence.chance_epochs",
    "chance_epochs": "divergence.chance_epochs",
    "fan_in": "fcn_init_fan_in",
    "fcn_init_fan_in": "fcn_init_fan_in",
    "check_images": "embedding.check_images",
    "checkpoint_points": "cnn.checkpoint_points",
    "readout_epochs": "comparison.readout_epochs",
    "test_every_epoch": "comparison.test_every_epoch",
    "confidence": "comparison.confidence",
    "points": "landscape.points",
    "examples": "landscape.examples",
}
STAGE_EPOCHS = {
    "train_cnn.py": "cnn.epochs",
    "train_fcn.py": "fcn.epochs",
    "relax.py": "relax.epochs",
}
STAGE_SCRIPTS = [
    "prepare_data.py",
    "train_cnn.py",
    "embed.py",
    "relax.py",
    "train_fcn.py",
    "landscape.py",
    "parameter_counts.py",
    "aggregate_metrics.py",
    "summarize.py",
    "plot_figures.py",
    "plot_sweep.py",
    "write_settings.py",
]


def schema_default(key: str):
    if key.startswith("config:"):
        return schema.config_default(key.removeprefix("config:"))
    return schema.experiment_default(key)


class _Parsed(Exception):
    """Raised instead of parsing: carries the parser a script built."""


def script_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The argparse parser a stage script builds in main(), captured before it parses anything."""

    def capture(parser, *args, **kwargs):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    namespace = runpy.run_path(str(SCRIPTS / name), run_name="needle_test")
    with pytest.raises(_Parsed) as captured:
        namespace["main"]()
    return captured.value.args[0]


@pytest.mark.parametrize("name", STAGE_SCRIPTS)
def test_every_command_line_default_is_the_schemas(name, monkeypatch):
    if not (SCRIPTS / name).exists():
        pytest.fail(f"stage script {name} of the contract is missing")
    parser = script_parser(name, monkeypatch)
    compared = 0
    for action in parser._actions:
        key = STAGE_EPOCHS.get(name) if action.dest == "epochs" else SCHEMA_KEYS.get(action.dest)
        if key is None or action.required or action.default is argparse.SUPPRESS:
            continue
        assert action.default == schema_default(key), f"{name} {action.option_strings}: {key}"
        compared += 1
    if name in STAGE_EPOCHS:  # the training stages take the data, model and optimiser groups
        assert compared >= 10, f"{name}: only {compared} options compared with the schema"


def library_dataclasses():
    for module_info in pkgutil.iter_modules(needle.__path__):
        module = importlib.import_module(f"needle.{module_info.name}")
        for value in vars(module).values():
            if dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                yield value


def test_every_dataclass_default_is_the_schemas():
    compared = []
    for cls in library_dataclasses():
        for field in dataclasses.fields(cls):
            key = SCHEMA_KEYS.get(field.name)
            if key is None or field.default is dataclasses.MISSING:
                continue
            assert field.default == schema_default(key), f"{cls.__name__}.{field.name}: {key}"
            compared.append(f"{cls.__name__}.{field.name}")
    assert compared, "no dataclass field carries a configured value: the test checks nothing"


# -- what the workflow derives from a config --------------------------------------------------------
def test_resolved_settings_list_the_relax_times_and_name_the_experiment():
    settings = {"cnn": {"epochs": 12, "checkpoint_points": 20}, "relax": {"relax_times": "all"}}
    resolved = config_checks.resolved_settings("e", settings)
    assert resolved["experiment"] == "e"
    assert resolved["relax"]["relax_times"] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert settings["relax"]["relax_times"] == "all", "the config itself is left as it was"


@pytest.mark.parametrize(
    "experiments, setting",
    [
        (
            {"a": {"width": 4, "cnn": {"epochs": 3}}, "b": {"width": 8, "cnn": {"epochs": 3}}},
            "width",
        ),
        ({"a": {"optimiser": {"lr": 0.1}}, "b": {"optimiser": {"lr": 0.02}}}, "optimiser.lr"),
        ({"a": {"width": 4, "train_size": 10}, "b": {"width": 8, "train_size": 20}}, None),
        ({"a": {"seeds": [0, 1]}, "b": {"seeds": [2, 3]}}, None),  # not a setting to plot against
        ({"a": {"width": 4}}, None),
    ],
)
def test_a_sweep_is_several_experiments_that_differ_in_exactly_one_setting(experiments, setting):
    assert config_checks.sweep_setting(experiments) == setting


# -- one set of versions --------------------------------------------------------------------------------
CONDA_TO_PIP = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, separator, version = line.partition("==")
            assert separator, f"requirements.txt: {line!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("env", sorted((REPO / "envs").glob("*.yaml")), ids=lambda path: path.name)
def test_conda_environments_pin_the_versions_of_requirements_txt(env):
    pins = requirement_pins()
    dependencies = yaml.safe_load(env.read_text())["dependencies"]
    for dependency in dependencies:
        match = re.fullmatch(r"([\w.-]+)=([\w.]+)", dependency)
        assert match, f"{env.name}: {dependency!r} is not pinned as name=version"
        name, version = match.groups()
        if name == "python":
            assert version == "3.11", f"{env.name}: python {version}, requirements.txt says 3.11"
            continue
        pip_name = CONDA_TO_PIP.get(name, name)
        assert pip_name in pins, f"{env.name}: {name} is not in requirements.txt"
        assert version == pins[pip_name], (
            f"{env.name}: {name}={version}, requirements.txt {pins[pip_name]}"
        )


def test_every_env_of_the_rules_and_the_driver_exists():
    rules = "".join(path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk"))
    used = set(re.findall(r'"\.\./\.\./(envs/[\w-]+\.yaml)"', rules))
    assert used == {"envs/torch.yaml", "envs/plot.yaml"}
    for env in used | {"envs/snakemake.yaml"}:
        assert (REPO / env).exists(), env
    driver = yaml.safe_load((REPO / "envs" / "snakemake.yaml").read_text())["dependencies"]
    assert {"snakemake=9.27.1", "snakemake-executor-plugin-slurm=2.8.0"} <= set(driver)


def test_citation_names_the_paper_and_the_license_is_mit():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    paper = citation["preferred-citation"]
    assert paper["title"].startswith("Finding the Needle in the Haystack with Convolutions")
    assert [author["family-names"] for author in paper["authors"]] == [
        "d'Ascoli",
        "Sagun",
        "Biroli",
        "Bruna",
    ]
    assert citation["license"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


# -- the presets: what each one is for ---------------------------------------------------------------
def preset(path: str) -> dict:
    """A config file as the workflow sees it: checked, with the schema's defaults filled in."""
    config = yaml.safe_load((REPO / path).read_text())
    config_checks.check_schema(config)
    validate(config, str(schema.SCHEMA_PATH))
    config_checks.check_config(config)
    return config


def only_experiment(config: dict) -> dict:
    (settings,) = config["experiments"].values()
    return settings


def test_the_test_config_is_tiny_and_covers_every_arm():
    settings = only_experiment(preset(".test/config/config.yaml"))
    assert settings["relax"]["arms"] == list(names.RELAX_ARMS)
    assert len(settings["seeds"]) == 2 and settings["validation_size"] > 0
    assert settings["landscape"]["relax_times"] and settings["comparison"]["readout_epochs"] > 1
    assert settings["cnn"]["epochs"] <= 3 and settings["train_size"] <= 200


def test_the_default_config_decides_on_seeds_and_the_whole_test_set():
    settings = only_experiment(preset("config.yaml"))
    assert settings["dataset"] == "fashion-mnist" and settings["canvas_size"] == 40
    assert len(settings["seeds"]) >= 3 and settings["seeds"][0] == 0
    assert {names.EFCN, names.CNN_CONTINUED} <= set(settings["relax"]["arms"])
    assert settings["validation_size"] > 0 and settings["test_size"] is None
    assert settings["comparison"]["readout_epochs"] > 1
    assert settings["divergence"]["on_divergence"] == "record"


def test_the_laptop_hour_preset_has_the_seeds_and_relax_times_to_decide():
    settings = only_experiment(preset("config/laptop-hour.yaml"))
    assert len(settings["seeds"]) >= 8 and settings["seeds"] == list(range(len(settings["seeds"])))
    assert len(config_checks.relax_times_of(settings)) >= 5
    assert settings["relax"]["arms"] == list(names.RELAX_ARMS)
    assert settings["landscape"]["relax_times"] and settings["validation_size"] > 0


@pytest.mark.parametrize(
    "path",
    [
        "config/gpu-fashion.yaml",
        "config/paper-cifar10-skinny.yaml",
        "config/paper-cifar100-alexnet.yaml",
    ],
)
def test_gpu_presets_compare_fairly_on_five_seeds(path):
    settings = only_experiment(preset(path))
    assert settings["seeds"] == [0, 1, 2, 3, 4]
    assert names.CNN_CONTINUED in settings["relax"]["arms"]
    assert settings["comparison"]["training_rule"] == "shared_optimiser"
    assert settings["validation_size"] > 0
    if "paper" in path:
        assert settings["fcn_init_fan_in"] == "padded", "the authors' SkinnyCNNPrime_FC init"
    if path.endswith("cifar10-skinny.yaml"):
        assert "relax learning rate is not known" in (REPO / path).read_text()
