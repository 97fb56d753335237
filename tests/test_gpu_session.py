"""The prepared GPU session of issue 8 (bench/gpu_session.sh) runs every step and collects every run.

On a CPU it runs in its smoke mode (tiny data, width 4, a few epochs): this checks the plumbing that a
ten-minute device call depends on, never the speed.
"""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, script_env

pytestmark = pytest.mark.slow  # about a minute: the benchmark and six short runs


def test_gpu_session_smoke_runs_benchmark_cnn_fcn_and_every_relax_time(tmp_path, fashion_dir):
    out = tmp_path / "out"
    env = script_env(
        {"NEEDLE_SESSION": "smoke", "NEEDLE_DATA_DIR": str(fashion_dir), "PYTHON": sys.executable}
    )
    result = subprocess.run(
        ["bash", "bench/gpu_session.sh", str(out), "400"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "session.log").read_text()
    for step in (
        "bench",
        "cnn",
        "fcn",
        "efcn relaxed at 3",
        "efcn relaxed at 1",
        "efcn relaxed at 0",
    ):
        assert f"== {step}: exit 0" in log, log[-3000:]
    assert (out / "training.md").read_text().startswith("# Training benchmark")
    table = pd.read_csv(out / "preset_metrics.csv")
    assert set(table["arm"]) == {"cnn", "fcn", "efcn"}
    efcn = table[table["arm"] == "efcn"]
    assert sorted(efcn["relax_time"].astype(int).unique()) == [0, 1, 3]
    assert (efcn.groupby("relax_time")["epochs_since_relax"].max() == 2).all()
