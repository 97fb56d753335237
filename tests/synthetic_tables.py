"""Synthetic experiments in the contract's formats, with answers the tests control.

Shared by the tests of the tables, the summary, the figures and the README. Nothing here trains;
every number follows from the arguments, so a test can state its expectation as a literal.

API
- ``settings(**overrides) -> dict``: a resolved settings.json (experiment "synthetic",
  Fashion-MNIST, 5 seeds, every relax arm, relax times 0 1 2 4 8 of an 8-epoch CNN, a validation
  split, readout over the last 2 epochs, 95 % intervals, a landscape at relax times 1 and 4).
  Overrides take dotted keys: ``settings(**{"relax.arms": ["efcn"], "seeds": [0]})``.
- ``run_metrics(arm, *, seed, relax_time, epochs, final_accuracy, ...) -> DataFrame``: one per-run
  metrics CSV (names.RUN_COLUMNS, plus the probe's columns for dense arms). Test accuracy rises
  linearly from its start and equals ``final_accuracy`` over the last PLATEAU epochs, so any
  readout over k <= PLATEAU epochs is exactly ``final_accuracy``; validation accuracy is
  VALIDATION_GAP below it. A ``diverged`` code stops the run half-way (code 4: at its start) with
  chance accuracy on its last row (code 1: non-finite losses there).
- ``experiment(settings, *, accuracy, seed_spread, noise, shift, deviation, displacement,
  barrier, exactness, diverged, missing, random_state) -> Experiment``: every run of
  ``settings``. A run's readout accuracy is ``accuracy[arm]`` (a number, or {relax_time: number})
  + a per-seed offset shared by every arm (``seed_spread`` x a standard normal: paired
  differences cancel it) + ``noise`` x a standard normal of its own + ``shift[key]`` (default 0;
  with noise=0 a test sets every paired difference exactly). ``deviation[arm]`` is the final
  deviation of the arm's most deviating layer (conv3); ``displacement`` the embedded arms'
  off-subspace share; ``barrier`` the train-loss bump of every final_to_fcn landscape path;
  ``exactness`` the fp64 logit difference of every embedding. ``diverged`` maps
  (seed, arm, relax_time) to a divergence code (an iterable of keys means code 2); ``missing``
  keys are left out. relax_time is None for cnn and fcn.
  The Experiment holds ``settings``, ``runs`` {(seed, arm, relax_time): per-run DataFrame},
  ``designed`` {same key: the readout accuracy it was built with}, ``outcomes`` (runs.csv, built
  with needle.tables), ``embedding``, ``landscape``, ``parameter_counts`` and ``tidy``.
- ``write_experiment(directory, experiment) -> dict``: writes settings.json, every per-run CSV,
  embedding record and per-seed landscape table in the workflow's layout, plus runs.csv,
  embedding.csv, landscape.csv and parameter_counts.csv; returns their paths, with
  ``aggregate_arguments`` (the --run/--embedding/--landscape arguments of aggregate_metrics.py).

Defaults (``experiment(settings())``): CNN 0.80, FCN 0.70, eFCN 0.76, eLCN 0.78, control 0.81;
deviation FCN 0.99, eFCN 0.30, eLCN 0.25; displacement 0.70; barrier 0.50; exactness 2e-14. So
claims 1, 2, 3, 4, 6 and eLCN-vs-eFCN hold and claim 5 fails, each by a wide margin.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from needle import names, tables

EXPERIMENT = "synthetic"
LAYERS = ("conv1", "conv2", "conv3")
LAYER_SHARE = {"conv1": 0.5, "conv2": 0.8, "conv3": 1.0, names.POOLED_LAYER: 0.6}
PLATEAU = 3  # epochs at the final accuracy at the end of every healthy run
VALIDATION_GAP = 0.01  # validation accuracy sits this far below test accuracy
ACCURACY = {
    names.CNN: 0.80,
    names.FCN: 0.70,
    names.EFCN: 0.76,
    names.ELCN: 0.78,
    names.CNN_CONTINUED: 0.81,
}
DEVIATION = {names.FCN: 0.99, names.EFCN: 0.30, names.ELCN: 0.25}
PARAMETERS = {names.CNN: 9178, names.ELCN: 396634, names.EFCN: 3462490, names.FCN: 3462490}
LOGIT_SCALE = 12.5  # max |logit| of every embedding record


def settings(**overrides) -> dict:
    """A resolved settings.json dict; dotted keys in ``overrides`` replace nested values."""
    resolved = {
        "experiment": EXPERIMENT,
        "dataset": "fashion-mnist",
        "canvas_size": 40,
        "train_size": 5000,
        "validation_size": 1000,
        "test_size": None,
        "model": "skinny",
        "width": 16,
        "fcn_init_fan_in": "real",
        "seeds": [0, 1, 2, 3, 4],
        "shuffle": True,
        "eval_batch_size": 1000,
        "precision": "fp32",
        "optimiser": {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 100},
        "cnn": {"epochs": 8, "checkpoint_points": 5},
        "fcn": {"epochs": 8},
        "relax": {"arms": list(names.RELAX_ARMS), "relax_times": [0, 1, 2, 4, 8], "epochs": 6},
        "divergence": {"on_divergence": "record", "loss_factor": 4.0, "chance_epochs": 3},
        "comparison": {
            "training_rule": "shared_optimiser",
            "selection_split": "validation",
            "readout_epochs": 2,
            "confidence": 0.95,
        },
        "embedding": {"check_images": 256},
        "landscape": {"relax_times": [1, 4], "points": 5, "examples": 500},
    }
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = resolved
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return resolved


def run_metrics(
    arm: str,
    *,
    seed: int,
    relax_time: int | None,
    epochs: int,
    final_accuracy: float,
    start_accuracy: float = 0.1,
    validation: bool = True,
    deviation: float | None = None,
    displacement: float = 0.7,
    diverged: int = 0,
    num_classes: int = 10,
) -> pd.DataFrame:
    """One run's per-epoch table, as the training stages write it (see the module docstring)."""
    first = relax_time if arm in names.RELAX_ARMS else 0
    since = np.arange(epochs + 1)
    ramp = max(1, epochs - PLATEAU + 1)
    test = np.where(
        since >= ramp,
        final_accuracy,
        start_accuracy + (final_accuracy - start_accuracy) * since / ramp,
    )
    nothing = np.full(len(since), math.nan)
    columns = {"epoch": first + since, "epochs_since_relax": since}
    columns["train_accuracy"] = np.minimum(1.0, test + 0.05)
    columns["train_loss"] = 2.3 * (1 - columns["train_accuracy"]) + 0.05
    columns["validation_loss"] = 2.3 * (1 - test) + 0.2 if validation else nothing
    columns["validation_accuracy"] = test - VALIDATION_GAP if validation else nothing
    columns["test_loss"] = 2.3 * (1 - test) + 0.15
    columns["test_accuracy"] = test
    columns["diverged"] = np.zeros(len(since), dtype=int)
    if arm in names.DENSE_ARMS:
        deviation = deviation if deviation is not None else DEVIATION[arm]
        columns.update(_probe(arm, since, columns, deviation, displacement))
    if diverged:
        stop = 0 if diverged == 4 else max(1, epochs // 2)
        columns = {name: values[: stop + 1].copy() for name, values in columns.items()}
        chance = 1.0 / num_classes
        for name in ("train_accuracy", "test_accuracy", "validation_accuracy"):
            columns[name][-1] = chance if validation or "validation" not in name else math.nan
        if diverged == 1:  # non-finite loss
            for name in columns:
                if name.endswith("loss"):
                    columns[name][-1] = math.nan
        columns["diverged"][-1] = diverged
    return pd.DataFrame(columns)[_column_order(arm)]


def _column_order(arm: str) -> list[str]:
    return list(names.run_columns(LAYERS if arm in names.DENSE_ARMS else ()))


def _probe(arm: str, since, columns: dict, deviation: float, displacement: float) -> dict:
    """Deviation grows linearly from 0 at an embedding's start; a standard FCN sits at its own."""
    embedded = arm in names.EMBEDDED_ARMS
    growth = since / since[-1] if embedded else np.ones(len(since))
    probe = {
        "distance_from_start": 0.5 * since / since[-1],
        "projected_test_accuracy": np.maximum(0.0, columns["test_accuracy"] - 0.05),
        "projected_test_loss": columns["test_loss"] + 0.2,
    }
    for layer in (*LAYERS, names.POOLED_LAYER):
        value = deviation * (LAYER_SHARE[layer] if embedded else 1.0) * growth
        probe[f"deviation/{layer}"] = value
        if arm == names.ELCN:  # locality kept: all of the deviation is non-sharing
            probe[f"deviation_nonlocal/{layer}"] = np.zeros(len(since))
            probe[f"deviation_nonsharing/{layer}"] = value
        else:  # the two parts are orthogonal: 0.8^2 + 0.6^2 = 1
            probe[f"deviation_nonlocal/{layer}"] = 0.8 * value
            probe[f"deviation_nonsharing/{layer}"] = 0.6 * value
        moved = displacement if embedded else deviation
        probe[f"displacement_offsubspace/{layer}"] = np.where(since > 0, moved, 0.0)
    return probe


@dataclass
class Experiment:
    settings: dict
    runs: dict
    designed: dict
    outcomes: pd.DataFrame
    embedding: pd.DataFrame
    landscape: pd.DataFrame
    parameter_counts: pd.DataFrame

    @functools.cached_property
    def tidy(self) -> pd.DataFrame:
        """The tidy table of every run (built on first use: most tests need only runs.csv)."""
        identity = {key: self.settings[key] for key in ("experiment", "dataset", "model")}
        runs = [(tables.Run(*key), frame) for key, frame in self.runs.items()]
        return tables.tidy_table(runs, **identity)


def _keys(resolved: dict):
    """Every configured run, as (seed, arm, relax_time)."""
    for seed in resolved["seeds"]:
        yield seed, names.CNN, None
        yield seed, names.FCN, None
        for arm in resolved["relax"]["arms"]:
            for relax_time in resolved["relax"]["relax_times"]:
                yield seed, arm, relax_time


def experiment(
    resolved: dict | None = None,
    *,
    accuracy: Mapping | None = None,
    seed_spread: float = 0.02,
    noise: float = 0.004,
    shift: Mapping | None = None,
    deviation: Mapping | None = None,
    displacement: float = 0.7,
    barrier: float = 0.5,
    exactness: float = 2e-14,
    diverged: Mapping | Iterable = (),
    missing: Iterable = (),
    random_state: int = 0,
) -> Experiment:
    """Every run of ``resolved`` (default: ``settings()``) built from the designed numbers."""
    resolved = resolved or settings()
    accuracy = {**ACCURACY, **(accuracy or {})}
    deviation = {**DEVIATION, **(deviation or {})}
    codes = dict(diverged) if isinstance(diverged, Mapping) else dict.fromkeys(diverged, 2)
    missing = set(missing)
    rng = np.random.default_rng(random_state)
    offsets = {seed: seed_spread * rng.standard_normal() for seed in resolved["seeds"]}
    num_classes = names.DATASETS[resolved["dataset"]].num_classes
    validation = resolved["validation_size"] > 0
    epochs = {names.CNN: resolved["cnn"]["epochs"], names.FCN: resolved["fcn"]["epochs"]}

    runs, designed = {}, {}
    for key in _keys(resolved):
        seed, arm, relax_time = key
        level = accuracy[arm]
        if isinstance(level, Mapping):
            level = level[relax_time]
        designed[key] = level + offsets[seed] + noise * rng.standard_normal()
        designed[key] += (shift or {}).get(key, 0.0)
        if key in missing:
            continue
        start = 0.1
        if arm in names.RELAX_ARMS:  # a relax run starts where its CNN was at t_w
            cnn = runs.get((seed, names.CNN, None))
            start = (
                float(cnn["test_accuracy"].iloc[min(relax_time, len(cnn) - 1)])
                if cnn is not None
                else 0.5
            )
        runs[key] = run_metrics(
            arm,
            seed=seed,
            relax_time=relax_time,
            epochs=epochs.get(arm, resolved["relax"]["epochs"]),
            final_accuracy=designed[key],
            start_accuracy=start,
            validation=validation,
            deviation=deviation.get(arm),
            displacement=displacement,
            diverged=codes.get(key, 0),
            num_classes=num_classes,
        )
    identity = {
        "experiment": resolved["experiment"],
        "dataset": resolved["dataset"],
        "model": resolved["model"],
    }
    readout = resolved["comparison"]["readout_epochs"]
    outcomes = tables.runs_table(
        tables.run_outcome(frame, tables.Run(*key), **identity, readout_epochs=readout)
        for key, frame in runs.items()
    )
    return Experiment(
        settings=resolved,
        runs=runs,
        designed=designed,
        outcomes=outcomes,
        embedding=_embedding_records(resolved, exactness),
        landscape=_landscape(resolved, runs, barrier),
        parameter_counts=pd.DataFrame(
            [
                {**identity, "width": resolved["width"], "network": network, "parameters": count}
                for network, count in PARAMETERS.items()
            ],
            columns=list(names.PARAMETER_COLUMNS),
        ),
    )


def _embedding_records(resolved: dict, exactness: float) -> pd.DataFrame:
    rows = [
        {
            "experiment": resolved["experiment"],
            "seed": seed,
            "arm": arm,
            "relax_time": relax_time,
            "images": resolved["embedding"]["check_images"],
            "max_abs_logit": LOGIT_SCALE,
            "max_abs_logit_difference_fp32": 3e-6,
            "max_abs_logit_difference_fp64": exactness,
            "cnn_parameters": PARAMETERS[names.CNN],
            "embedded_parameters": PARAMETERS[arm],
        }
        for seed in resolved["seeds"]
        for arm in resolved["relax"]["arms"]
        if arm in names.EMBEDDED_ARMS
        for relax_time in resolved["relax"]["relax_times"]
    ]
    return pd.DataFrame(rows, columns=list(names.EMBEDDING_COLUMNS))


def _landscape(resolved: dict, runs: dict, barrier: float) -> pd.DataFrame:
    """Paths with equal end losses 0.4 and a bump of ``barrier`` (final_to_fcn) or barrier / 5
    (the others) in the middle: 4 alpha (1 - alpha) is 1 at alpha = 0.5."""
    times = resolved["landscape"]["relax_times"]
    alphas = np.linspace(0.0, 1.0, resolved["landscape"]["points"])
    rows = []
    for seed in resolved["seeds"]:
        paths = [("embedding_to_final", names.EFCN, t, names.EFCN, t) for t in times]
        paths += [("final_to_fcn", names.EFCN, t, names.FCN, None) for t in times]
        paths += [
            ("final_to_final", names.EFCN, a, names.EFCN, b) for a, b in zip(times, times[1:])
        ]
        for kind, start_arm, start_time, end_arm, end_time in paths:
            ends = [(seed, start_arm, start_time), (seed, end_arm, end_time)]
            if any(key not in runs for key in ends):  # a missing run has no weights to walk to
                continue
            broken = any(runs[key]["diverged"].iloc[-1] for key in ends)
            height = barrier if kind == "final_to_fcn" else barrier / 5
            for split, offset in (("train", 0.0), ("test", 0.1)):
                loss = 0.4 + offset + height * 4 * alphas * (1 - alphas)
                for alpha, value in zip(alphas, loss):
                    rows.append(
                        {
                            "experiment": resolved["experiment"],
                            "seed": seed,
                            "path_kind": kind,
                            "start_arm": start_arm,
                            "start_relax_time": start_time,
                            "end_arm": end_arm,
                            "end_relax_time": end_time,
                            "diverged": int(broken),
                            "alpha": alpha,
                            "split": split,
                            "loss": math.nan if broken else value,
                            "accuracy": math.nan if broken else 0.8 - value / 4,
                        }
                    )
    frame = pd.DataFrame(rows, columns=list(names.LANDSCAPE_COLUMNS))
    for column in ("start_relax_time", "end_relax_time"):
        frame[column] = frame[column].astype("Int64")
    return frame


def run_folder(directory: Path, seed: int, arm: str, relax_time: int | None) -> Path:
    """The workflow's folder of one run under results/<experiment>/."""
    folder = Path(directory) / f"seed{seed}" / arm
    return folder / f"relax_at_epoch{relax_time}" if arm in names.RELAX_ARMS else folder


def write_experiment(directory, built: Experiment) -> dict:
    """Write ``built`` in the workflow's layout under ``directory``; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"settings": directory / "settings.json", "runs_by_key": {}}
    paths["settings"].write_text(json.dumps(built.settings, indent=2), encoding="utf-8")
    arguments = []
    for (seed, arm, relax_time), frame in built.runs.items():
        path = run_folder(directory, seed, arm, relax_time) / "metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        paths["runs_by_key"][(seed, arm, relax_time)] = path
        arguments += [
            "--run",
            str(seed),
            arm,
            "-" if relax_time is None else str(relax_time),
            str(path),
        ]
    records = []
    for _, record in built.embedding.iterrows():
        path = (
            run_folder(directory, record["seed"], record["arm"], record["relax_time"])
            / "embedding.csv"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        record.drop("experiment").to_frame().T.to_csv(path, index=False)
        records.append(str(path))
    if records:
        arguments += ["--embedding", *records]
    landscapes = []
    for seed, rows in built.landscape.groupby("seed"):
        path = directory / f"seed{seed}" / "landscape.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(path, index=False)
        landscapes.append(str(path))
    if landscapes:
        arguments += ["--landscape", *landscapes]
    for name, frame in (
        ("runs", built.outcomes),
        ("embedding", built.embedding),
        ("landscape", built.landscape),
        ("parameter_counts", built.parameter_counts),
        ("metrics", built.tidy),
    ):
        paths[name] = directory / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    paths["aggregate_arguments"] = arguments
    return paths
