"""The README's results are written by the workflow, never by hand.

The block between the README's markers must be exactly what publish.py writes from the tables
committed under docs/results/<experiment>/; publishing a run copies its tables, redraws its
figures and rewrites the block; and a number changed by hand is caught.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import synthetic_tables as synthetic
from conftest import REPO, SCRIPTS

from needle import readme, tables

README = REPO / "README.md"


def publish_script(*args, check=False) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "publish.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(SCRIPTS)},
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_readme_results_block_is_what_the_committed_tables_give():
    result = publish_script("--check", "--readme", README)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = readme.published_folder(README.read_text(encoding="utf-8"), README)
    assert folder.is_relative_to(REPO / "docs" / "results")
    stamp = tables.read_stamp(folder / "stamp.json")
    assert stamp["command"].startswith("snakemake") and stamp["seeds"]
    for name in ("accuracy_vs_relax_time", "learning_curves", "deviation"):
        assert (folder / "figures" / f"{name}.png").is_file(), name


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A synthetic finished run, summarised and stamped, published into a scratch README."""
    root = tmp_path_factory.mktemp("publish")
    results = root / "results" / synthetic.EXPERIMENT
    synthetic.write_experiment(results, synthetic.experiment(synthetic.settings()))
    summarize = subprocess.run(
        [sys.executable, str(SCRIPTS / "summarize.py"),
         "--settings", results / "settings.json", "--runs", results / "runs.csv",
         "--embedding", results / "embedding.csv", "--landscape", results / "landscape.csv",
         "--csv", results / "summary.csv", "--arms", results / "arms.csv",
         "--markdown", results / "summary.md", "--html", results / "summary.html"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert summarize.returncode == 0, summarize.stderr
    (results / "metrics.csv").write_text(
        synthetic.experiment(synthetic.settings()).tidy.to_csv(index=False)
    )
    stamp = {
        "experiment": synthetic.EXPERIMENT, "command": "snakemake --cores 2", "commit": "abc",
        "machine": "a test machine", "versions": {"python": "3"}, "seeds": [0, 1, 2, 3, 4],
        "finished": "2026-12-02 12:00 UTC", "wall_seconds": 600.0, "jobs": 40, "job_seconds": 1100.0,
    }  # fmt: skip
    (results / "stamp.json").write_text(json.dumps(stamp))
    readme_path = root / "README.md"
    initial = readme.BEGIN.format(folder="docs/results/old") + "\nold numbers\n" + readme.END + "\n"
    readme_path.write_text("# title\n\n" + initial + "\nafter\n")
    docs = root / "docs" / "results" / synthetic.EXPERIMENT
    publish_script("--results", results, "--docs", docs, "--readme", readme_path, check=True)
    return readme_path, docs


def test_publishing_copies_the_tables_redraws_the_figures_and_rewrites_only_the_block(published):
    readme_path, docs = published
    text = readme_path.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\nafter\n")
    assert "old numbers" not in text
    assert f"results of docs/results/{synthetic.EXPERIMENT}: begin" in text
    assert "Made by `snakemake --cores 2` at commit abc on a test machine" in text
    for name in ("settings.json", "stamp.json", "runs.csv", "summary.csv", "metrics.csv.gz"):
        assert (docs / name).is_file(), name
    assert (docs / "figures" / "accuracy_vs_relax_time.png").is_file()
    # The synthetic run's designed answers: claims 2 and 4 hold, claim 5 fails.
    claims = tables.read_claims(docs / "summary.csv").drop_duplicates("claim")
    verdicts = dict(zip(claims["claim"], claims["claim_verdict"]))
    assert verdicts["2"] == verdicts["4"] == "holds" and verdicts["5"] == "fails"
    assert "| holds |" in text and "| fails |" in text
    assert publish_script("--check", "--readme", readme_path).returncode == 0


def test_a_number_changed_by_hand_in_the_block_is_caught(published):
    readme_path, docs = published
    text = readme_path.read_text()
    assert "n = 5 seeds" in text
    # the block names its folder relative to the README: keep the copy beside docs/
    tampered = readme_path.parent / "README.tampered.md"
    tampered.write_text(text.replace("n = 5 seeds", "n = 6 seeds", 1))
    result = publish_script("--check", "--readme", tampered)
    assert result.returncode == 1
    assert "differs from the tables" in result.stderr


def test_a_readme_without_exactly_one_block_is_refused(published):
    readme_path, _ = published
    text = readme_path.read_text()
    with pytest.raises(Exception, match="results blocks, expected exactly one"):
        readme.replace(text + text, "x")
