"""needle.summary and summarize.py: claims decided on paired per-seed differences of synthetic
experiments whose answers are designed (tests/synthetic_tables.py); a page that states its rules.

Most experiments here have no per-run noise (noise=0) but a per-seed offset shared by every arm:
the paired differences are then exactly the designed effects, while the unpaired arms vary.
"""

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import summarize
import synthetic_tables as synthetic

from needle import names, summary, summary_page, tables
from needle.errors import NeedleError
from needle.stats import FAILS, HOLDS, NOT_TESTED, UNDECIDED

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
SEEDS = [0, 1, 2, 3, 4]
TIMES = [0, 1, 2, 4, 8]  # synthetic.settings(): intermediate ones (0 < t_w < 8) are 1, 2, 4


def decide(built: synthetic.Experiment, outcomes=None) -> summary.Summary:
    outcomes = built.outcomes if outcomes is None else outcomes
    return summary.summarize(built.settings, outcomes, built.embedding, built.landscape)


def claim_rows(result: summary.Summary, claim: str) -> pd.DataFrame:
    return result.claims[result.claims["claim"] == claim].reset_index(drop=True)


def verdicts(result: summary.Summary) -> dict:
    return dict(result.claims.drop_duplicates("claim")[["claim", "claim_verdict"]].values)


def row_at(result, claim, relax_time):
    rows = claim_rows(result, claim)
    return rows[rows["relax_time"] == relax_time].iloc[0]


def arm_row(result, arm, relax_time=None):
    arms = result.arms
    at = arms["relax_time"].isna() if relax_time is None else arms["relax_time"] == relax_time
    return arms[(arms["arm"] == arm) & at].iloc[0]


@pytest.fixture(scope="module")
def designed():
    """The default design: every claim decided by a wide margin (see synthetic_tables)."""
    return synthetic.experiment(noise=0.0)


def test_clear_wins_hold_and_a_clear_loss_fails(designed):
    assert verdicts(decide(designed)) == {
        "1": HOLDS,
        "2": HOLDS,
        "3": HOLDS,
        "4": HOLDS,
        "5": FAILS,
        "elcn_vs_efcn": HOLDS,
        "6": HOLDS,
    }


def test_the_tables_have_the_contract_columns_and_one_row_per_comparison(designed):
    result = decide(designed)
    assert tuple(result.claims.columns) == names.SUMMARY_COLUMNS
    assert tuple(result.arms.columns) == names.ARM_SUMMARY_COLUMNS
    rows_per_claim = result.claims["claim"].value_counts().to_dict()
    # claim 1: one row per embedded arm; 5: the intermediate t_w; 6: the landscape's t_w
    assert rows_per_claim == {"1": 2, "2": 1, "3": 5, "4": 5, "5": 3, "elcn_vs_efcn": 5, "6": 2}
    assert len(result.arms) == 2 + 3 * len(TIMES)
    assert not any("best" in column for column in names.SUMMARY_COLUMNS + names.OUTCOME_COLUMNS)


def test_paired_differences_cancel_what_the_seeds_share(designed):
    result = decide(designed)
    row = row_at(result, "4", 0)
    assert row["comparison"] == "efcn - fcn" and row["n"] == 5
    assert row["mean_difference"] == pytest.approx(0.06)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(0.0, abs=1e-9)
    efcn = arm_row(result, "efcn", 0)  # unpaired, the seeds' offsets make the arm's interval wide
    assert efcn["test_accuracy_high"] - efcn["test_accuracy_low"] > 0.01
    assert row["first_mean"] == pytest.approx(efcn["test_accuracy"])


def test_overlapping_arms_leave_the_claim_undecided():
    spread = dict(zip(SEEDS, [0.02, -0.02, 0.01, -0.01, 0.0]))
    shift = {(seed, "efcn", time): spread[seed] for seed in SEEDS for time in TIMES}
    built = synthetic.experiment(accuracy={"efcn": 0.70}, noise=0.0, shift=shift)
    result = decide(built)
    rows = claim_rows(result, "4")
    assert (rows["verdict"] == UNDECIDED).all()
    assert rows["mean_difference"].to_numpy() == pytest.approx([0.0] * 5, abs=1e-12)
    assert verdicts(result)["4"] == UNDECIDED


def test_one_seed_decides_nothing():
    result = decide(synthetic.experiment(synthetic.settings(seeds=[0]), noise=0.0))
    paired = result.claims[~result.claims["claim"].isin(["1"])]
    assert (paired["claim_verdict"] == UNDECIDED).all()
    assert (paired["n"] == 1).all() and paired["ci_low"].isna().all()
    page = summary_page.markdown(summary_page.page(result, synthetic.settings(seeds=[0])))
    assert re.search(r"\| CNN \|  \| \d+\.\d % \(no interval\) \(n = 1\) \|", page)


def test_a_diverged_run_counts_against_its_arm_and_is_not_dropped():
    built = synthetic.experiment(noise=0.0, seed_spread=0.0, diverged=[(0, "efcn", 2)])
    result = decide(built)
    row = row_at(result, "4", 2)
    assert row["n"] == 5 and row["n_diverged"] == 1
    # seed 0 enters at chance: (0.1 - 0.70) and four times (0.76 - 0.70), over five seeds
    assert row["mean_difference"] == pytest.approx((-0.6 + 4 * 0.06) / 5)
    assert row["verdict"] == UNDECIDED
    assert verdicts(result)["4"] == UNDECIDED  # without the diverged run it would hold
    # the deviation of a diverged run is 1.0, the largest possible
    assert row_at(result, "3", 2)["mean_difference"] == pytest.approx(
        ((0.99 - 1.0) + 4 * (0.99 - 0.30)) / 5
    )
    efcn = arm_row(result, "efcn", 2)  # left out of the arm's mean, and counted
    assert (efcn["n"], efcn["n_diverged"]) == (4, 1)
    assert efcn["test_accuracy"] == pytest.approx(0.76)


def test_a_diverged_cnn_counts_against_the_cnn():
    built = synthetic.experiment(noise=0.0, seed_spread=0.0, diverged=[(1, "cnn", None)])
    row = claim_rows(decide(built), "2").iloc[0]
    assert row["n_diverged"] == 1
    assert row["mean_difference"] == pytest.approx(((0.1 - 0.7) + 4 * 0.1) / 5)


def test_a_missing_run_is_listed_and_counted():
    built = synthetic.experiment(noise=0.0, missing=[(3, "fcn", None)])
    result = decide(built)
    row = claim_rows(result, "2").iloc[0]
    assert (row["n"], row["n_missing"], row["missing_runs"]) == (4, 1, "fcn seed 3")
    assert (claim_rows(result, "4")["n_missing"] == 1).all()
    fcn = arm_row(result, "fcn")
    assert (fcn["n"], fcn["n_missing"]) == (4, 1)
    barrier = row_at(result, "6", 1)  # no FCN, no path to it
    assert (barrier["n"], barrier["missing_runs"]) == (4, "landscape efcn t_w=1 -> fcn seed 3")
    page = summary_page.markdown(summary_page.page(result, built.settings))
    assert "## Missing runs" in page and "- fcn seed 3" in page


def test_a_missing_embedding_record_leaves_claim_1_undecided(designed):
    embedding = designed.embedding.iloc[1:]
    result = summary.summarize(designed.settings, designed.outcomes, embedding, designed.landscape)
    efcn = claim_rows(result, "1").iloc[0]
    assert efcn["verdict"] == UNDECIDED and efcn["n_missing"] == 1
    assert efcn["missing_runs"] == "efcn t_w=0 seed 0 (embedding record)"
    assert verdicts(result)["1"] == UNDECIDED


def test_claim_1_is_decided_in_float64_relative_to_the_logit_scale():
    exact = claim_rows(decide(synthetic.experiment(exactness=2e-14)), "1")
    assert exact["exactness_fp64"].to_numpy() == pytest.approx([2e-14 / 12.5] * 2)
    assert (exact["exactness_tolerance"] == 1e-9).all()
    inexact = decide(synthetic.experiment(exactness=1e-6))  # 8e-8 of the scale
    assert verdicts(inexact)["1"] == FAILS


def test_an_embedding_of_a_diverged_checkpoint_is_counted_not_checked(designed):
    embedding = designed.embedding.copy()
    embedding.loc[0, ["max_abs_logit", "max_abs_logit_difference_fp64"]] = math.nan
    result = summary.summarize(designed.settings, designed.outcomes, embedding, designed.landscape)
    efcn = claim_rows(result, "1").iloc[0]
    assert (efcn["n"], efcn["n_diverged"], efcn["verdict"]) == (24, 1, HOLDS)


def test_multiple_comparisons_are_adjusted_over_the_claims_relax_times(designed):
    result = decide(designed)
    assert list(claim_rows(result, "2")["adjusted_confidence"]) == pytest.approx([0.95])
    assert list(claim_rows(result, "4")["adjusted_confidence"]) == pytest.approx([0.99] * 5)
    assert list(claim_rows(result, "5")["adjusted_confidence"]) == pytest.approx([1 - 0.05 / 3] * 3)
    rows = result.claims.dropna(subset=["ci_low"])
    assert (rows["adjusted_ci_low"] <= rows["ci_low"]).all()
    assert (rows["adjusted_ci_high"] >= rows["ci_high"]).all()


def control_race(relax_times):
    """eFCN level with its control; at t_w = 2 ahead by 0.5 .. 4.5 points (mean 2.5: its 95 %
    interval lies above 0, its Bonferroni interval over three t_w does not); behind elsewhere."""
    ahead = dict(zip(SEEDS, [0.005, 0.015, 0.025, 0.035, 0.045]))
    shift = {(seed, "efcn", time): -0.05 for seed in SEEDS for time in relax_times}
    shift.update({(seed, "efcn", 2): ahead[seed] for seed in SEEDS})
    resolved = synthetic.settings(**{"relax.relax_times": relax_times})
    return decide(synthetic.experiment(resolved, accuracy={"efcn": 0.81}, noise=0.0, shift=shift))


def test_some_t_w_needs_a_bonferroni_interval_above_zero():
    result = control_race([0, 1, 2, 4, 8])
    assert row_at(result, "5", 2)["verdict"] == HOLDS
    assert row_at(result, "5", 2)["adjusted_ci_low"] < 0
    assert verdicts(result)["5"] == UNDECIDED
    alone = control_race([0, 2, 8])  # t_w = 2 the only intermediate one: no adjustment
    assert claim_rows(alone, "5")["relax_time"].tolist() == [2]
    assert verdicts(alone)["5"] == HOLDS


@pytest.mark.parametrize(
    ("overrides", "untested"),
    [
        ({"relax.arms": ["efcn"]}, {"5": "CNN continued (control)", "elcn_vs_efcn": "eLCN"}),
        (
            {"relax.arms": ["cnn_continued"]},
            {"1": "embedded", "3": "eFCN", "4": "eFCN", "5": "eFCN", "elcn_vs_efcn": "eFCN"},
        ),
        ({"relax.relax_times": [0, 8]}, {"5": "no intermediate t_w"}),
        ({"landscape.relax_times": []}, {"6": "no landscape"}),
    ],
)
def test_a_claim_without_its_arms_is_not_tested(overrides, untested):
    built = synthetic.experiment(synthetic.settings(**overrides), noise=0.0)
    result = decide(built)
    found = {claim: verdict for claim, verdict in verdicts(result).items() if verdict == NOT_TESTED}
    assert set(found) == set(untested)
    for claim, reason in untested.items():
        assert reason in claim_rows(result, claim)["note"].iloc[0]
    assert verdicts(result)["2"] == HOLDS
    assert "| not tested |" in summary_page.markdown(summary_page.page(result, built.settings))


def test_claim_3_reports_the_fcns_own_deviation_and_the_pooled_numbers(designed):
    row = row_at(decide(designed), "3", 4)
    assert row["comparison"] == "fcn - efcn"
    assert row["first_mean"] == pytest.approx(0.99)  # the standard FCN's own, same measure
    assert row["second_mean"] == pytest.approx(0.30)  # the eFCN's most deviating layer
    assert row["pooled_deviation"] == pytest.approx(0.6 * 0.30)
    assert row["displacement_offsubspace"] == pytest.approx(0.70)


def test_a_landscape_barrier_holds_or_stays_undecided_never_fails():
    assert row_at(decide(synthetic.experiment(barrier=0.5)), "6", 1)["mean_difference"] == (
        pytest.approx(0.5)
    )
    flat = decide(synthetic.experiment(barrier=0.0))
    assert verdicts(flat)["6"] == UNDECIDED
    broken = decide(synthetic.experiment(barrier=0.5, diverged=[(0, "efcn", 4)]))
    row = row_at(broken, "6", 4)  # a path to a diverged run shows no barrier
    assert row["n_diverged"] == 1 and row["mean_difference"] == pytest.approx(4 * 0.5 / 5)


def test_the_headline_t_w_is_chosen_on_validation_never_on_test(designed):
    outcomes = designed.outcomes.copy()
    efcn = outcomes["arm"] == "efcn"
    outcomes.loc[efcn & (outcomes["relax_time"] == 1), "validation_accuracy"] = 0.9
    outcomes.loc[efcn & (outcomes["relax_time"] == 8), "test_accuracy"] = 0.95
    arms = decide(designed, outcomes).arms
    chosen = arms[arms["selected_on_validation"]]
    assert chosen.loc[chosen["arm"] == "efcn", "relax_time"].tolist() == [1]
    assert sorted(chosen["arm"]) == sorted(names.RELAX_ARMS)


def test_without_a_validation_split_nothing_is_selected():
    resolved = synthetic.settings(validation_size=0)
    result = decide(synthetic.experiment(resolved, noise=0.0))
    assert not result.arms["selected_on_validation"].any()
    assert result.arms["validation_accuracy"].isna().all()
    page = summary_page.markdown(summary_page.page(result, resolved))
    assert "No validation split: no headline t_w is reported" in page


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda o: o.assign(readout_epochs=3), "read out over 3 epochs"),
        (lambda o: o.assign(experiment="other"), "holds experiment 'other'"),
        (lambda o: o.assign(seed=o["seed"].replace(4, 9)), "cnn seed 9"),
    ],
)
def test_runs_that_do_not_match_the_settings_are_refused(designed, change, problem):
    with pytest.raises(NeedleError, match=problem):
        decide(designed, change(designed.outcomes))


# -- the page --------------------------------------------------------------------------------------
def test_the_page_states_every_rule_with_the_settings_values(designed):
    text = summary_page.markdown(summary_page.page(decide(designed), designed.settings))
    for statement in (
        "lr 0.05, momentum 0, weight decay 0 and batch 100",
        "CNN 8, standard FCN 8, every relax arm and the control 6 after t_w",
        "over its last 2 logged epochs after its start",
        "only the validation split (1000 images held out from the training set)",
        "The test set selects nothing",
        "two-sided 95 % Student-t intervals over seeds",
        "paired per-seed differences",
        "intersection-union",
        "Bonferroni-adjusted interval (confidence 1 - 0.05 / m",
        "accuracy is chance (0.1) and its deviation 1.0",
        "seeds 0, 1, 2, 3, 4 (n = 5)",
    ):
        assert statement in text, statement


def test_arm_cells_show_interval_n_and_diverged_runs():
    built = synthetic.experiment(noise=0.0, seed_spread=0.0, diverged=[(0, "efcn", 2)])
    text = summary_page.markdown(summary_page.page(decide(built), built.settings))
    assert "| eFCN | 2 | 76.0 [76.0, 76.0] % (n = 4, 1 diverged) |" in text
    assert "| 4 | efcn - fcn | 2 | n = 5, 1 diverged | -7.2 [" in text


def test_the_html_page_is_standalone_and_marks_verdicts(designed):
    page = summary_page.html_page(summary_page.page(decide(designed), designed.settings))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert '<td class="holds">holds</td>' in page and '<td class="fails">fails</td>' in page
    assert "src=" not in page and "href=" not in page and "http" not in page
    assert "fcn - efcn" in page and "&lt;" not in summary_page.markdown([("p", "<")])


# -- summarize.py ----------------------------------------------------------------------------------
def test_the_script_writes_all_four_outputs(tmp_path, designed):
    paths = synthetic.write_experiment(tmp_path / "in", designed)
    out = {name: tmp_path / "out" / name for name in ("s.csv", "a.csv", "s.md", "s.html")}
    summarize.main(
        [
            f"--settings={paths['settings']}",
            f"--runs={paths['runs']}",
            f"--embedding={paths['embedding']}",
            f"--landscape={paths['landscape']}",
            f"--csv={out['s.csv']}",
            f"--arms={out['a.csv']}",
            f"--markdown={out['s.md']}",
            f"--html={out['s.html']}",
        ]
    )
    claims = tables.read_claims(out["s.csv"])
    assert tuple(claims.columns) == names.SUMMARY_COLUMNS
    assert verdicts(summary.Summary(claims, None)) == verdicts(decide(designed))
    assert claims["n"].dtype == "Int64" and claims["claim"].tolist()[:2] == ["1", "1"]
    arms = tables.read_arm_summary(out["a.csv"])
    assert tuple(arms.columns) == names.ARM_SUMMARY_COLUMNS
    assert arms["selected_on_validation"].sum() == len(names.RELAX_ARMS)
    assert out["s.md"].read_text().startswith("# needle summary: synthetic")
    assert "<table>" in out["s.html"].read_text()
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_the_script_reports_a_bad_table_in_one_line(tmp_path, designed):
    paths = synthetic.write_experiment(tmp_path / "in", designed)
    designed.outcomes.drop(columns="test_accuracy").to_csv(paths["runs"], index=False)
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "summarize.py"),
            *("--settings", paths["settings"], "--runs", paths["runs"]),
            *("--embedding", paths["embedding"], "--csv", tmp_path / "s.csv"),
            *("--arms", tmp_path / "a.csv", "--markdown", tmp_path / "s.md"),
            *("--html", tmp_path / "s.html"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"needle: error: runs table {paths['runs']}: lacks column(s) test_accuracy; "
        "rerun the aggregate_metrics rule (snakemake --forcerun aggregate_metrics)\n"
    )
    assert not (tmp_path / "s.csv").exists()


def test_tables_read_back_give_the_same_verdicts(tmp_path, designed):
    paths = synthetic.write_experiment(tmp_path, designed)
    result = summary.summarize(
        tables.read_settings(paths["settings"]),
        tables.read_runs(paths["runs"]),
        tables.read_embedding(paths["embedding"]),
        tables.read_landscape(paths["landscape"]),
    )
    assert verdicts(result) == verdicts(decide(designed))


def test_a_summary_table_with_an_unknown_verdict_is_refused(tmp_path, designed):
    claims = decide(designed).claims.astype(object)
    claims.loc[3, "claim_verdict"] = "probably"
    claims.to_csv(tmp_path / "summary.csv", index=False)
    with pytest.raises(NeedleError, match="claim_verdict holds 'probably' on line 5"):
        tables.read_claims(tmp_path / "summary.csv")


def test_tables_and_summary_need_no_torch():
    code = (
        "import sys; import needle.tables, needle.summary, needle.summary_page, needle.stats; "
        "sys.exit('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, check=False)
    assert result.returncode == 0, "a table or summary stage imported torch"
