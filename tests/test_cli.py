import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SHORT = ["--game", "CartPole-v1", "--quiet", "--set", "eval_episodes=2", "--set", "mlp_hidden=32,32"]


def compare(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "compare", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def assert_clean_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("args, fragments", [
    (["run", "--method", "dsqnn"], ["unknown method 'dsqnn'", "allowed: dqn"]),
    (["run", "--game", "Pongg"], ["unknown game 'Pongg'", "Pong"]),
    (["run", "--steps", "0"], ["--steps", "x>=1"]),
    (["run", "--steps", "-5"], ["--steps"]),
    (["run", "--steps", "many"], ["--steps", "'many' is not a valid integer"]),
    (["run", "--protocol", "atari200k"], ["unknown protocol", "atari100k"]),
    (["run", "--set", "lr"], ["KEY=VALUE"]),
    (["run", "--bogus"], ["No such option", "--bogus"]),
    (["run", "--resume", "/nonexistent/run"], ["does not exist"]),
])
def test_bad_input_gets_one_line_and_exit_2(args, fragments):
    assert_clean_error(compare(*args), *fragments)


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    assert_clean_error(compare("run", "--resume", tmp_path), "is not a run directory")


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_clean_error(compare("run", *SHORT, "--steps", "10", "--out", blocker / "sub"), "cannot write to")


def kill_after_first_checkpoint(cmd: list[str], out: Path) -> Path:
    """Start a training run, SIGKILL it a second after its first checkpoint; its directory."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, checkpoint = time.time() + 300, None
        while time.time() < deadline and proc.poll() is None and checkpoint is None:
            checkpoint = next(iter(out.glob("runs/*/checkpoint.pt")), None)
            time.sleep(0.2)
        assert checkpoint is not None and proc.poll() is None, "run ended before it could be killed"
        time.sleep(1.0)  # past the first checkpoint, then killed mid-way
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    return checkpoint.parent


@pytest.mark.parametrize("save_replay", ["auto", "never"])  # replay restored / refilled
def test_killed_run_resumes_from_its_checkpoint(tmp_path, save_replay):
    """SIGKILL mid-training, then --resume: the run finishes at the requested step count."""
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "compare", "run", *SHORT, "--steps", "20000", "--out", str(out),
           "--set", "checkpoint_interval=2000", "--set", "learning_starts=500",
           "--set", "train_freq=16", "--set", "gradient_steps=4", "--set", f"save_replay={save_replay}"]
    run_dir = kill_after_first_checkpoint(cmd, out)
    assert not (run_dir / "eval.json").exists()
    for name in ("config.json",):
        json.loads((run_dir / name).read_text())
    res = compare("run", "--resume", run_dir, "--quiet")
    assert res.returncode == 0, res.stderr
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["step"] == 20000 and len(result["episode_returns"]) == 2
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # no duplicated records
    assert steps[-1] > 18_000
    assert (run_dir / "replay.npz").exists() == (save_replay == "auto")


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
    listing = compare("list", "--results", out)
    assert run_dir.name in listing.stdout and "finished" in listing.stdout
    before = snapshot(run_dir)
    again = compare("eval", run_dir, "--episodes", "3")
    assert again.returncode == 0, again.stderr
    assert "over 3 episodes" in again.stdout
    assert snapshot(run_dir) == before
