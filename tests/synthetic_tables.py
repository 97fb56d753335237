"""Realistic synthetic tables in the contract's formats (tests only).

`synthetic_tables()` returns the three tables a finished experiment leaves behind -- the tidy
metrics table, the landscape table and the parameter-count table -- with curves shaped like real
runs: the CNN learns fastest, the standard FCN ends lowest, each relaxed eFCN/eLCN starts from the
CNN's state at t_w and ends between the FCN and the CNN, and deviation grows from 0 after relax.
By default the numbers make claims 3 and 4 true and claim 5 false, so tests can flip one number
and watch one verdict flip.
"""

import numpy as np
import pandas as pd

METRICS_COLUMNS = [
    "experiment",
    "dataset",
    "model",
    "seed",
    "arm",
    "relax_time",
    "epoch",
    "epochs_since_relax",
    "metric",
    "layer",
    "value",
]
LANDSCAPE_COLUMNS = ["experiment", "seed", "path", "alpha", "split", "loss", "accuracy"]
PARAMETER_COLUMNS = ["experiment", "dataset", "model", "width", "network", "parameters"]

CNN_FINAL = 0.80
FCN_FINAL = 0.70


def _cnn_accuracy(epoch, rng):
    return (
        0.1
        + (CNN_FINAL - 0.1) * (1 - np.exp(-np.asarray(epoch, float) / 2.0))
        + rng.normal(0, 0.003)
    )


def _fcn_accuracy(epoch, rng):
    return (
        0.1
        + (FCN_FINAL - 0.1) * (1 - np.exp(-np.asarray(epoch, float) / 3.0))
        + rng.normal(0, 0.003)
    )


def _loss_from_accuracy(accuracy):
    return 2.3 * (1 - np.asarray(accuracy)) ** 1.5 + 0.05


def _run_rows(base, epochs, since, train_acc, test_acc, diverged, extra=None):
    """Long rows for one run: one row per (epoch, metric[, layer])."""
    rows = []
    series = {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "train_loss": _loss_from_accuracy(train_acc),
        "test_loss": _loss_from_accuracy(test_acc) + 0.1,
        "diverged": diverged,
    }
    series.update(extra or {})
    for key, values in series.items():
        metric, layer = key if isinstance(key, tuple) else (key, None)
        for epoch, since_relax, value in zip(epochs, since, np.broadcast_to(values, len(epochs))):
            rows.append(
                {
                    **base,
                    "epoch": int(epoch),
                    "epochs_since_relax": since_relax,
                    "metric": metric,
                    "layer": layer,
                    "value": float(value),
                }
            )
    return rows


def synthetic_tables(
    experiments=("fashion-a", "fashion-b"),
    seeds=(0, 1),
    relax_times=(0, 1, 2, 4, 8),
    arms=("efcn", "elcn"),
    epochs=8,
    layers=("conv1", "conv2", "conv3"),
    diverged=(),
    landscape=True,
    random_state=0,
):
    """Return {"metrics", "landscape", "parameter_counts"} DataFrames in the contract's formats.

    `epochs` is the CNN's and every relax run's training budget (a relax run at t_w logs total
    epochs t_w .. t_w + epochs). `diverged` lists (experiment, seed, arm, relax_time) runs that
    blow up half-way: accuracy drops to chance and their last row has diverged == 1.
    """
    rng = np.random.default_rng(random_state)
    diverged = set(diverged)
    rows, landscape_rows, parameter_rows = [], [], []
    for experiment in experiments:
        common = {"experiment": experiment, "dataset": "fashion-mnist", "model": "skinny"}
        for network, count in {
            "cnn": 9178,
            "elcn": 396634,
            "efcn": 3462490,
            "fcn": 3462490,
        }.items():
            parameter_rows.append({**common, "width": 16, "network": network, "parameters": count})
        for seed in seeds:
            cnn_epochs = np.arange(epochs + 1)
            cnn_test = _cnn_accuracy(cnn_epochs, rng)
            rows += _run_rows(
                {**common, "seed": seed, "arm": "cnn", "relax_time": np.nan},
                cnn_epochs,
                [np.nan] * len(cnn_epochs),
                cnn_test + 0.05,
                cnn_test,
                0.0,
            )
            fcn_test = _fcn_accuracy(cnn_epochs, rng)
            rows += _run_rows(
                {**common, "seed": seed, "arm": "fcn", "relax_time": np.nan},
                cnn_epochs,
                [np.nan] * len(cnn_epochs),
                fcn_test + 0.1,
                fcn_test,
                0.0,
            )
            for arm in arms:
                for t_w in relax_times:
                    since = np.arange(epochs + 1)
                    start = _cnn_accuracy(t_w, rng)
                    # Ends between the FCN and the CNN, higher for later relax (claim 4 true, 5 false).
                    final = (
                        FCN_FINAL
                        + 0.04
                        + 0.04 * t_w / max(relax_times)
                        - (0.01 if arm == "efcn" else 0)
                    )
                    test = (
                        start
                        + (final - start) * (1 - np.exp(-since / 1.5))
                        + rng.normal(0, 0.002, len(since))
                    )
                    flag = np.zeros(len(since))
                    if (experiment, seed, arm, t_w) in diverged:
                        test[len(since) // 2 :] = 0.1
                        flag[len(since) // 2 :] = 1.0
                    growth = (
                        0.25 * (1 - np.exp(-since / 3.0)) * (1.2 - t_w / (2 * max(relax_times)))
                    )
                    extra = {
                        "projected_test_accuracy": test - 0.03 * growth / 0.25,
                        "projected_test_loss": _loss_from_accuracy(test - 0.03 * growth / 0.25),
                        "distance_from_embedding": 3.0 * growth,
                    }
                    for index, layer in enumerate((*layers, "all")):
                        scale = 1.0 if layer == "all" else 1.0 + 0.3 * (len(layers) - index)
                        nonlocal_part = 0.0 if arm == "elcn" else 0.8 * growth * scale
                        nonsharing = 0.6 * growth * scale
                        extra[("deviation_nonlocal", layer)] = nonlocal_part
                        extra[("deviation_nonsharing", layer)] = nonsharing
                        extra[("deviation", layer)] = np.hypot(nonlocal_part, nonsharing)
                    base = {**common, "seed": seed, "arm": arm, "relax_time": float(t_w)}
                    rows += _run_rows(
                        base, t_w + since, since.astype(float), test + 0.05, test, flag, extra
                    )
            if landscape:
                alphas = np.linspace(0, 1, 11)
                paths = [f"efcn_tw{t}: embedding -> final" for t in relax_times[:2]]
                paths += [
                    f"efcn_tw{relax_times[1]} final -> fcn final",
                    f"efcn_tw{relax_times[0]} final -> efcn_tw{relax_times[-1]} final",
                ]
                for path_index, path in enumerate(paths):
                    barrier = 0.5 * path_index * 4 * alphas * (1 - alphas)
                    for split, offset in (("train", 0.0), ("test", 0.15)):
                        loss = (
                            0.6
                            + offset
                            - 0.2 * alphas
                            + barrier
                            + rng.normal(0, 0.005, len(alphas))
                        )
                        accuracy = 0.78 - offset / 3 - 0.25 * barrier
                        for alpha, point_loss, point_accuracy in zip(alphas, loss, accuracy):
                            landscape_rows.append(
                                {
                                    "experiment": experiment,
                                    "seed": seed,
                                    "path": path,
                                    "alpha": alpha,
                                    "split": split,
                                    "loss": point_loss,
                                    "accuracy": point_accuracy,
                                }
                            )
    metrics = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    return {
        "metrics": metrics,
        "landscape": pd.DataFrame(landscape_rows, columns=LANDSCAPE_COLUMNS),
        "parameter_counts": pd.DataFrame(parameter_rows, columns=PARAMETER_COLUMNS),
    }


def write_synthetic_tables(directory, **kwargs):
    """Write the tables as results/<exp>-like CSVs under `directory`; return their paths."""
    tables = synthetic_tables(**kwargs)
    paths = {}
    for name, frame in tables.items():
        path = directory / f"{name}.csv"
        frame.to_csv(path, index=False)
        paths[name] = path
    return paths
