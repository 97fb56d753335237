"""The prepared GPU session (bench/gpu_session.sh) runs every step and collects every run.

On a CPU it runs in its smoke mode (tiny data, width 4, a few epochs): this checks the plumbing that
a ten-minute device call depends on, never the speed.
"""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, script_env

pytestmark = pytest.mark.slow  # the benchmark and a dozen short stage runs


def test_gpu_session_smoke_runs_the_benchmark_and_every_stage_at_every_relax_time(
    tmp_path, fashion_dir
):
    out = tmp_path / "out"
    env = script_env(
        {"NEEDLE_SESSION": "smoke", "NEEDLE_DATA_DIR": str(fashion_dir), "PYTHON": sys.executable}
    )
    # A budget no loaded machine exhausts: this checks the steps, not how many fit in the time.
    result = subprocess.run(
        ["bash", "bench/gpu_session.sh", str(out), "3000"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "session.log").read_text()
    steps = ["bench", "cnn", "fcn"] + [
        f"{step} {time}"
        for time in (3, 1, 0)
        for step in ("embed efcn at", "efcn relaxed at", "cnn_continued from")
    ]
    for step in steps:
        assert f"== {step}: exit 0" in log, log[-3000:]
    assert (out / "training.md").read_text().startswith("# Training benchmark")
    table = pd.read_csv(out / "preset_metrics.csv")
    assert set(table["arm"]) == {"cnn", "fcn", "efcn", "cnn_continued"}
    for arm in ("efcn", "cnn_continued"):
        runs = table[table["arm"] == arm]
        assert sorted(runs["relax_time"].astype(int).unique()) == [0, 1, 3]
        assert (runs.groupby("relax_time")["epochs_since_relax"].max() == 2).all()
        assert (runs["diverged"] == 0).all()
    embedding = pd.read_csv(out / "embedding.csv")
    assert sorted(embedding["relax_time"]) == [0, 1, 3]
    assert (embedding["max_abs_logit_difference_fp64"] < 1e-9).all()
