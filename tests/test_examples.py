"""The scripts under examples/ run as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # four short runs in a subprocess

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_cartpole_in_five_minutes_prints_its_comparison(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "cartpole_in_five_minutes.py"), "--steps", "1200",
                           "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "energy_uj_memory" in lines[0] and "crossover_rate" in lines[0]
    columns = [line.split()[0] for line in lines[1:]]
    assert sorted(columns) == ["convert", "dqn", "dsqn", "quantize"], proc.stdout
    assert sorted(p.name.split("__")[1] for p in (tmp_path / "results" / "runs").iterdir()) == \
        ["convert", "dqn", "dsqn", "quantize"]
