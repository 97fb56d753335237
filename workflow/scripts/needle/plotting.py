"""Figures of the needle pipeline, drawn from the tidy tables alone (see needle.summary for the
conventions on runs, final/best values and diverged runs).

Every figure takes the concatenated tables of one or more experiments and returns a matplotlib
Figure; `draw_all` writes them (PNG, atomically) together with the parameter-count table.
Accuracies in the tables are fractions and are plotted as percentages. Epoch axes are symlog
with linthresh 1, so epoch 0 (relax time 0, the first logged epoch) sits visibly at the left.
Diverged runs are left out of every curve and mean; panels say how many were left out.
A missing or empty landscape table gives a landscape.png that says "no landscape paths
configured", so the list of outputs never depends on the configuration.
"""

import re

import matplotlib

matplotlib.use("Agg")  # files only: never open a window (also safe on headless cluster nodes)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    SymmetricalLogLocator,
)

from needle.summary import (
    RELAX_ARMS,
    arm_statistics,
    atomic_output,
    markdown_table,
    normalize_metrics,
    run_outcomes,
    write_text_atomic,
)

FIGURES = [
    "accuracy_vs_relax_time.png",
    "learning_curves.png",
    "deviation.png",
    "landscape.png",
    "projection_probe.png",
]
TABLES = ["parameter_counts.md"]
OUTPUTS = FIGURES + TABLES
DPI = 150

ARM_STYLE = {
    "efcn": {"color": "#1f77b4", "marker": "o", "label": "eFCN"},
    "elcn": {"color": "#d62728", "marker": "s", "label": "eLCN"},
}
CNN_COLOR = "#222222"
FCN_COLOR = "#2ca02c"
DEVIATION_PARTS = {
    "deviation": ("-", "total"),
    "deviation_nonlocal": ("--", "non-locality"),
    "deviation_nonsharing": (":", "non-sharing"),
}
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _symlog_epochs(ax, label, ticks=None, steps=(1, 2, 5)):
    """Symlog x axis (linear in [0, 1]) with plain-number tick labels, so epoch 0 is visible.
    `ticks` (e.g. the relax times, when few) replaces the default 0, 1, 2, 5, 10, 20, ...;
    narrow panels pass coarser `steps`, e.g. (1, 3) for 0, 1, 3, 10, 30, 100."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.6)
    if ticks is None or len(ticks) > 8:  # more would crowd: fall back to steps per decade
        ticks = [0] + [m * 10**k for k in range(5) for m in steps]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(SymmetricalLogLocator(base=10, linthresh=1, subs=np.arange(2, 10)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    if label:
        ax.set_xlabel(label)


def _log_loss_axis(ax, label):
    """Log y axis labelled with plain numbers (0.2, 0.5, 1, 2) rather than powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(label)


def _runs(count):
    return f"{count} diverged run{'s' if count != 1 else ''} left out"


def _percent_axis(ax, label):
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_ylabel(label)


def _grid(n_panels, max_columns):
    columns = min(n_panels, max_columns)
    return int(np.ceil(n_panels / columns)), columns


def _experiment_panels(count):
    """One panel per experiment, at most two a row, sharing the accuracy axis (figures 1 and 5)."""
    rows, columns = _grid(count, 2)
    return plt.subplots(
        rows,
        columns,
        figsize=(max(4.6 * columns, 7.5), 3.6 * rows + 0.6),
        squeeze=False,
        layout="constrained",
        sharey=True,
    )


def _relax_palette(relax_times):
    """Discrete sequential colours for t_w values (viridis without its pale yellow end) and the
    ScalarMappable for a colorbar that labels each colour with its t_w."""
    relax_times = sorted(set(relax_times))
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.88, max(len(relax_times), 1)))
    colour_of = {t: colours[i] for i, t in enumerate(relax_times)}
    norm = BoundaryNorm(np.arange(len(relax_times) + 1) - 0.5, len(relax_times))
    mappable = ScalarMappable(norm=norm, cmap=ListedColormap(colours))
    return colour_of, mappable, relax_times


def _relax_colorbar(fig, axes, mappable, relax_times):
    colorbar = fig.colorbar(mappable, ax=axes, shrink=0.9, aspect=30, pad=0.02)
    step = max(1, int(np.ceil(len(relax_times) / 12)))  # at most ~12 labels: they must not overlap
    ticks = np.arange(0, len(relax_times), step)
    colorbar.set_ticks(ticks)
    colorbar.set_ticklabels([f"{relax_times[i]:g}" for i in ticks])
    colorbar.set_label("relax time t_w (epochs)")
    return colorbar


def _prepared(metrics, outcomes):
    """Normalised metrics and their per-run outcomes (computed once by draw_all, or here)."""
    metrics = normalize_metrics(metrics)
    return metrics, run_outcomes(metrics) if outcomes is None else outcomes


def _kept_runs(metrics, outcomes):
    """Metrics rows of runs that did not diverge, and the count of diverged runs per
    (experiment, arm)."""
    diverged = outcomes[outcomes["diverged"]]
    keys = ["experiment", "seed", "arm", "relax_time"]
    marked = metrics.merge(outcomes[keys + ["diverged"]], on=keys, how="left")
    kept = marked[~marked["diverged"].fillna(False).astype(bool)].drop(columns="diverged")
    return kept, diverged.groupby(["experiment", "arm"]).size().to_dict()


def _mean_curve(frame, x="epoch"):
    """Mean over seeds of `value` against `x` (one curve)."""
    return frame.groupby(x)["value"].mean().sort_index()


def _band(ax, mean, sd, colour, label):
    sd = 0.0 if pd.isna(sd) else sd
    ax.axhspan(100 * (mean - sd), 100 * (mean + sd), color=colour, alpha=0.15, lw=0)
    ax.axhline(100 * mean, color=colour, lw=1.2, ls="-")
    return Patch(facecolor=colour, alpha=0.35, edgecolor=colour, label=label)


def _experiments(metrics):
    return sorted(metrics["experiment"].dropna().unique())


def _empty_figure(message, figsize=(8, 3)):
    fig = plt.figure(figsize=figsize, layout="constrained")
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, wrap=True)
    return fig


# ---------------------------------------------------------------------------------------------
# 1. Final and best test accuracy vs relax time
# ---------------------------------------------------------------------------------------------
def plot_accuracy_vs_relax_time(metrics, outcomes=None):
    """Final (filled, solid) and best (hollow, dashed) test accuracy vs t_w, mean ± sd over seeds,
    eFCN and eLCN side by side, with the CNN's and the standard FCN's final accuracy as bands."""
    metrics, outcomes = _prepared(metrics, outcomes)
    experiments = _experiments(metrics)
    with plt.rc_context(STYLE):
        fig, axes = _experiment_panels(len(experiments))
        handles = {}
        for ax, experiment in zip(axes.flat, experiments):
            mine = outcomes[outcomes["experiment"] == experiment]
            final = arm_statistics(mine, "final_test_accuracy")
            best = arm_statistics(mine, "best_test_accuracy")
            for arm, colour, label in (
                ("cnn", CNN_COLOR, "CNN final (mean ± sd)"),
                ("fcn", FCN_COLOR, "standard FCN final (mean ± sd)"),
            ):
                row = final[(final["arm"] == arm) & (final["n"] > 0)]
                if len(row):
                    handles[label] = _band(
                        ax, row["mean"].iloc[0], row["sd"].iloc[0], colour, label
                    )
            for arm in RELAX_ARMS:
                style = ARM_STYLE[arm]
                for statistics, kind, line, face in (
                    (final, "final", "-", style["color"]),
                    (best, "best", "--", "white"),
                ):
                    data = statistics[(statistics["arm"] == arm) & (statistics["n"] > 0)]
                    if data.empty:
                        continue
                    label = f"{style['label']} {kind}"
                    handles[label] = ax.errorbar(
                        data["relax_time"],
                        100 * data["mean"],
                        yerr=100 * data["sd"].fillna(0),
                        color=style["color"],
                        marker=style["marker"],
                        mfc=face,
                        ls=line,
                        lw=1.3,
                        ms=5,
                        capsize=2.5,
                        label=label,
                    )
            diverged = int(mine["diverged"].sum())
            title = experiment + (f"  ({_runs(diverged)})" if diverged else "")
            ax.set_title(title)
            _symlog_epochs(
                ax,
                "relax time t_w (epochs, symlog scale)",
                sorted(mine["relax_time"].dropna().unique()),
            )
            _percent_axis(ax, "test accuracy (%)")
            ax.tick_params(labelleft=True)
        for ax in axes.flat[len(experiments) :]:
            ax.set_visible(False)
        order = [
            k
            for k in (
                "CNN final (mean ± sd)",
                "standard FCN final (mean ± sd)",
                "eFCN final",
                "eFCN best",
                "eLCN final",
                "eLCN best",
            )
            if k in handles
        ]
        fig.legend(
            [handles[k] for k in order], order, loc="outside lower center", ncols=3, frameon=False
        )
        fig.suptitle("Test accuracy after relaxing the CNN at t_w (mean ± sd over seeds)")
    return fig


# ---------------------------------------------------------------------------------------------
# 2. Learning curves
# ---------------------------------------------------------------------------------------------
def plot_learning_curves(metrics, outcomes=None):
    """Test accuracy and train loss vs total epochs: CNN, standard FCN and every relaxed run
    (coloured by t_w, dot at the relax point); one row per experiment and relax arm."""
    metrics, outcomes = _prepared(metrics, outcomes)
    kept, diverged = _kept_runs(metrics, outcomes)
    plain = kept[kept["layer"].isna()]
    panels = [
        (e, arm)
        for e in _experiments(metrics)
        for arm in RELAX_ARMS
        if ((plain["experiment"] == e) & (plain["arm"] == arm)).any()
    ]
    if not panels:
        panels = [(e, None) for e in _experiments(metrics)]
    colour_of, mappable, relax_times = _relax_palette(plain["relax_time"].dropna())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(panels),
            2,
            figsize=(9, 3.0 * len(panels) + 0.6),
            squeeze=False,
            layout="constrained",
        )
        for (experiment, arm), row in zip(panels, axes):
            mine = plain[plain["experiment"] == experiment]
            for ax, metric, label in (
                (row[0], "test_accuracy", "test accuracy (%)"),
                (row[1], "train_loss", "train loss (log scale)"),
            ):
                scale = 100 if metric.endswith("accuracy") else 1
                data = mine[mine["metric"] == metric]
                for reference, colour, ls in (("cnn", CNN_COLOR, "-"), ("fcn", FCN_COLOR, "--")):
                    curve = _mean_curve(data[data["arm"] == reference])
                    if len(curve):
                        ax.plot(
                            curve.index, scale * curve.values, color=colour, ls=ls, lw=2, zorder=3
                        )
                if arm is not None:
                    for t_w, run in data[data["arm"] == arm].groupby("relax_time"):
                        curve = _mean_curve(run)
                        ax.plot(curve.index, scale * curve.values, color=colour_of[t_w], lw=1.2)
                        ax.plot(
                            curve.index[0],
                            scale * curve.values[0],
                            "o",
                            color=colour_of[t_w],
                            ms=4.5,
                            mec="white",
                            mew=0.6,
                            zorder=4,
                        )
                _symlog_epochs(ax, "total epochs (symlog scale)")
                if metric == "train_loss":
                    _log_loss_axis(ax, label)
                else:
                    _percent_axis(ax, label)
            name = ARM_STYLE[arm]["label"] if arm else "no relax runs"
            left_out = diverged.get((experiment, arm), 0)
            row[0].set_title(
                f"{experiment}: {name} relaxed at t_w"
                + (f" ({_runs(left_out)})" if left_out else ""),
                loc="left",
            )
        legend = [
            Line2D([], [], color=CNN_COLOR, lw=2, label="CNN"),
            Line2D([], [], color=FCN_COLOR, lw=2, ls="--", label="standard FCN"),
            Line2D(
                [],
                [],
                color="grey",
                lw=1.2,
                marker="o",
                ms=4.5,
                markevery=[0],
                label="relaxed run (dot: relax point)",
            ),
        ]
        fig.legend(handles=legend, loc="outside lower center", ncols=3, frameon=False)
        if relax_times:
            _relax_colorbar(fig, axes, mappable, relax_times)
        fig.suptitle("Learning curves (mean over seeds)")
    return fig


# ---------------------------------------------------------------------------------------------
# 3. Deviation from the CNN subspace
# ---------------------------------------------------------------------------------------------
def _layer_order(layers):
    def key(name):
        match = re.search(r"(\d+)$", name)
        return (name == "all", int(match.group(1)) if match else 0, name)

    return sorted(layers, key=key)


def plot_deviation(metrics, outcomes=None):
    """Deviation ||W - P(W)|| / ||W|| vs epochs since relax, per layer and pooled ("all"):
    total (solid), non-locality (dashed), non-sharing (dotted), coloured by t_w. eLCN rows show
    non-sharing only (an eLCN is local by construction)."""
    metrics, outcomes = _prepared(metrics, outcomes)
    kept, diverged = _kept_runs(metrics, outcomes)
    data = kept[kept["metric"].isin(DEVIATION_PARTS) & kept["layer"].notna()]
    if data.empty:
        return _empty_figure("no deviation metrics in the table (no relax runs finished)")
    layers = _layer_order(data["layer"].unique())
    blocks = [
        (e, arm)
        for e in _experiments(data)
        for arm in RELAX_ARMS
        if ((data["experiment"] == e) & (data["arm"] == arm)).any()
    ]
    per_row = 4  # wrap wide nets (AlexNet: 5 convs + all) so panels stay legible
    layer_rows, columns = _grid(len(layers), per_row)
    colour_of, mappable, relax_times = _relax_palette(data["relax_time"].dropna())
    with plt.rc_context(STYLE):
        n_rows = len(blocks) * layer_rows
        fig, axes = plt.subplots(
            n_rows,
            columns,
            figsize=(2.1 * columns + 1.2, 2.0 * n_rows + 1.0),
            squeeze=False,
            layout="constrained",
        )
        for block, (experiment, arm) in enumerate(blocks):
            mine = data[(data["experiment"] == experiment) & (data["arm"] == arm)]
            parts = ["deviation_nonsharing"] if arm == "elcn" else list(DEVIATION_PARTS)
            block_axes = axes[block * layer_rows : (block + 1) * layer_rows].flat
            top = mine["value"].max()
            means = mine.groupby(["layer", "metric", "relax_time", "epochs_since_relax"])[
                "value"
            ].mean()
            curves = {
                key: curve.droplevel([0, 1, 2]) for key, curve in means.groupby(level=[0, 1, 2])
            }
            for index, (ax, layer) in enumerate(zip(block_axes, layers)):
                for (curve_layer, part, t_w), curve in curves.items():
                    if curve_layer == layer and part in parts:
                        ax.plot(
                            curve.index,
                            curve.values,
                            color=colour_of[t_w],
                            ls=DEVIATION_PARTS[part][0],
                            lw=1.2,
                        )
                _symlog_epochs(ax, None, steps=(1, 3))
                ax.set_ylim(0, 1.05 * top if top > 0 else 1)
                ax.set_title(f"{'all layers' if layer == 'all' else layer}", fontsize=9)
                if index % columns:
                    ax.tick_params(labelleft=False)
                else:  # the row's label names the block: experiment, arm, runs left out
                    left_out = diverged.get((experiment, arm), 0)
                    ax.set_ylabel(
                        "\n".join(
                            [experiment, ARM_STYLE[arm]["label"]]
                            + ([f"({_runs(left_out)})"] if left_out else [])
                        )
                    )
        for ax in axes.flat:
            if not ax.has_data():
                ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("epochs since relax", fontsize=9)
        legend = [
            Line2D([], [], color="black", ls=style, lw=1.2, label=name)
            for style, name in DEVIATION_PARTS.values()
        ]
        if any(arm == "elcn" for _, arm in blocks):
            legend.append(Line2D([], [], lw=0, label="(eLCN rows: non-sharing only)"))
        fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), frameon=False)
        _relax_colorbar(fig, axes, mappable, relax_times)
        fig.suptitle(
            "Deviation ‖W − P(W)‖ / ‖W‖ from the CNN subspace after relax (mean over seeds;"
            " x: symlog scale)"
        )
    return fig


# ---------------------------------------------------------------------------------------------
# 4. Landscape
# ---------------------------------------------------------------------------------------------
PATH_KINDS = [
    (
        "embedding",
        re.compile(r"^efcn_tw(?P<a>[\d.]+): embedding -> final$"),
        "eFCN at embedding → eFCN final",
    ),
    (
        "fcn",
        re.compile(r"^efcn_tw(?P<a>[\d.]+) final -> fcn final$"),
        "eFCN final → standard FCN final",
    ),
    (
        "pair",
        re.compile(r"^efcn_tw(?P<a>[\d.]+) final -> efcn_tw(?P<b>[\d.]+) final$"),
        "eFCN final → eFCN final",
    ),
]


def _path_kind(path):
    for kind, pattern, _ in PATH_KINDS:
        match = pattern.match(path)
        if match:
            label = " → ".join(f"t_w={v}" for v in match.groupdict().values() if v is not None)
            return kind, label
    return "other", path


def plot_landscape(landscape):
    """Loss and accuracy (train solid, test dashed) along each interpolation path, alpha from
    start (0) to end (1); one column per kind of path, mean over seeds."""
    if landscape is None or len(landscape) == 0:
        return _empty_figure(
            "no landscape paths configured\n(landscape disabled in the config: nothing to draw)"
        )
    landscape = landscape.copy()
    for column in ("alpha", "loss", "accuracy"):
        landscape[column] = pd.to_numeric(landscape[column], errors="coerce")
    landscape[["kind", "label"]] = [_path_kind(p) for p in landscape["path"]]
    experiments = sorted(landscape["experiment"].unique())
    kinds = [k for k, _, _ in PATH_KINDS if (landscape["kind"] == k).any()]
    kinds += ["other"] if (landscape["kind"] == "other").any() else []
    titles = {k: t for k, _, t in PATH_KINDS} | {"other": "other paths"}

    def label_order(label):  # by t_w numerically, so colours run with t_w like the other figures
        return [float(v) for v in re.findall(r"[\d.]+", label)] or [np.inf]

    colour_of = {}
    for kind in kinds:
        labels = sorted(landscape.loc[landscape["kind"] == kind, "label"].unique(), key=label_order)
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(len(labels), 1)))
        colour_of[kind] = dict(zip(labels, colours))
    with plt.rc_context(STYLE):
        n_rows = 2 * len(experiments)
        fig, axes = plt.subplots(
            n_rows,
            len(kinds),
            figsize=(max(3.2 * len(kinds), 6.5), 2.3 * n_rows + 1.6),
            squeeze=False,
            layout="constrained",
            sharex=True,
        )
        for e_index, experiment in enumerate(experiments):
            mine = landscape[landscape["experiment"] == experiment]
            for k_index, kind in enumerate(kinds):
                paths = mine[mine["kind"] == kind]
                loss_ax, accuracy_ax = axes[2 * e_index, k_index], axes[2 * e_index + 1, k_index]
                for label, colour in colour_of[kind].items():
                    path = paths[paths["label"] == label]
                    for split, ls in (("train", "-"), ("test", "--")):
                        curve = (
                            path[path["split"] == split]
                            .groupby("alpha")[["loss", "accuracy"]]
                            .mean()
                        )
                        loss_ax.plot(curve.index, curve["loss"], color=colour, ls=ls, lw=1.3)
                        accuracy_ax.plot(
                            curve.index, 100 * curve["accuracy"], color=colour, ls=ls, lw=1.3
                        )
                loss_ax.set_title(
                    f"{experiment}: {titles[kind]}" if len(experiments) > 1 else titles[kind],
                    fontsize=9,
                )
                loss_ax.set_xlim(0, 1)
                if k_index == 0:
                    loss_ax.set_ylabel("loss")
                    _percent_axis(accuracy_ax, "accuracy (%)")
        # One legend per column (path colours are the same in every experiment), below the column.
        for k_index, kind in enumerate(kinds):
            handles = [
                Line2D([], [], color=c, lw=1.5, label=label) for label, c in colour_of[kind].items()
            ]
            axes[-1, k_index].set_xlabel("alpha (0 = start, 1 = end)")
            axes[-1, k_index].legend(
                handles=handles,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.3),
                ncols=min(len(handles), 2),
                frameon=False,
                fontsize=8,
                title="path",
                title_fontsize=8,
            )
        splits = [
            Line2D([], [], color="black", ls="-", label="train"),
            Line2D([], [], color="black", ls="--", label="test"),
        ]
        fig.legend(handles=splits, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Loss and accuracy along straight lines between solutions (mean over seeds)")
    return fig


# ---------------------------------------------------------------------------------------------
# 5. Projection probe
# ---------------------------------------------------------------------------------------------
def plot_projection_probe(metrics, outcomes=None):
    """Final test accuracy of each relaxed net (filled markers) next to that of its projection
    P back onto the CNN subspace, read as a CNN (hollow markers), vs t_w, with the CNN band."""
    metrics, outcomes = _prepared(metrics, outcomes)
    experiments = _experiments(metrics)
    with plt.rc_context(STYLE):
        fig, axes = _experiment_panels(len(experiments))
        handles = {}
        for ax, experiment in zip(axes.flat, experiments):
            mine = outcomes[outcomes["experiment"] == experiment]
            final = arm_statistics(mine, "final_test_accuracy")
            projected = arm_statistics(mine, "final_projected_test_accuracy")
            cnn = final[(final["arm"] == "cnn") & (final["n"] > 0)]
            if len(cnn):
                label = "CNN final (mean ± sd)"
                handles[label] = _band(ax, cnn["mean"].iloc[0], cnn["sd"].iloc[0], CNN_COLOR, label)
            for arm in RELAX_ARMS:
                style = ARM_STYLE[arm]
                for statistics, label, ls, face in (
                    (final, f"{style['label']} final", "-", style["color"]),
                    (projected, f"P({style['label']}) read as a CNN", ":", "white"),
                ):
                    data = statistics[(statistics["arm"] == arm) & (statistics["n"] > 0)]
                    if data.empty:
                        continue
                    handles[label] = ax.errorbar(
                        data["relax_time"],
                        100 * data["mean"],
                        yerr=100 * data["sd"].fillna(0),
                        color=style["color"],
                        marker=style["marker"],
                        mfc=face,
                        ls=ls,
                        lw=1.3,
                        ms=5,
                        capsize=2.5,
                        label=label,
                    )
            ax.set_title(experiment)
            _symlog_epochs(
                ax,
                "relax time t_w (epochs, symlog scale)",
                sorted(mine["relax_time"].dropna().unique()),
            )
            _percent_axis(ax, "final test accuracy (%)")
            ax.tick_params(labelleft=True)
        for ax in axes.flat[len(experiments) :]:
            ax.set_visible(False)
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=3,
            frameon=False,
        )
        fig.suptitle(
            "Relaxed nets vs their projection onto the CNN subspace (mean ± sd over seeds)"
        )
    return fig


# ---------------------------------------------------------------------------------------------
# 6. Parameter counts
# ---------------------------------------------------------------------------------------------
def parameter_counts_markdown(parameter_counts):
    """Markdown table: one row per experiment, parameters of CNN, eLCN, eFCN and standard FCN."""
    table = parameter_counts.pivot_table(
        index=["experiment", "dataset", "model", "width"],
        columns="network",
        values="parameters",
        aggfunc="first",
    )
    networks = [("cnn", "CNN"), ("elcn", "eLCN"), ("efcn", "eFCN"), ("fcn", "standard FCN")]
    rows = []
    for (experiment, dataset, model, width), counts in table.iterrows():
        cells = [
            f"{int(counts[n]):,}" if n in counts and pd.notna(counts[n]) else "—"
            for n, _ in networks
        ]
        ratio = (
            f"{counts['efcn'] / counts['cnn']:,.0f}×"
            if {"efcn", "cnn"} <= set(counts.index)
            and pd.notna(counts.get("efcn"))
            and counts.get("cnn")
            else "—"
        )
        rows.append([experiment, dataset, model, width if pd.notna(width) else "—", *cells, ratio])
    header = [
        "experiment",
        "dataset",
        "model",
        "width",
        *[name for _, name in networks],
        "eFCN / CNN",
    ]
    return (
        "Trainable parameters per network. The eFCN and standard FCN have the same shapes; their "
        "dense matrices have columns for real inputs only (zero padding folded in).\n\n"
        + markdown_table(header, rows)
        + "\n"
    )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def save_figure(fig, path):
    """Write `fig` as PNG atomically and close it."""
    try:
        with atomic_output(path) as temporary:
            fig.savefig(temporary, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def draw_all(metrics, landscape, parameter_counts, outdir):
    """Write every name in OUTPUTS to `outdir`; `landscape` may be None. Returns the paths."""
    from pathlib import Path

    outdir = Path(outdir)
    metrics, outcomes = _prepared(metrics, None)
    builders = {
        "accuracy_vs_relax_time.png": lambda: plot_accuracy_vs_relax_time(metrics, outcomes),
        "learning_curves.png": lambda: plot_learning_curves(metrics, outcomes),
        "deviation.png": lambda: plot_deviation(metrics, outcomes),
        "landscape.png": lambda: plot_landscape(landscape),
        "projection_probe.png": lambda: plot_projection_probe(metrics, outcomes),
    }
    paths = []
    for name in FIGURES:
        save_figure(builders[name](), outdir / name)
        paths.append(outdir / name)
    write_text_atomic(outdir / "parameter_counts.md", parameter_counts_markdown(parameter_counts))
    paths.append(outdir / "parameter_counts.md")
    return paths
