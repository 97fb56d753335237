"""The config schema (workflow/schemas/config.schema.yaml) as the single source of defaults.

Torch-free. The stage scripts' command-line defaults and the library's dataclass defaults are read
from here (or checked against it by tests/test_config_checks.py), so a default is written once.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


@functools.cache
def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _resolve(node: dict) -> dict:
    """Follow a local "$ref": "#/$defs/<name>" (the only kind the schema uses)."""
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        node = load_schema()["$defs"][name]
    return node


def _node(path: str) -> dict:
    node = load_schema()
    for key in path.split("."):
        node = _resolve(node)
        if key == "*":
            node = node["additionalProperties"]
        else:
            node = node["properties"][key]
    return _resolve(node)


def config_default(path: str) -> Any:
    """Default of a key given from the top of the config, e.g. "threads"."""
    return _node(path)["default"]


def experiment_default(path: str) -> Any:
    """Default of a key of one experiment, e.g. "optimiser.lr" or "cnn.checkpoint_points"."""
    return _node(f"experiments.*.{path}")["default"]


def experiment_enum(path: str) -> list:
    """The allowed values of an experiment key with an enum (or an array of enums)."""
    node = _node(f"experiments.*.{path}")
    if "items" in node:
        node = _resolve(node["items"])
    return list(node["enum"])
