"""Figures of one experiment, drawn with seaborn from its tables alone (no torch, seconds to redraw).

Every mean and interval in a figure is seaborn's own estimate over seeds, with
``errorbar=needle.stats.errorbar(confidence)``: the summary's Student-t interval, so a figure and
the summary never disagree; this module aggregates nothing itself. Diverged runs are left out of
every line and band and drawn apart (grey, or an x at chance). One colour per arm and one per relax
time (from the experiment's configured relax times) hold in every figure.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window (also on headless cluster nodes)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker, transforms
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap

from needle import names, stats
from needle.atomic import atomic_path, atomic_write_text
from needle.errors import NeedleError
from needle.schedule import checkpoint_epochs
from needle.schema import experiment_default

DPI = 150
# One colour and marker per arm, in the order of names.ARMS: cnn, fcn, efcn, elcn, cnn_continued.
ARM_COLOURS = dict(zip(names.ARMS, ("#222222", "#2ca02c", "#1f77b4", "#d62728", "#9467bd")))
ARM_MARKERS = dict(zip(names.ARMS, "sDo^v"))
GREY = "#8c8c8c"  # diverged runs and chance
DASHES = ("", (4, 2), (1, 1.5))  # solid, dashed, dotted: parts of the deviation, splits
DEVIATION_PARTS = {"deviation": "total", "deviation_nonlocal": "non-locality"}
DEVIATION_PARTS |= {"deviation_nonsharing": "non-sharing"}
PROBED = {"test_accuracy": "as trained", "projected_test_accuracy": "P(net) read as a CNN"}
PATH_TITLES = ("eFCN at embedding → final", "eFCN final → standard FCN final", "eFCN → eFCN")
PATH_TITLES = dict(zip(names.LANDSCAPE_PATH_KINDS, PATH_TITLES))
# The columns of runs.csv that the figures read.
RUNS_COLUMNS = (*names.RUN_KEYS, "num_classes", "last_epoch", "diverged", "start_test_accuracy")
RUNS_COLUMNS += tuple(PROBED)
CURVE_POINTS = 30  # log-spaced epochs per curve: even on a symlog axis, and quick to draw


# -- the experiment a figure describes --------------------------------------------------------------
def _setting(settings: Mapping, key: str):
    """A dotted key of settings.json, or its schema default where settings.json lacks it."""
    node = settings
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return experiment_default(key)
        node = node[part]
    return node


def relax_time_colours(relax_times) -> dict:
    """t_w -> colour over the sorted relax times (plasma without its pale yellow end)."""
    relax_times = sorted({float(time) for time in relax_times})
    colours = plt.get_cmap("plasma")(np.linspace(0.0, 0.85, max(len(relax_times), 1)))
    return {time: tuple(colour) for time, colour in zip(relax_times, colours)}


@dataclass(frozen=True)
class Experiment:
    """What every figure of one experiment states: its name and settings, n seeds, the interval."""

    name: str
    description: str
    seeds: int
    confidence: float
    chance: float
    relax_colours: dict  # t_w -> colour, the same in every figure
    curve_split: str  # the split whose accuracy the learning curves show at every epoch

    @classmethod
    def from_settings(cls, settings: Mapping) -> Experiment:
        if "experiment" not in settings or settings.get("dataset") not in names.DATASETS:
            raise NeedleError("settings lack an experiment or a known dataset: rerun its rule")
        facts = names.DATASETS[settings["dataset"]]
        relax_times = _setting(settings, "relax.relax_times")
        if relax_times == "all":
            relax_times = checkpoint_epochs(
                _setting(settings, "cnn.epochs"), _setting(settings, "cnn.checkpoint_points")
            )
        size, canvas = _setting(settings, "train_size"), _setting(settings, "canvas_size")
        model = f"{_setting(settings, 'model')} width {_setting(settings, 'width')}"
        images = f"{size:,} training images" if size else "full training set"
        canvas = f", {canvas}×{canvas} canvas" if canvas else ""
        return cls(
            name=str(settings["experiment"]),
            description=f"{facts.label}, {model}, {images}{canvas}",
            seeds=len(_setting(settings, "seeds")),
            confidence=float(_setting(settings, "comparison.confidence")),
            chance=1 / facts.num_classes,
            relax_colours=relax_time_colours(relax_times),
            # The test set is evaluated every epoch, or only at the readout (then: validation).
            curve_split="test"
            if _setting(settings, "comparison.test_every_epoch")
            else ("validation" if _setting(settings, "validation_size") else "train"),
        )

    @property
    def errorbar(self):
        return stats.errorbar(self.confidence)

    @property
    def curve_errorbar(self):
        """Bands on the per-t_w curves only while they are few enough not to hide each other."""
        return self.errorbar if len(self.relax_colours) <= 4 else None

    def title(self, what: str) -> str:
        interval = f"mean and {self.confidence:.0%} t-interval over seeds"
        return f"{self.name}: {what}\n{self.description}\nn = {self.seeds} seeds; {interval}"


def _curves(table: pd.DataFrame, runs: pd.DataFrame):
    """(rows of runs that did not diverge, rows of runs that did) at the epochs a curve shows:
    CURVE_POINTS log-spaced epochs since each run's start, as the authors logged, and its last."""
    keys = list(names.RUN_KEYS)
    outcome = runs[[*keys, "diverged", "last_epoch"]]
    marked = table.merge(outcome, on=keys, how="left", indicator=True)
    orphans = marked.loc[marked["_merge"] == "left_only", keys]
    if len(orphans):
        raise NeedleError(f"run {orphans.iloc[0].to_dict()} is missing from runs.csv: rerun it")
    since = marked["epochs_since_relax"]
    shown = checkpoint_epochs(int(since.max()) if len(since) else 0, CURVE_POINTS)
    marked = marked[since.isin(shown) | (marked["epoch"] == marked["last_epoch"])]
    return marked[marked["diverged"] == 0], marked[marked["diverged"] != 0]


# -- drawing helpers -----------------------------------------------------------------------------------
def _themed(draw):
    """One theme for every figure, without touching matplotlib's global state."""

    @functools.wraps(draw)
    def themed(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
            return draw(*args, **kwargs)

    return themed


def _subplots(rows: int, columns: int, width: float, height: float, **shared):
    size = (width, height)
    return plt.subplots(rows, columns, figsize=size, squeeze=False, layout="constrained", **shared)


def _line(ax, rows: pd.DataFrame, x: str, y: str, errorbar=None, **style) -> None:
    """seaborn's lineplot: the mean over seeds and ``errorbar``; nothing for no rows (an arm
    whose runs all diverged). Missing values (a diverged run's non-finite losses, a split not
    evaluated at that epoch) are left out first: seaborn fails on a unit with none left."""
    rows = rows[rows[x].notna() & rows[y].notna()]
    if len(rows):
        sns.lineplot(data=rows, x=x, y=y, errorbar=errorbar, ax=ax, legend=False, **style)


def _band(ax, rows: pd.DataFrame, y: str, experiment: Experiment, colour, label: str) -> None:
    """A reference across the axis: seaborn's mean and interval of ``y`` over seeds, with the
    rows repeated at both ends of the current x range."""
    low, high = ax.get_xlim()
    span = pd.concat([rows.assign(_x=low), rows.assign(_x=high)])
    _line(ax, span, "_x", y, experiment.errorbar, color=colour, label=label, lw=1.5)
    ax.set_xlim(low, high)


@contextlib.contextmanager
def _nudged(ax, points: float):
    """Shift what is drawn inside by ``points`` on screen only (the data stay exact), so the
    markers of several arms at one t_w do not hide each other."""
    before = set(ax.get_children())
    yield
    shift = transforms.ScaledTranslation(points / 72, 0, ax.figure.dpi_scale_trans)
    for artist in set(ax.get_children()) - before:
        artist.set_transform(artist.get_transform() + shift)


def _epoch_axis(ax, label: str, ticks=()) -> None:
    """Symlog (linear in [0, 1]) with plain numbers, so epoch and relax time 0 are visible;
    ``ticks`` (the relax times) replace 0, 1, 2, 5, 10, ... when they are few enough to read."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.6)
    if not 0 < len(ticks) <= 8:
        ticks = [0] + [step * 10**power for power in range(5) for step in (1, 2, 5)]
    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(label)


def _loss_axis(ax, label: str) -> None:
    """Log axis with at least four plain-number labels: more steps per decade when it is narrow."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    decades = math.log10(high / low) if low > 0 else 3
    steps = (1, 1.5, 2, 3, 5, 7) if decades < 1.3 else (1, 2, 5) if decades < 3 else (1, 3)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=steps))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel(label)


def _accuracy_axis(ax, label: str) -> None:
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1, decimals=0))
    ax.set_ylabel(label)


def _relax_time_key(fig, axes, colours: dict) -> None:
    """A discrete colour bar naming the t_w of each colour (at most ~12 labels)."""
    if not colours:
        return
    times = list(colours)
    norm = BoundaryNorm(np.arange(len(times) + 1) - 0.5, len(times))
    mappable = ScalarMappable(norm=norm, cmap=ListedColormap(list(colours.values())))
    bar = fig.colorbar(mappable, ax=axes, shrink=0.85, aspect=30, pad=0.02)
    shown = range(0, len(times), math.ceil(len(times) / 12))
    bar.set_ticks(list(shown), labels=[f"{times[index]:g}" for index in shown])
    bar.set_label("relax time t_w (epochs)")


def _finish(fig, axes, title: str, colours: dict | None = None):
    """One legend below the panels (first artist of each label), the t_w key, the title."""
    handles = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    columns = min(len(handles), max(1, int(fig.get_figwidth() // 3.4)))
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=columns)
    _relax_time_key(fig, axes, colours or {})
    fig.suptitle(title, fontsize="medium")
    return fig


def _message(experiment: Experiment, what: str, message: str):
    fig = plt.figure(figsize=(8, 3), layout="constrained")
    fig.text(0.5, 0.45, message, ha="center", va="center", fontsize=12)
    return _finish(fig, [], experiment.title(what))


def _left_out(runs: pd.DataFrame, what: str = "run") -> str:
    return f"; {len(runs)} diverged {what}{'s' * (len(runs) != 1)} left out" if len(runs) else ""


def _key(ax, label: str, **style) -> None:
    """A legend entry with no data behind it (line styles shared by many lines)."""
    ax.plot([], [], color=style.pop("color", "black"), label=label, **style)


# -- the figures ---------------------------------------------------------------------------------------
@_themed
def accuracy_vs_relax_time(runs: pd.DataFrame, experiment: Experiment):
    """Readout test accuracy of each relax arm against t_w, with the CNN's and the standard FCN's
    as bands; each diverged run an x at chance, where the verdicts count it."""
    kept, diverged = runs[runs["diverged"] == 0], runs[runs["diverged"] != 0]
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    errorbar = experiment.errorbar
    for index, arm in enumerate(names.RELAX_ARMS):
        mine, lost = kept[kept["arm"] == arm], diverged[diverged["arm"] == arm]
        style = dict(color=ARM_COLOURS[arm], marker=ARM_MARKERS[arm], label=names.ARM_LABELS[arm])
        with _nudged(ax, 5 * (index - 1)):
            _line(ax, mine, "relax_time", "test_accuracy", errorbar, err_style="bars", **style)
            label = f"{style['label']}: diverged run" if len(lost) else None  # no empty entry
            chance = np.full(len(lost), experiment.chance)
            ax.scatter(lost["relax_time"], chance, color=style["color"], marker="x", label=label)
    _epoch_axis(ax, "relax time t_w (epochs, symlog scale)", list(experiment.relax_colours))
    for arm in (names.CNN, names.FCN):
        label = f"{names.ARM_LABELS[arm]} (band: interval)"
        _band(ax, kept[kept["arm"] == arm], "test_accuracy", experiment, ARM_COLOURS[arm], label)
    if len(diverged):  # the level diverged runs are drawn at (otherwise it would only squash)
        ax.axhline(experiment.chance, color=GREY, ls=":", lw=1, label="chance")
    _accuracy_axis(ax, "test accuracy (readout)")
    title = experiment.title("test accuracy after relaxing at t_w" + _left_out(diverged))
    return _finish(fig, ax, title)


@_themed
def learning_curves(metrics: pd.DataFrame, runs: pd.DataFrame, experiment: Experiment):
    """Accuracy (test, or validation where the test set is read only at the readout) and train
    loss against total epochs: CNN and standard FCN as references, one row per relax arm with a
    line per t_w; diverged runs as thin grey lines, one per run."""
    accuracy_metric = f"{experiment.curve_split}_accuracy"
    shown = metrics[metrics["metric"].isin([accuracy_metric, "train_loss"])]
    shown = shown.assign(value=shown["value"].where(np.isfinite(shown["value"])))
    kept, diverged = _curves(shown, runs)
    relax_time = diverged["relax_time"].astype("string").fillna("-")  # empty for cnn and fcn
    run = diverged["arm"] + relax_time + "/" + diverged["seed"].astype(str)
    diverged = diverged.assign(run=run)
    arms = [arm for arm in names.RELAX_ARMS if (shown["arm"] == arm).any()] or [None]
    fig, axes = _subplots(len(arms), 2, 10, 3.2 * len(arms) + 1.4, sharex=True)
    for row, arm in zip(axes, arms):
        for ax, metric in zip(row, (accuracy_metric, "train_loss")):
            mine, lost = kept[kept["metric"] == metric], diverged[diverged["metric"] == metric]
            lost = lost[lost["arm"].isin([names.CNN, names.FCN, arm])]
            style = dict(units="run", estimator=None, color=GREY, lw=0.7)
            _line(ax, lost, "epoch", "value", label="diverged run (left out)", **style)
            style = dict(hue="relax_time", palette=experiment.relax_colours, lw=1.2)
            rows = mine[mine["arm"] == arm]
            _line(ax, rows, "epoch", "value", experiment.curve_errorbar, **style)
            for reference in (names.CNN, names.FCN):
                style = dict(color=ARM_COLOURS[reference], label=names.ARM_LABELS[reference])
                rows = mine[mine["arm"] == reference]
                _line(ax, rows, "epoch", "value", experiment.errorbar, lw=2, **style)
        row[0].set_title(f"{names.ARM_LABELS[arm]} relaxed at t_w" if arm else "no relax runs")
    for accuracy, loss in axes:  # scales last: seaborn would aggregate in the scaled space
        _epoch_axis(accuracy, "total epochs (symlog scale)")
        _epoch_axis(loss, "total epochs (symlog scale)")
        _accuracy_axis(accuracy, f"{experiment.curve_split} accuracy")
        _loss_axis(loss, "train loss (log scale)")
    title = experiment.title("learning curves" + _left_out(runs[runs["diverged"] != 0]))
    return _finish(fig, axes, title, experiment.relax_colours)


@_themed
def deviation(metrics: pd.DataFrame, runs: pd.DataFrame, experiment: Experiment):
    """Deviation from the CNN subspace (total and its two parts) against epochs since relax, per
    conv-derived layer and pooled, one row per embedded arm. Beside it, the claim-3 reference:
    the standard FCN's own total deviation under the same measure."""
    parts = metrics[metrics["metric"].isin(DEVIATION_PARTS) & metrics["layer"].notna()]
    arms = [arm for arm in names.EMBEDDED_ARMS if (parts["arm"] == arm).any()]
    if not arms:
        return _message(experiment, "deviation", "no eFCN or eLCN deviation in the metrics table")
    kept, diverged = _curves(parts, runs)
    layers = parts["layer"].unique()  # conv1 .. conv10, then all layers pooled
    layers = sorted(layers, key=lambda name: (name == names.POOLED_LAYER, len(name), name))
    size = (2.6 * len(layers) + 1.5, 2.6 * len(arms) + 1.8)
    fig, axes = _subplots(len(arms), len(layers), *size, sharex=True, sharey=True)
    reference = kept[(kept["arm"] == names.FCN) & (kept["metric"] == "deviation")]
    reference_label = f"{names.ARM_LABELS[names.FCN]}: its own total deviation (reference)"
    dashes = dict(zip(DEVIATION_PARTS, DASHES))
    for row, arm in zip(axes, arms):
        for ax, layer in zip(row, layers):
            mine = kept[(kept["arm"] == arm) & (kept["layer"] == layer)]
            style = dict(hue="relax_time", palette=experiment.relax_colours, lw=1.1)
            style |= dict(style="metric", dashes=dashes)
            _line(ax, mine, "epochs_since_relax", "value", experiment.curve_errorbar, **style)
            style = dict(color=ARM_COLOURS[names.FCN], lw=2, label=reference_label)
            rows = reference[reference["layer"] == layer]
            _line(ax, rows, "epochs_since_relax", "value", experiment.errorbar, **style)
            where = "all layers" if layer == names.POOLED_LAYER else layer
            ax.set_title(f"{names.ARM_LABELS[arm]}, {where}")
        row[0].set_ylabel("‖W − P(W)‖ / ‖W‖")
    for ax in axes.flat:
        _epoch_axis(ax, "epochs since relax")
    for part, label in DEVIATION_PARTS.items():
        _key(axes[0, 0], f"{label} deviation", dashes=dashes[part])
    lost = diverged.drop_duplicates(list(names.RUN_KEYS))
    title = experiment.title("deviation from the CNN subspace" + _left_out(lost))
    return _finish(fig, axes, title, experiment.relax_colours)


@_themed
def landscape(paths: pd.DataFrame | None, experiment: Experiment):
    """Loss and accuracy along straight lines between solutions, one column per kind of path,
    colour = the t_w where the path starts; the points of paths with a diverged end as grey x."""
    if paths is None or paths.empty:
        return _message(experiment, "landscape", "no landscape paths configured")
    kinds = [kind for kind in names.LANDSCAPE_PATH_KINDS if (paths["path_kind"] == kind).any()]
    kept, diverged = paths[paths["diverged"] == 0], paths[paths["diverged"] != 0]
    fig, axes = _subplots(2, len(kinds), 3.6 * len(kinds) + 1.5, 6.6, sharex=True)
    style = dict(hue="start_relax_time", palette=experiment.relax_colours, lw=1.3)
    style |= dict(style="split", dashes=dict(zip(names.SPLITS, DASHES)))
    for column, kind in zip(axes.T, kinds):
        mine, lost = kept[kept["path_kind"] == kind], diverged[diverged["path_kind"] == kind]
        for ax, y in zip(column, ("loss", "accuracy")):
            _line(ax, mine, "alpha", y, experiment.errorbar, **style)
            if len(lost):  # no legend entry for diverged paths when there are none
                label = "path with a diverged end (left out)"
                ax.scatter(lost["alpha"], lost[y], color=GREY, marker="x", s=14, label=label)
            ax.set_xlim(0, 1)
            ax.xaxis.set_major_locator(ticker.FixedLocator([0, 0.25, 0.5, 0.75, 1]))
        paths_lost = lost.drop_duplicates(["seed", "start_relax_time", "end_relax_time"])
        column[0].set_title(PATH_TITLES[kind] + _left_out(paths_lost, "path").replace("; ", "\n"))
        column[0].set_ylabel("loss")
        _accuracy_axis(column[1], "accuracy")
        column[1].set_xlabel("α (0 = start, 1 = end)")
    for split, dashes in zip(names.SPLITS, DASHES):
        if (paths["split"] == split).any():
            _key(axes[0, 0], f"{split} set", dashes=dashes)
    title = experiment.title("loss and accuracy along straight lines between solutions")
    return _finish(fig, axes, title, experiment.relax_colours)


@_themed
def projection_probe(runs: pd.DataFrame, experiment: Experiment):
    """Each embedded arm's readout test accuracy and that of its projection onto the CNN subspace
    read as a CNN, against t_w; the CNN's own accuracy at t_w and chance as references."""
    embedded = runs[runs["arm"].isin(names.EMBEDDED_ARMS)]
    if embedded.empty:
        return _message(experiment, "projection probe", "no eFCN or eLCN runs in runs.csv")
    kept = embedded[embedded["diverged"] == 0].melt(
        id_vars=["seed", "arm", "relax_time"], value_vars=list(PROBED), var_name="network"
    )
    # The CNN at t_w is where every relax run of (seed, t_w) starts: one of them per (seed, t_w).
    starts = runs[runs["arm"].isin(names.RELAX_ARMS) & np.isfinite(runs["start_test_accuracy"])]
    starts = starts.drop_duplicates(["seed", "relax_time"])
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    errorbar = experiment.errorbar
    lines = dict(style="network", dashes=dict(zip(PROBED, DASHES)), err_style="bars")
    lines |= dict(markers=dict(zip(PROBED, ("o", "X"))))
    for index, arm in enumerate(names.EMBEDDED_ARMS):
        mine = kept[kept["arm"] == arm]
        with _nudged(ax, 8 * index - 4):
            _line(ax, mine, "relax_time", "value", errorbar, color=ARM_COLOURS[arm], **lines)
        for (network, label), dashes, marker in zip(PROBED.items(), DASHES, "oX"):
            if (mine["network"] == network).any():
                label = f"{names.ARM_LABELS[arm]}, {label}"
                _key(ax, label, color=ARM_COLOURS[arm], dashes=dashes, marker=marker)
    style = dict(color=ARM_COLOURS[names.CNN], lw=2, label="the CNN at t_w")
    _line(ax, starts, "relax_time", "start_test_accuracy", experiment.errorbar, **style)
    ax.axhline(experiment.chance, color=GREY, ls=":", lw=1, label="chance")
    _epoch_axis(ax, "relax time t_w (epochs, symlog scale)", list(experiment.relax_colours))
    _accuracy_axis(ax, "test accuracy (readout)")
    lost = embedded[embedded["diverged"] != 0]
    return _finish(fig, ax, experiment.title("relaxed nets and their projection" + _left_out(lost)))


def parameter_counts_markdown(counts: pd.DataFrame) -> str:
    """Markdown table: trainable parameters of each network and its size relative to the CNN."""
    by_network = dict(zip(counts["network"], counts["parameters"]))
    cnn = by_network.get(names.CNN)
    lines = ["| network | parameters | × CNN |", "|---|---:|---:|"]
    for network in (network for network in names.NETWORKS if network in by_network):
        ratio = f"{by_network[network] / cnn:,.1f}" if cnn else "—"
        lines.append(f"| {names.ARM_LABELS[network]} | {by_network[network]:,} | {ratio} |")
    return (
        "Trainable parameters per network (dense matrices have columns for real inputs only: "
        "zero padding folded in).\n\n" + "\n".join(lines) + "\n"
    )


# -- sweeps: experiments that differ in one setting ---------------------------------------------------
@_themed
def gain_vs_setting(runs: pd.DataFrame, settings: Sequence[Mapping], setting: str):
    """Paired per-seed gain of every arm over the standard FCN against the swept setting, one
    panel per arm, a line per t_w; a diverged run counts at chance, as in the verdicts."""
    experiments = [Experiment.from_settings(one) for one in settings]
    values = {str(one["experiment"]): _setting(one, setting) for one in settings}
    numeric = all(type(value) in (int, float) for value in values.values())
    values = values if numeric else {name: str(value) for name, value in values.items()}
    chance = 1 / runs["num_classes"]
    accuracy = runs["test_accuracy"].where(runs["diverged"] == 0, chance)
    readout = runs.assign(accuracy=accuracy, setting=runs["experiment"].map(values))
    fcn = readout.loc[readout["arm"] == names.FCN, ["experiment", "seed", "accuracy"]]
    paired = readout[readout["arm"] != names.FCN].merge(fcn, on=["experiment", "seed"])
    paired["gain"] = paired["accuracy_x"] - paired["accuracy_y"]
    colours = relax_time_colours(paired["relax_time"].dropna())
    arms = [arm for arm in names.ARMS if (paired["arm"] == arm).any()]
    ordered = sorted(values.values())
    logarithmic = numeric and ordered[0] > 0 and 10 * ordered[0] <= ordered[-1]
    fig, axes = _subplots(1, max(len(arms), 1), 3.4 * max(len(arms), 1) + 1.5, 4.4, sharey=True)
    errorbar = experiments[0].errorbar
    for ax, arm in zip(axes[0], arms):
        relaxed = arm in names.RELAX_ARMS
        style = dict(hue="relax_time", palette=colours) if relaxed else dict(color=ARM_COLOURS[arm])
        rows = paired[paired["arm"] == arm]
        _line(ax, rows, "setting", "gain", errorbar, marker="o", err_style="bars", **style)
        ax.axhline(0, color=ARM_COLOURS[names.FCN], lw=1, label="standard FCN (gain 0)")
        ax.set(title=names.ARM_LABELS[arm], xlabel=setting)
        if numeric:  # ticks at the swept values, as plain numbers
            ax.set_xscale("log" if logarithmic else "linear")
            ax.xaxis.set_major_locator(ticker.FixedLocator(ordered))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:,g}"))
            ax.xaxis.set_minor_locator(ticker.NullLocator())
    axes[0, 0].yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1, decimals=0))
    axes[0, 0].set_ylabel("test accuracy − standard FCN's (same seed)")
    seeds = "–".join(map(str, sorted({one.seeds for one in experiments})))
    title = f"gain over the standard FCN against {setting} ({len(experiments)} experiments; "
    title += f"n = {seeds} seeds, mean and {experiments[0].confidence:.0%} paired t-interval)"
    return _finish(fig, axes, title, colours)


# -- writing ------------------------------------------------------------------------------------------
def save_figure(fig, path) -> None:
    """Write ``fig`` as PNG atomically and close it."""
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def draw_all(settings, metrics, runs, landscape_paths, parameter_counts, outdir) -> list[Path]:
    """Write every figure of names.FIGURES (PNG) and parameter_counts.md to ``outdir``."""
    experiment = Experiment.from_settings(settings)
    present = set(runs["relax_time"].dropna())
    if landscape_paths is not None:
        present |= set(landscape_paths["start_relax_time"].dropna())
    unknown = sorted(present - set(experiment.relax_colours))
    if unknown:
        raise NeedleError(f"relax times {unknown} are not in settings.json: rerun their runs")
    figures = {
        "accuracy_vs_relax_time": lambda: accuracy_vs_relax_time(runs, experiment),
        "learning_curves": lambda: learning_curves(metrics, runs, experiment),
        "deviation": lambda: deviation(metrics, runs, experiment),
        "landscape": lambda: landscape(landscape_paths, experiment),
        "projection_probe": lambda: projection_probe(runs, experiment),
    }
    outdir = Path(outdir)
    for name in names.FIGURES:
        save_figure(figures[name](), outdir / f"{name}.png")
    atomic_write_text(outdir / "parameter_counts.md", parameter_counts_markdown(parameter_counts))
    return [outdir / f"{name}.png" for name in names.FIGURES] + [outdir / "parameter_counts.md"]
