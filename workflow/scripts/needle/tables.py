"""The tidy tables every figure is drawn from.

Per-run CSVs are wide (one row per epoch, one column per quantity). The experiment table is long:
one row per (run, epoch, metric, layer), so that any figure is a filter and a groupby away.
"""

from __future__ import annotations

import math

import pandas as pd

TIDY_COLUMNS = [
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


def tidy_run(
    run: pd.DataFrame,
    *,
    experiment: str,
    dataset: str,
    model: str,
    seed: int,
    arm: str,
    relax_time: int | None,
) -> pd.DataFrame:
    """Melt one per-run CSV into long rows; ``deviation/conv1`` becomes metric=deviation, layer=conv1."""
    long = run.melt(id_vars=["epoch", "epochs_since_relax"], var_name="column", value_name="value")
    split = long["column"].str.split("/", n=1, expand=True)
    long["metric"] = split[0]
    long["layer"] = split[1] if split.shape[1] > 1 else None
    long = long.assign(
        experiment=experiment,
        dataset=dataset,
        model=model,
        seed=seed,
        arm=arm,
        relax_time=relax_time if relax_time is not None else math.nan,
    )
    return long[TIDY_COLUMNS]


def tidy_experiment(runs: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    """Concatenate the tidy rows of every run of one experiment, in a stable order."""
    table = pd.concat([tidy_run(frame, **identity) for identity, frame in runs], ignore_index=True)
    table["relax_time"] = table["relax_time"].astype("Int64")
    return table.sort_values(
        ["seed", "arm", "relax_time", "epoch", "metric", "layer"],
        kind="stable",
        na_position="first",
    ).reset_index(drop=True)


def parameter_count_rows(
    cnn, *, experiment: str, dataset: str, model: str, width: int | None
) -> pd.DataFrame:
    from needle.embed import parameter_counts  # torch: only this function needs it

    counts = parameter_counts(cnn)
    return pd.DataFrame(
        [
            {
                "experiment": experiment,
                "dataset": dataset,
                "model": model,
                "width": width,
                "network": network,
                "parameters": counts[network],
            }
            for network in ("cnn", "elcn", "efcn", "fcn")
        ],
        columns=PARAMETER_COLUMNS,
    )
