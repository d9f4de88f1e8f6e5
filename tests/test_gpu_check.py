"""The prepared GPU check (benchmarks/gpu_check.py), run here as its CPU dry run: the whole
script, tiny runs, every check answered."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compare import gpu_check as gpu_check_module
from compare.app.cli import main

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


def bench(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", *args])
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_on_cuda_without_a_gpu_is_refused_in_one_line(capsys):
    code, err = bench(capsys, "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "no CUDA device is visible here" in err


def test_bench_honours_cuda_with_the_gpu_check_or_refuses_what_it_would_ignore(capsys, monkeypatch, tmp_path):
    """Up to the GPU: with a CUDA device, `compare bench --device cuda` is the GPU check into
    --out; the CPU measurements' sizes are refused there, and --out without cuda."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    calls = []
    monkeypatch.setattr(gpu_check_module, "gpu_check", lambda device, out, echo: calls.append((device, out)) or True)
    main(["bench", "--device", "cuda", "--out", str(tmp_path / "check")])
    assert calls == [("cuda", tmp_path / "check")]
    code, err = bench(capsys, "--device", "cuda", "--rounds", "2")
    assert code == 2 and "--rounds: the GPU check's runs have fixed sizes" in err
    code, err = bench(capsys, "--out", str(tmp_path / "elsewhere"))
    assert code == 2 and "--out is the GPU check's (--device cuda)" in err
    monkeypatch.setattr(gpu_check_module, "gpu_check", lambda device, out, echo: False)  # a check failed
    code, _ = bench(capsys, "--device", "cuda")
    assert code == 1 and len(calls) == 1
