import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_clean_error, compare, kill_and_resume, snapshot

from compare.app.cli import main

SHORT = ["--game", "CartPole-v1", "--quiet", "--set", "eval_episodes=2", "--set", "mlp_hidden=32,32"]


@pytest.mark.parametrize("args, fragments", [
    (["run", "--method", "dsqnn"], ["unknown method 'dsqnn'", "allowed: convert, dqn, dsqn"]),
    (["run", "--game", "Pongg"], ["unknown game 'Pongg'", "Pong"]),
    (["run", "--steps", "0"], ["--steps", "x>=1"]),
    (["run", "--steps", "-5"], ["--steps"]),
    (["run", "--steps", "many"], ["--steps", "'many' is not a valid integer"]),
    (["run", "--protocol", "atari200k"], ["unknown protocol", "atari100k"]),
    (["run", "--set", "lr"], ["KEY=VALUE"]),
    (["run", "--bogus"], ["No such option", "--bogus"]),
    (["run", "--resume", "/nonexistent/run"], ["does not exist"]),
    (["run", "--threads", "0"], ["--threads", "0 is not in the range"]),
    (["eval", "/nonexistent/run", "--attack", "fgsm", "--device", "cuda"], ["runs on the CPU", "--device cpu"]),
    (["run", "--threads", str((os.cpu_count() or 1) + 1)], ["--threads", f"1<=x<={os.cpu_count() or 1}"]),
])
def test_bad_input_gets_one_line_and_exit_2(args, fragments):
    assert_clean_error(compare(*args), *fragments)


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    assert_clean_error(compare("run", "--resume", tmp_path), "is not a run directory")


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_clean_error(compare("run", *SHORT, "--steps", "10", "--out", blocker / "sub"), "cannot write to")


@pytest.mark.slow
@pytest.mark.parametrize("save_replay, overlap", [("auto", "false"), ("never", "false"),  # replay restored / refilled
                                                  ("auto", "true")])  # training phases in a second thread
def test_killed_run_resumes_from_its_checkpoint(tmp_path, save_replay, overlap):
    """SIGKILL mid-training, then --resume: the run goes on from its checkpoint; with its replay
    saved it ends exactly as the same run never interrupted."""
    args = ["run", *SHORT, "--steps", "12000", "--set", "checkpoint_interval=2000", "--set", "learning_starts=500",
            "--set", "train_freq=16", "--set", "gradient_steps=4", "--set", f"save_replay={save_replay}",
            "--set", "eval_interval=5000", "--set", "periodic_eval_episodes=2", "--set", f"overlap_updates={overlap}"]
    run_dir, result = kill_and_resume(args, tmp_path, exact=save_replay == "auto")
    assert result["step"] == 12000 and len(result["episode_returns"]) == 2
    assert any((run_dir / "replay").glob("state.s*.npz")) == (save_replay == "auto")


def test_corrupt_checkpoint_is_refused_without_touching_the_run(tmp_path):
    out = tmp_path / "results"
    res = compare("run", *SHORT, "--steps", "600", "--out", out, "--set", "checkpoint_interval=300",
                  "--set", "learning_starts=100")
    assert res.returncode == 0, res.stderr
    run_dir = next(out.glob("runs/*"))
    (run_dir / "eval.json").unlink()  # pretend it was killed before finishing
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = snapshot(run_dir)
    assert_clean_error(compare("run", "--resume", run_dir), "truncated or corrupt")
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_finished_run_lists_and_re_evaluates(tmp_path):
    out = tmp_path / "results"
    res = compare("run", *SHORT, "--steps", "600", "--out", out, "--set", "learning_starts=100")
    assert res.returncode == 0, res.stderr
    assert "mean return" in res.stdout
    run_dir = next(out.glob("runs/*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 0 and config["protocol"]["name"] == "nature"
    assert config["dqn"]["lr"] == 2.3e-3 and config["versions"]["torch"]
    assert set(config["versions"]) >= {"torch", "norse", "sinabs", "gymnasium", "ale-py"}
    assert "git_commit" in config
    assert config["hardware"]["cpus"] == os.cpu_count() and isinstance(config["hardware"]["gpus"], list)
    assert "gpu_driver" in config["hardware"] and config["hardware"]["linear_kernel"].split()[0] in ("blas", "onednn")
    listing = compare("list", "--results", out)
    assert run_dir.name in listing.stdout and "finished" in listing.stdout
    before = snapshot(run_dir)
    again = compare("eval", run_dir, "--episodes", "3")
    assert again.returncode == 0, again.stderr
    assert "over 3 episodes" in again.stdout
    assert "seed stream 'reevaluation' of seed 0: not the run's own final evaluation" in again.stdout
    assert snapshot(run_dir) == before



def test_the_thread_setting_reaches_config_and_torch(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        main(["run", *SHORT, "--steps", "300", "--set", "learning_starts=100", "--threads", "1",
              "--out", str(tmp_path / "pinned")])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    (run_dir,) = (tmp_path / "pinned" / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 1
    res = compare("run", *SHORT, "--steps", "300", "--set", "learning_starts=100", "--out", tmp_path / "default")
    assert res.returncode == 0, res.stderr
    (run_dir,) = (tmp_path / "default" / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 1  # classic control's default


def test_commands_that_only_read_the_store_start_without_torch_or_rliable(tmp_path):
    """`compare table` refusing a missing store and `compare list` import neither torch nor
    rliable (on 2026-12-05 the refusal took 10 s, 8 of them these imports; 0.4 s without)."""
    (tmp_path / "store" / "runs").mkdir(parents=True)
    code = ("import sys\nfrom compare.app.cli import main\n"
            f"for args in (['table', '--results', {str(tmp_path / 'none')!r}], ['list', '--results', {str(tmp_path / 'store')!r}]):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print('loaded:', sorted(name for name in ('torch', 'rliable') if name in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "no run store at" in proc.stderr and "no runs under" in proc.stdout, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "loaded: []", proc.stdout


@pytest.mark.slow
def test_version_and_the_budget_in_both_units(tmp_path):
    from importlib.metadata import version

    res = compare("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"compare {version('compare')}"
    from compare.core.envs import resolve_env
    from compare.core.protocols import get_protocol

    # the papers' budgets: Mnih et al. 2015's 50M frames; Machado et al. 2018's longest, 200M frames
    assert resolve_env("Pong").budget(get_protocol("nature")) * 4 == 50_000_000
    assert resolve_env("Pong").budget(get_protocol("machado")) * 4 == 200_000_000
    run = compare("run", "--game", "Breakout", "--steps", "64", "--set", "learning_starts=32",
                  "--eval-episodes", "1", "--set", "max_episode_frames=400", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "64 agent steps (256 frames)" in run.stderr


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version: gcc\n",
     "535.104.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  (dvs-builder@U16)\n",
     "550.54.14"),
    ("something else\n", None),
])
def test_the_gpu_driver_version_is_read_from_the_kernel_module(monkeypatch, tmp_path, text, version):
    from compare.core import provenance

    (tmp_path / "version").write_text(text)
    monkeypatch.setattr(provenance, "NVIDIA_DRIVER_FILE", tmp_path / "version")
    assert provenance.nvidia_driver_version() == version
    monkeypatch.setattr(provenance, "NVIDIA_DRIVER_FILE", tmp_path / "absent")
    assert provenance.nvidia_driver_version() is None
