"""The figures show what the tables hold: seaborn's means and the summary's t-intervals over seeds.

Every test builds small tables in the contract's formats (runs.csv, the tidy metrics.csv,
landscape.csv, parameter_counts.csv, settings.json) with known per-group values: three seeds offset
by -0.02, 0 and +0.02 around a chosen mean, so each group's mean is that value and its 95 %
Student-t half-width is t(0.975, 2) * 0.02 / sqrt(3). The tests read the drawn Axes back (lines,
error bars, bands, markers) and compare them with those numbers.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection

from needle import names
from needle.config_checks import differing_settings
from needle.errors import NeedleError
from needle.plotting import (
    ARM_COLOURS,
    Experiment,
    accuracy_vs_relax_time,
    deviation,
    draw_all,
    gain_vs_setting,
    landscape,
    learning_curves,
    projection_probe,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
SEED_OFFSETS = {0: -0.02, 1: 0.0, 2: 0.02}
T_975_1 = 12.706204736174705  # Student-t quantiles at 0.975, 1 and 2 degrees of freedom
T_975_2 = 4.302652729911275
HALF_WIDTH = T_975_2 * 0.02 / math.sqrt(3)  # 95 % interval of three values spaced by 0.02
RELAX_TIMES = (0, 2, 8)
# Readout test accuracy per (arm, t_w) -- the mean over seeds that every figure must show.
READOUT = {
    (names.CNN, None): 0.80,
    (names.FCN, None): 0.65,
    **{(names.EFCN, t): a for t, a in zip(RELAX_TIMES, (0.72, 0.76, 0.74))},
    **{(names.ELCN, t): a for t, a in zip(RELAX_TIMES, (0.74, 0.78, 0.77))},
    **{(names.CNN_CONTINUED, t): a for t, a in zip(RELAX_TIMES, (0.70, 0.79, 0.81))},
}
PROJECTED = {0: 0.50, 2: 0.70, 8: 0.73}  # P(eFCN) and P(eLCN) read as a CNN
CNN_AT = {0: 0.10, 2: 0.60, 8: 0.80}  # the CNN's own test accuracy at t_w
LAYERS = ("conv1", "conv2", names.POOLED_LAYER)


# -- tables with known answers ----------------------------------------------------------------------
def make_settings(name="synthetic", seeds=(0, 1, 2), arms=names.RELAX_ARMS, **changes):
    settings = {
        "experiment": name,
        "dataset": "fashion-mnist",
        "model": "skinny",
        "width": 16,
        "train_size": 5000,
        "canvas_size": 40,
        "validation_size": 0,
        "seeds": list(seeds),
        "cnn": {"epochs": 8, "checkpoint_points": 4},
        "fcn": {"epochs": 8},
        "relax": {"arms": list(arms), "relax_times": list(RELAX_TIMES), "epochs": 4},
        "comparison": {"readout_epochs": 1, "confidence": 0.95},
        "landscape": {"relax_times": [2, 8], "points": 5, "examples": 100},
    }
    return settings | changes


def run_list(settings):
    """(arm, relax_time, seed) of every run of the settings; relax_time None for cnn and fcn."""
    arms = [(names.CNN, None), (names.FCN, None)]
    arms += [(arm, t) for arm in settings["relax"]["arms"] for t in RELAX_TIMES]
    return [(arm, t, seed) for arm, t in arms for seed in settings["seeds"]]


def make_runs(settings, diverged=(), shift=0.0):
    """runs.csv; runs in ``diverged`` are flagged and hold a wild accuracy no mean may include."""
    rows = []
    for arm, relax_time, seed in run_list(settings):
        offset, lost = SEED_OFFSETS[seed], (arm, relax_time, seed) in diverged
        readout = 0.33 if lost else READOUT[(arm, relax_time)] + offset + shift
        dense = arm in names.DENSE_ARMS
        rows.append(
            {
                "experiment": settings["experiment"],
                "dataset": settings["dataset"],
                "model": settings["model"],
                "seed": seed,
                "arm": arm,
                "relax_time": relax_time,
                "num_classes": 10,
                "last_epoch": 8 if relax_time is None else relax_time + 4,
                "diverged": int(lost),
                "divergence_reason": "non-finite loss" if lost else "",
                "readout_epochs": 1,
                "test_accuracy": readout,
                "test_loss": 0.5,
                "validation_accuracy": math.nan,
                "final_test_accuracy": readout + 0.01,  # the readout is what figures show
                "start_test_accuracy": CNN_AT[relax_time] + offset
                if relax_time is not None
                else 0.1,
                "projected_test_accuracy": PROJECTED.get(relax_time, 0.2) + offset
                if dense
                else math.nan,
                "deviation": 0.3 if dense else math.nan,
                "deviation_nonlocal": 0.2 if dense else math.nan,
                "deviation_nonsharing": 0.22 if dense else math.nan,
                "displacement_offsubspace": 0.9 if dense else math.nan,
                "deviation_max_layer": 0.4 if dense else math.nan,
                "deviation_max_layer_name": "conv3" if dense else "",
            }
        )
    return pd.DataFrame(rows)


def test_accuracy_at(arm, relax_time, epoch):
    """The test-accuracy curve of a run (mean over seeds): rises by 0.05 per epoch of the run."""
    start = 0.1 if relax_time is None else CNN_AT[relax_time]
    return start + 0.05 * (epoch - (relax_time or 0)) + (0.02 if arm == names.FCN else 0.0)


test_accuracy_at.__test__ = False  # a helper, not a test


def deviation_at(arm, part, layer, epochs_since_relax):
    if arm == names.FCN:
        return 0.9 if part == "deviation" else 0.6
    scale = {"deviation": 0.1, "deviation_nonlocal": 0.06, "deviation_nonsharing": 0.08}[part]
    return scale * epochs_since_relax * (1 + LAYERS.index(layer))


def make_metrics(settings, diverged=()):
    """The tidy metrics.csv of every run: test accuracy, train loss, empty validation metrics, and
    the deviation parts per layer for dense arms."""
    rows = []
    for arm, relax_time, seed in run_list(settings):
        offset = SEED_OFFSETS[seed]
        first = relax_time or 0
        last = 8 if relax_time is None else relax_time + 4
        for epoch in range(first, last + 1):
            since = epoch - first
            values = [
                ("test_accuracy", "", test_accuracy_at(arm, relax_time, epoch) + offset),
                ("train_loss", "", 2.3 * 0.7**epoch + offset),
                ("validation_accuracy", "", math.nan),
            ]
            if (arm, relax_time, seed) in diverged and since >= 2:
                values = [("test_accuracy", "", 0.1), ("train_loss", "", math.inf)]
            if arm in names.DENSE_ARMS:
                values += [
                    (part, layer, deviation_at(arm, part, layer, since) + offset)
                    for part in ("deviation", "deviation_nonlocal", "deviation_nonsharing")
                    for layer in LAYERS
                ]
            base = dict(experiment=settings["experiment"], dataset="fashion-mnist", model="skinny")
            base |= dict(seed=seed, arm=arm, relax_time=relax_time, epoch=epoch)
            rows += [
                base | dict(epochs_since_relax=since, metric=m, layer=layer or None, value=v)
                for m, layer, v in values
            ]
    return pd.DataFrame(rows, columns=names.TIDY_COLUMNS)


def make_landscape(settings, diverged_seed=None):
    """landscape.csv: loss 0.5 + alpha (1 - alpha) + t_w / 100 along every path (mean over seeds);
    the paths of ``diverged_seed`` are flagged."""
    paths = [("embedding_to_final", 2, 2), ("embedding_to_final", 8, 8)]
    paths += [("final_to_fcn", 2, None), ("final_to_fcn", 8, None), ("final_to_final", 2, 8)]
    rows = []
    for (kind, start, end), seed, alpha, split in (
        (path, seed, alpha, split)
        for path in paths
        for seed in settings["seeds"]
        for alpha in (0.0, 0.25, 0.5, 0.75, 1.0)
        for split in ("train", "test")
    ):
        loss = 0.5 + alpha * (1 - alpha) + start / 100 + SEED_OFFSETS[seed]
        end_arm = names.FCN if end is None else names.EFCN
        rows.append(
            {
                "experiment": settings["experiment"],
                "seed": seed,
                "path_kind": kind,
                "start_arm": names.EFCN,
                "start_relax_time": start,
                "end_arm": end_arm,
                "end_relax_time": end,
                "diverged": int(seed == diverged_seed),
                "alpha": alpha,
                "split": split,
                "loss": loss,
                "accuracy": 0.9 - loss / 2,
            }
        )
    return pd.DataFrame(rows, columns=names.LANDSCAPE_COLUMNS)


def make_parameter_counts():
    counts = {names.CNN: 9178, names.ELCN: 396634, names.EFCN: 3462490, names.FCN: 3462490}
    return pd.DataFrame(
        [("synthetic", "fashion-mnist", "skinny", 16, net, n) for net, n in counts.items()],
        columns=names.PARAMETER_COLUMNS,
    )


@pytest.fixture(scope="module")
def tables():
    settings = make_settings()
    return {
        "settings": settings,
        "experiment": Experiment.from_settings(settings),
        "runs": make_runs(settings),
        "metrics": make_metrics(settings),
        "landscape": make_landscape(settings),
    }


# -- reading a figure back ----------------------------------------------------------------------------
def same_colour(a, b) -> bool:
    return np.allclose(matplotlib.colors.to_rgb(a), matplotlib.colors.to_rgb(b))


def labelled_line(ax, label):
    found = [line for line in ax.get_lines() if line.get_label() == label and len(line.get_xdata())]
    assert len(found) == 1, f"expected one line labelled {label!r}, found {len(found)}"
    return found[0]


def lines_of_colour(ax, colour):
    """The drawn lines of ``colour`` (not legend keys, not the invisible data lines of error bars)."""
    return [
        line
        for line in ax.get_lines()
        if len(line.get_xdata())
        and line.get_linestyle() != "None"
        and same_colour(line.get_color(), colour)
    ]


def points(line) -> dict:
    return dict(zip(np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)))


def error_bars(ax, colour) -> dict:
    """x -> (low, high) of the error bars drawn in ``colour``."""
    collections = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = [
        segment
        for collection in collections
        if len(collection.get_color()) and same_colour(collection.get_color()[0], colour)
        for segment in collection.get_segments()
        if len(segment)
    ]
    return {float(s[0][0]): tuple(sorted(float(y) for _, y in s)) for s in segments}


def bands(ax, colour) -> list:
    """(low, high) of every filled band in ``colour``, in data coordinates."""
    found = []
    for collection in ax.collections:
        if type(collection).__name__.endswith("PolyCollection") and same_colour(
            collection.get_facecolor()[0], colour
        ):
            vertices = np.concatenate([path.vertices for path in collection.get_paths()])
            found.append((vertices[:, 1].min(), vertices[:, 1].max()))
    return found


def markers(ax, label):
    found = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label() == label]
    return np.concatenate([c.get_offsets() for c in found]) if found else np.empty((0, 2))


def approx(value):
    return pytest.approx(value, abs=1e-9)


# -- figure 1: accuracy against relax time -------------------------------------------------------------
def test_each_relax_arm_shows_its_mean_readout_and_t_interval_at_every_relax_time(tables):
    fig = accuracy_vs_relax_time(tables["runs"], tables["experiment"])
    ax = fig.axes[0]
    for arm in names.RELAX_ARMS:
        drawn = points(labelled_line(ax, names.ARM_LABELS[arm]))
        assert drawn == {t: approx(READOUT[(arm, t)]) for t in RELAX_TIMES}
        assert error_bars(ax, ARM_COLOURS[arm]) == {
            t: (approx(READOUT[(arm, t)] - HALF_WIDTH), approx(READOUT[(arm, t)] + HALF_WIDTH))
            for t in RELAX_TIMES
        }
    assert "n = 3 seeds" in fig._suptitle.get_text()


def test_cnn_and_fcn_are_bands_at_their_mean_and_interval_across_the_axis(tables):
    ax = accuracy_vs_relax_time(tables["runs"], tables["experiment"]).axes[0]
    for arm in (names.CNN, names.FCN):
        line = labelled_line(ax, f"{names.ARM_LABELS[arm]} (band: interval)")
        assert list(line.get_ydata()) == [approx(READOUT[(arm, None)])] * 2
        assert bands(ax, ARM_COLOURS[arm]) == [
            (approx(READOUT[(arm, None)] - HALF_WIDTH), approx(READOUT[(arm, None)] + HALF_WIDTH))
        ]
    low, high = ax.get_xlim()
    assert min(line.get_xdata()) <= low and max(line.get_xdata()) >= high


def test_a_diverged_run_is_left_out_of_the_mean_and_marked_at_chance(tables):
    settings = tables["settings"]
    runs = make_runs(settings, diverged={(names.EFCN, 2, 2)})
    fig = accuracy_vs_relax_time(runs, tables["experiment"])
    ax = fig.axes[0]
    # Seeds 0 and 1 remain at t_w = 2: mean 0.76 - 0.01, two values 0.02 apart.
    assert points(labelled_line(ax, "eFCN"))[2.0] == approx(0.75)
    low, high = error_bars(ax, ARM_COLOURS[names.EFCN])[2.0]
    assert high - low == approx(2 * T_975_1 * 0.01)  # two values 0.02 apart: sd / sqrt(n) = 0.01
    assert markers(ax, "eFCN: diverged run").tolist() == [[2.0, approx(0.1)]]
    assert "1 diverged run left out" in fig._suptitle.get_text()


def test_an_arm_whose_runs_all_diverged_draws_only_its_marks(tables):
    settings = tables["settings"]
    lost = {(names.ELCN, t, seed) for t in RELAX_TIMES for seed in settings["seeds"]}
    ax = accuracy_vs_relax_time(make_runs(settings, lost), tables["experiment"]).axes[0]
    assert not lines_of_colour(ax, ARM_COLOURS[names.ELCN])
    assert len(markers(ax, "eLCN: diverged run")) == 9


def test_one_seed_draws_the_values_without_an_interval():
    settings = make_settings(seeds=(1,))
    ax = accuracy_vs_relax_time(make_runs(settings), Experiment.from_settings(settings)).axes[0]
    assert points(labelled_line(ax, "eFCN")) == {
        t: approx(READOUT[(names.EFCN, t)]) for t in RELAX_TIMES
    }
    assert error_bars(ax, ARM_COLOURS[names.EFCN]) == {}


# -- figure 2: learning curves ------------------------------------------------------------------------
def test_learning_curves_show_per_epoch_means_of_references_and_of_each_relax_time(tables):
    fig = learning_curves(tables["metrics"], tables["runs"], tables["experiment"])
    accuracy, loss = fig.axes[0], fig.axes[1]  # first row: the eFCN
    assert points(labelled_line(accuracy, "CNN")) == {
        e: approx(test_accuracy_at(names.CNN, None, e)) for e in range(9)
    }
    assert points(labelled_line(loss, "standard FCN")) == {
        e: approx(2.3 * 0.7**e) for e in range(9)
    }
    colour = tables["experiment"].relax_colours[2.0]
    (relaxed,) = lines_of_colour(accuracy, colour)
    assert points(relaxed) == {e: approx(test_accuracy_at(names.EFCN, 2, e)) for e in range(2, 7)}
    assert len(bands(accuracy, colour)) == 1


def test_when_the_test_set_is_read_only_at_the_readout_the_curves_show_validation(tables):
    settings = make_settings(
        validation_size=1000, comparison={"readout_epochs": 1, "test_every_epoch": False}
    )
    metrics = tables["metrics"]
    test = metrics[metrics["metric"] == "test_accuracy"]
    validation = test.assign(metric="validation_accuracy", value=test["value"] - 0.01)
    metrics = pd.concat([metrics[metrics["metric"] != "validation_accuracy"], validation])
    fig = learning_curves(metrics, tables["runs"], Experiment.from_settings(settings))
    accuracy = fig.axes[0]
    assert accuracy.get_ylabel().startswith("validation accuracy")
    assert points(labelled_line(accuracy, "CNN")) == {
        e: approx(test_accuracy_at(names.CNN, None, e) - 0.01) for e in range(9)
    }


def test_the_log_loss_axis_has_at_least_four_labels(tables):
    fig = learning_curves(tables["metrics"], tables["runs"], tables["experiment"])
    fig.canvas.draw()
    loss = fig.axes[1]
    low, high = loss.get_ylim()
    labels = [
        t
        for t in loss.yaxis.get_major_ticks()
        if low <= t.get_loc() <= high and t.label1.get_text()
    ]
    assert len(labels) >= 4


def test_long_runs_are_drawn_at_log_spaced_epochs_and_at_their_last_epoch():
    settings = make_settings(seeds=(0, 1), arms=())
    lengths = {names.CNN: 100, names.FCN: 57}
    metrics = pd.DataFrame(
        [
            dict(experiment="synthetic", dataset="fashion-mnist", model="skinny", seed=seed)
            | dict(arm=arm, relax_time=None, epoch=epoch, epochs_since_relax=epoch)
            | dict(metric="test_accuracy", layer=None, value=0.5)
            for arm, last in lengths.items()
            for seed in (0, 1)
            for epoch in range(last + 1)
        ],
        columns=names.TIDY_COLUMNS,
    )
    runs = make_runs(settings).assign(last_epoch=lambda runs: runs["arm"].map(lengths))
    accuracy = learning_curves(metrics, runs, Experiment.from_settings(settings)).axes[0]
    log_spaced = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 12, 14, 17, 20, 23, 28, 32, 38, 45, 52, 62, 72, 85]
    assert list(labelled_line(accuracy, "CNN").get_xdata()) == [*log_spaced, 100]
    assert list(labelled_line(accuracy, "standard FCN").get_xdata()) == [*log_spaced[:20], 57]


def test_a_diverged_run_is_a_thin_grey_line_of_its_own_not_part_of_the_mean(tables):
    settings = tables["settings"]
    lost = {(names.EFCN, 2, 0)}
    fig = learning_curves(
        make_metrics(settings, lost), make_runs(settings, lost), tables["experiment"]
    )
    accuracy = fig.axes[0]
    (relaxed,) = lines_of_colour(accuracy, tables["experiment"].relax_colours[2.0])
    # Seeds 1 and 2 remain: their mean is the curve + 0.01.
    assert points(relaxed)[6.0] == approx(test_accuracy_at(names.EFCN, 2, 6) + 0.01)
    (grey,) = [
        line for line in accuracy.get_lines() if line.get_label() == "diverged run (left out)"
    ]
    assert points(grey)[4.0] == approx(0.1)


# -- figure 3: deviation ------------------------------------------------------------------------------
def test_deviation_shows_every_part_per_layer_beside_the_fcns_own_deviation(tables):
    fig = deviation(tables["metrics"], tables["runs"], tables["experiment"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        f"{label}, {layer}"
        for label in ("eFCN", "eLCN")
        for layer in ("conv1", "conv2", "all layers")
    ]
    colour = tables["experiment"].relax_colours[8.0]
    for ax, layer in zip(panels, LAYERS * 2):
        reference = labelled_line(ax, "standard FCN: its own total deviation (reference)")
        assert points(reference) == {e: approx(0.9) for e in range(9)}  # the FCN's epochs
        drawn = [points(line) for line in lines_of_colour(ax, colour)]
        assert len(drawn) == 3  # total and its two parts
        for part in ("deviation", "deviation_nonlocal", "deviation_nonsharing"):
            assert {e: approx(deviation_at(names.EFCN, part, layer, e)) for e in range(5)} in drawn


# -- figure 4: landscape --------------------------------------------------------------------------------
def test_landscape_has_a_column_per_path_kind_and_a_fixed_colour_per_relax_time(tables):
    experiment = tables["experiment"]
    fig = landscape(tables["landscape"], experiment)
    loss_panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in loss_panels] == [
        "eFCN at embedding → final",
        "eFCN final → standard FCN final",
        "eFCN → eFCN",
    ]
    first = loss_panels[0]
    for relax_time in (2.0, 8.0):
        train, test = lines_of_colour(first, experiment.relax_colours[relax_time])
        expected = {
            a: approx(0.5 + a * (1 - a) + relax_time / 100) for a in (0, 0.25, 0.5, 0.75, 1)
        }
        assert points(train) == expected and points(test) == expected
    # With no diverged path the legend has no entry for one.
    legend_labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert legend_labels and not [label for label in legend_labels if "diverged" in label]
    # The same t_w has the same colour in the learning curves and the deviation figure.
    for other in (
        learning_curves(tables["metrics"], tables["runs"], experiment),
        deviation(tables["metrics"], tables["runs"], experiment),
    ):
        assert lines_of_colour(other.axes[0], experiment.relax_colours[2.0])


def test_landscape_marks_diverged_paths_and_keeps_its_tick_labels_inside_the_figure(tables):
    fig = landscape(make_landscape(tables["settings"], diverged_seed=0), tables["experiment"])
    first = fig.axes[0]
    assert len(markers(first, "path with a diverged end (left out)")) == 2 * 2 * 5
    assert "2 diverged paths left out" in first.get_title()
    legend_labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert "path with a diverged end (left out)" in legend_labels
    train, _ = lines_of_colour(first, tables["experiment"].relax_colours[2.0])
    assert points(train)[0.5] == approx(0.5 + 0.25 + 0.02 + 0.01)  # seeds 1 and 2
    fig.canvas.draw()
    figure_box = fig.bbox
    for ax in fig.axes:
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            if label.get_visible() and label.get_text():
                box = label.get_window_extent()
                assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, label.get_text()


def test_an_empty_landscape_says_so(tables):
    empty = pd.DataFrame(columns=names.LANDSCAPE_COLUMNS)
    for paths in (None, empty):
        fig = landscape(paths, tables["experiment"])
        assert any("no landscape paths" in text.get_text() for text in fig.texts)


# -- figure 5: projection probe --------------------------------------------------------------------------
def test_projection_probe_shows_trained_projected_cnn_at_relax_time_and_chance(tables):
    ax = projection_probe(tables["runs"], tables["experiment"]).axes[0]
    for arm in names.EMBEDDED_ARMS:
        drawn = [points(line) for line in lines_of_colour(ax, ARM_COLOURS[arm])]
        assert len(drawn) == 2
        assert {t: approx(READOUT[(arm, t)]) for t in RELAX_TIMES} in drawn
        assert {t: approx(PROJECTED[t]) for t in RELAX_TIMES} in drawn
    cnn = labelled_line(ax, "the CNN at t_w")
    assert points(cnn) == {t: approx(CNN_AT[t]) for t in RELAX_TIMES}
    assert bands(ax, ARM_COLOURS[names.CNN]) and set(labelled_line(ax, "chance").get_ydata()) == {
        0.1
    }


# -- every figure, from the files ---------------------------------------------------------------------------
def write_tables(folder: Path, settings, runs, metrics, landscape_table=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings))
    runs.to_csv(folder / "runs.csv", index=False)
    metrics.to_csv(folder / "metrics.csv", index=False)
    make_parameter_counts().to_csv(folder / "parameter_counts.csv", index=False)
    if landscape_table is not None:
        landscape_table.to_csv(folder / "landscape.csv", index=False)
    return folder


def plot_figures_arguments(folder: Path, landscape_table=True):
    arguments = ["--settings", folder / "settings.json", "--metrics", folder / "metrics.csv"]
    arguments += [
        "--runs",
        folder / "runs.csv",
        "--parameter-counts",
        folder / "parameter_counts.csv",
    ]
    arguments += ["--landscape", folder / "landscape.csv"] if landscape_table else []
    return [str(a) for a in arguments + ["--outdir", folder / "figures"]]


def test_every_figure_is_written_from_the_tables_alone_without_importing_torch(tables, tmp_path):
    folder = write_tables(
        tmp_path, tables["settings"], tables["runs"], tables["metrics"], tables["landscape"]
    )
    program = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        f"sys.argv = ['plot_figures.py', *{plot_figures_arguments(folder)!r}]\n"
        f"runpy.run_path({str(SCRIPTS / 'plot_figures.py')!r}, run_name='__main__')\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "no torch"
    written = sorted(path.name for path in (folder / "figures").iterdir())
    assert written == sorted([f"{name}.png" for name in names.FIGURES] + ["parameter_counts.md"])
    for name in names.FIGURES:
        assert (folder / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    counts = (folder / "figures" / "parameter_counts.md").read_text()
    assert "| eFCN | 3,462,490 | 377.3 |" in counts and "| CNN | 9,178 | 1.0 |" in counts


def test_every_figure_survives_diverged_only_arms_one_seed_no_landscape_and_no_relax_runs(tmp_path):
    settings = make_settings(seeds=(0,), arms=(names.EFCN,))
    lost = {(names.EFCN, t, 0) for t in RELAX_TIMES} | {(names.FCN, None, 0)}
    draw_all(
        settings,
        make_metrics(settings, lost),
        make_runs(settings, lost),
        None,
        make_parameter_counts(),
        tmp_path,
    )
    settings = make_settings(arms=(names.CNN_CONTINUED,))
    empty = pd.DataFrame(columns=names.LANDSCAPE_COLUMNS)
    paths = draw_all(
        settings,
        make_metrics(settings),
        make_runs(settings),
        empty,
        make_parameter_counts(),
        tmp_path,
    )
    assert [path.name for path in paths[:-1]] == [f"{name}.png" for name in names.FIGURES]


@pytest.mark.parametrize(
    "arms",
    [(names.CNN,), (names.CNN, names.FCN), names.ARMS],
    ids=["cnn", "cnn and fcn", "every arm"],
)
def test_every_figure_survives_arms_whose_every_run_diverged(arms, tmp_path):
    settings = make_settings(seeds=(0, 1))
    lost = {run for run in run_list(settings) if run[0] in arms}
    landscape_table = make_landscape(settings, diverged_seed=0)
    runs, metrics = make_runs(settings, lost), make_metrics(settings, lost)
    paths = draw_all(settings, metrics, runs, landscape_table, make_parameter_counts(), tmp_path)
    assert [path.name for path in paths[:-1]] == [f"{name}.png" for name in names.FIGURES]


def test_every_figure_has_a_caption_in_the_report():
    for name in (*names.FIGURES, "parameter_counts"):
        caption = (REPO / "workflow" / "report" / f"{name}.rst").read_text()
        assert "snakemake.wildcards.experiment" in caption, name


def test_tables_that_do_not_match_their_settings_are_refused_in_one_line(tables, tmp_path):
    with pytest.raises(NeedleError, match=r"relax times \[5\.0\] are not in settings.json"):
        runs = tables["runs"].replace({"relax_time": {8: 5}})
        draw_all(
            tables["settings"], tables["metrics"], runs, None, make_parameter_counts(), tmp_path
        )
    with pytest.raises(NeedleError, match="missing from runs.csv"):
        learning_curves(tables["metrics"], tables["runs"].iloc[1:], tables["experiment"])
    folder = write_tables(
        tmp_path, tables["settings"], tables["runs"].drop(columns="diverged"), tables["metrics"]
    )
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "plot_figures.py"), *plot_figures_arguments(folder, False)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "runs table" in result.stderr and "lacks column(s) diverged" in result.stderr


# -- sweeps ------------------------------------------------------------------------------------------------
def test_the_gain_over_the_fcn_is_paired_per_seed_against_the_swept_setting():
    small, large = make_settings("small", train_size=500), make_settings("large", train_size=5000)
    lost = {(names.EFCN, 8, 0)}
    runs = pd.concat([make_runs(small, lost), make_runs(large, shift=0.05)])
    runs.loc[(runs["experiment"] == "large") & (runs["arm"] == names.FCN), "test_accuracy"] -= 0.04
    fig = gain_vs_setting(runs, [small, large], "train_size")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == [names.ARM_LABELS[arm] for arm in names.ARMS if arm != names.FCN]
    # Same-seed differences have no seed offset left: every interval has zero width.
    (cnn,) = lines_of_colour(panels["CNN"], ARM_COLOURS[names.CNN])
    assert points(cnn) == {500.0: approx(0.15), 5000.0: approx(0.19)}
    assert error_bars(panels["CNN"], ARM_COLOURS[names.CNN]) == {
        500.0: (approx(0.15), approx(0.15)),
        5000.0: (approx(0.19), approx(0.19)),
    }
    colours = Experiment.from_settings(small).relax_colours
    (efcn_8,) = lines_of_colour(panels["eFCN"], colours[8.0])
    # The diverged seed counts at chance (0.1): gains 0.1 - 0.63, 0.09, 0.09 at train_size 500.
    assert points(efcn_8)[500.0] == approx((0.1 - 0.63 + 0.09 + 0.09) / 3)
    assert panels["CNN"].get_xscale() == "log"


def test_a_sweep_is_refused_unless_the_experiments_differ_in_exactly_that_setting(tmp_path):
    small, large = (
        make_settings("small", train_size=500),
        make_settings("large", train_size=5000, width=8),
    )
    assert differing_settings([small, large]) == ["train_size", "width"]
    assert differing_settings([small, make_settings("other", train_size=500)]) == []
    arguments = []
    for settings in (small, large):
        folder = write_tables(
            tmp_path / settings["experiment"], settings, make_runs(settings), make_metrics(settings)
        )
        arguments += [folder / "settings.json", folder / "runs.csv"]
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "plot_sweep.py"), "--settings", *map(str, arguments[::2])]
        + [
            "--runs",
            *map(str, arguments[1::2]),
            "--setting",
            "train_size",
            "--output",
            str(tmp_path / "s.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "differ in ['train_size', 'width']" in result.stderr
    assert not (tmp_path / "s.png").exists()
