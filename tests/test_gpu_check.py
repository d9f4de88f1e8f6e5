"""The prepared GPU check (benchmarks/gpu_check.py), run here as its CPU dry run: the whole
script, tiny runs, every check answered."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_through_on_a_cpu(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)  # ~90 s here; a hang guard
    assert proc.returncode == 0, proc.stderr
    rows = dict(json.loads((out / "gpu_check.json").read_text())["rows"])
    assert [name.split(",")[0] for name in rows][:3] == ["training steps/s"] * 3
    assert all(float(value.replace(",", "")) > 0 for name, value in rows.items() if name.startswith("training"))
    assert [value for name, value in rows.items() if not name.startswith("training")] == ["yes", "yes"]
    assert "| one seed twice: identical weights, logs and episodes | yes |" in proc.stdout


def test_the_gpu_check_refuses_an_existing_out(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "exists; give a new folder" in proc.stderr and "Traceback" not in proc.stderr
