"""Figures and summary are drawn from the tidy tables alone; verdicts follow from the numbers."""

import runpy
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from synthetic_tables import synthetic_tables, write_synthetic_tables

from needle.errors import NeedleError
from needle.plotting import FIGURES, OUTPUTS, TABLES, draw_all
from needle.summary import run_outcomes, summarize, summary_markdown, write_summary

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


def set_final_test_accuracy(metrics, experiment, arm, relax_time, value):
    """Copy of `metrics` where every seed of one run ends at test accuracy `value`."""
    metrics = metrics.copy()
    run = (
        (metrics["experiment"] == experiment)
        & (metrics["arm"] == arm)
        & (metrics["relax_time"] == relax_time)
    )
    last = metrics.loc[run].groupby("seed")["epoch"].transform("max")
    final = run & (metrics["metric"] == "test_accuracy")
    final &= metrics["epoch"] == last.reindex(metrics.index)
    assert final.sum() == 2  # both seeds
    metrics.loc[final, "value"] = value
    return metrics


def row(summary, experiment):
    return summary.set_index("experiment").loc[experiment]


def assert_png(path):
    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is suspiciously small"


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def test_every_output_is_written_from_the_tables_of_two_experiments(tables, tmp_path):
    paths = draw_all(tables["metrics"], tables["landscape"], tables["parameter_counts"], tmp_path)
    assert sorted(p.name for p in paths) == sorted(OUTPUTS)
    for name in FIGURES:
        assert_png(tmp_path / name)
    counts = (tmp_path / "parameter_counts.md").read_text()
    assert "3,462,490" in counts and "9,178" in counts and "| fashion-b |" in counts
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_figure_names_constant_lists_pngs_and_outputs_add_the_table():
    assert all(name.endswith(".png") for name in FIGURES)
    assert OUTPUTS == FIGURES + TABLES == FIGURES + ["parameter_counts.md"]


def test_cli_without_landscape_draws_a_placeholder_landscape(tmp_path):
    import plot_figures

    paths = write_synthetic_tables(
        tmp_path,
        experiments=("only",),
        seeds=(0,),
        relax_times=(0, 2),
        arms=("efcn",),
        epochs=4,
        landscape=False,
    )
    plot_figures.main(
        [
            "--metrics",
            str(paths["metrics"]),
            "--parameter-counts",
            str(paths["parameter_counts"]),
            "--outdir",
            str(tmp_path / "figures"),
        ]
    )
    for name in FIGURES:
        assert_png(tmp_path / "figures" / name)


def test_plot_figures_under_snakemake_rejects_outputs_it_does_not_write(tmp_path):
    fake = SimpleNamespace(
        input=SimpleNamespace(metrics="m.csv", parameter_counts="p.csv"),
        output=[str(tmp_path / "accuracy.pdf")],
        log=[],
    )
    with pytest.raises(NeedleError, match="OUTPUTS"):
        runpy.run_path(str(SCRIPTS / "plot_figures.py"), init_globals={"snakemake": fake})


# ---------------------------------------------------------------------------------------------
# Summary and verdicts
# ---------------------------------------------------------------------------------------------
def test_baseline_tables_give_claims_3_and_4_true_and_5_false(tables):
    summary = summarize(tables["metrics"])
    assert list(summary["experiment"]) == ["fashion-a", "fashion-b"]
    for _, r in summary.iterrows():
        assert r["claim3_deviation_small"] and r["claim4_efcn_beats_fcn_every_tw"]
        assert not r["claim5_intermediate_efcn_beats_cnn"]
        assert r["diverged_runs"] == 0 and r["runs"] == 24
        assert r["best_efcn_tw"] == 8 and r["fcn_mean"] < r["best_efcn_mean"] < r["cnn_mean"]
        assert r["cnn_seeds"] == 2 and r["cnn_sd"] > 0


def test_one_efcn_below_the_fcn_turns_claim_4_false_in_its_experiment_only(tables):
    metrics = set_final_test_accuracy(tables["metrics"], "fashion-a", "efcn", 1.0, 0.5)
    summary = summarize(metrics)
    assert not row(summary, "fashion-a")["claim4_efcn_beats_fcn_every_tw"]
    assert row(summary, "fashion-a")["claim4_worst_efcn_tw"] == 1
    assert row(summary, "fashion-a")["claim4_worst_efcn_mean"] == pytest.approx(0.5)
    assert row(summary, "fashion-b")["claim4_efcn_beats_fcn_every_tw"]


def test_an_intermediate_efcn_above_the_cnn_turns_claim_5_true(tables):
    summary = summarize(set_final_test_accuracy(tables["metrics"], "fashion-a", "efcn", 2.0, 0.95))
    assert row(summary, "fashion-a")["claim5_intermediate_efcn_beats_cnn"]
    assert row(summary, "fashion-a")["claim5_best_intermediate_tw"] == 2
    assert row(summary, "fashion-a")["best_efcn_tw"] == 2
    assert not row(summary, "fashion-b")["claim5_intermediate_efcn_beats_cnn"]


@pytest.mark.parametrize("relax_time", [0.0, 8.0])
def test_relax_at_0_or_at_the_cnns_last_epoch_is_not_intermediate_for_claim_5(tables, relax_time):
    summary = summarize(
        set_final_test_accuracy(tables["metrics"], "fashion-a", "efcn", relax_time, 0.95)
    )
    assert not row(summary, "fashion-a")["claim5_intermediate_efcn_beats_cnn"]


def test_deviation_threshold_decides_claim_3(tables):
    largest = summarize(tables["metrics"])["claim3_max_final_deviation"].max()
    assert summarize(tables["metrics"], deviation_threshold=largest * 1.01)[
        "claim3_deviation_small"
    ].all()
    assert not summarize(tables["metrics"], deviation_threshold=largest * 0.99)[
        "claim3_deviation_small"
    ].any()


def test_diverged_runs_are_counted_and_excluded_from_means_and_verdicts():
    tables = synthetic_tables(diverged=[("fashion-a", 0, "efcn", 1)])
    outcomes = run_outcomes(tables["metrics"])
    assert outcomes["diverged"].sum() == 1
    summary = summarize(tables["metrics"])
    a = row(summary, "fashion-a")
    assert a["diverged_runs"] == 1 and a["diverged_run_list"] == "efcn/tw1/seed0"
    # The diverged run ends at chance (10 %), far below the FCN: counted as a result it would make
    # claim 4 false. Excluded, the claim stands on the other seed.
    assert a["claim4_efcn_beats_fcn_every_tw"]
    assert a["claim4_worst_efcn_mean"] > 0.6
    assert "1 of 24" in summary_markdown(summary)


def test_a_relax_time_whose_runs_all_diverged_is_listed_as_without_results():
    tables = synthetic_tables(diverged=[("fashion-a", 0, "efcn", 4), ("fashion-a", 1, "efcn", 4)])
    a = row(summarize(tables["metrics"]), "fashion-a")
    assert a["claim4_tw_without_results"] == "4"
    assert a["diverged_runs"] == 2


def test_verdicts_are_undecided_without_the_arms_that_decide_them(tables):
    metrics = tables["metrics"][tables["metrics"]["arm"] != "fcn"]
    summary = summarize(metrics)
    assert summary["claim4_efcn_beats_fcn_every_tw"].isna().all()
    assert "undecided" in summary_markdown(summary)


def test_summarize_script_reads_csv_and_writes_csv_and_markdown_under_snakemake(tmp_path):
    paths = write_synthetic_tables(tmp_path, experiments=("fashion-a",))
    fake = SimpleNamespace(
        input=SimpleNamespace(metrics=[str(paths["metrics"])]),
        output=SimpleNamespace(
            csv=str(tmp_path / "summary.csv"), markdown=str(tmp_path / "summary.md")
        ),
        params=SimpleNamespace(deviation_threshold=0.5),
        log=[str(tmp_path / "summary.log")],
    )
    runpy.run_path(str(SCRIPTS / "summarize.py"), init_globals={"snakemake": fake})
    written = pd.read_csv(tmp_path / "summary.csv")
    assert written.loc[0, "claim4_efcn_beats_fcn_every_tw"] == True  # noqa: E712 (CSV round trip)
    assert "| fashion-a |" in (tmp_path / "summary.md").read_text()
    assert "summarised 1 experiment" in (tmp_path / "summary.log").read_text()


def test_nullable_integer_relax_times_as_the_aggregator_writes_them_are_accepted(tables):
    metrics = tables["metrics"].assign(relax_time=tables["metrics"]["relax_time"].astype("Int64"))
    pd.testing.assert_frame_equal(summarize(metrics), summarize(tables["metrics"]))


def test_write_summary_matches_summarize(tables, tmp_path):
    written = write_summary(tables["metrics"], tmp_path / "s.csv", tmp_path / "s.md")
    pd.testing.assert_frame_equal(written, summarize(tables["metrics"]))


def test_a_table_without_the_contract_columns_is_rejected_with_a_needle_error(tables):
    with pytest.raises(NeedleError, match="lacks columns"):
        summarize(tables["metrics"].drop(columns="epochs_since_relax"))


def test_best_accuracy_of_a_relaxed_run_ignores_the_relax_point_which_is_the_cnn_itself(tables):
    metrics = tables["metrics"].copy()
    relax_point = (
        (metrics["arm"] == "efcn")
        & (metrics["epochs_since_relax"] == 0)
        & (metrics["metric"] == "test_accuracy")
    )
    before = run_outcomes(metrics)
    metrics.loc[relax_point, "value"] = 0.99
    after = run_outcomes(metrics)
    pd.testing.assert_series_equal(after["best_test_accuracy"], before["best_test_accuracy"])
