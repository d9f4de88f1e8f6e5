"""The GPU check, prepared for a machine with one GPU (docs/performance.md, "The GPU check").

    compare bench --device cuda [--out gpu-check]
    python benchmarks/gpu_check.py --device cuda --out gpu-check   (the same, as a script)

Through `compare run`, as a user runs it: training steps/s of dqn, dsqn (T = 8) and ppo on
Breakout under their default presets, measured after the replay start (the learner's own
`steps_per_s` over its latest 2,000 agent steps); one short dqn run made twice with one seed
(identical weights, logs and episodes?); the same run killed after its first checkpoint and
resumed (identical to the uninterrupted one?). Prints one table and writes it, with the
machine, to OUT/gpu_check.json. Exit code 1 when a check fails. Not yet run on a GPU: its
runs are sized to take minutes there, which is untested.

`--tiny` shrinks every run so that the test suite can run the whole script on a CPU
(`--device cpu --tiny`): then the speeds measure nothing, the checks still check.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from compare.core.errors import UsageError

# agent steps: before updates (replay start), of the speed measurement, of the checks' runs
# (and, for the dry run only, a smaller batch)
SIZES = {"full": {"learning_starts": 5_000, "measured": 8_000, "ppo": 16_384, "check": 6_000, "buffer": 100_000,
                  "extra": []},
         "tiny": {"learning_starts": 200, "measured": 200, "ppo": 1_024, "check": 900, "buffer": 2_000,
                  "extra": ["--set", "batch_size=8"]}}
SHORT_EVALUATION = ["--set", "eval_episodes=1", "--set", "max_episode_frames=2000"]
RATE_WINDOW = 2_000  # agent steps the learner's logged steps_per_s covers


def compare_run(args: list[str], out: Path, device: str, threads: int | None, timeout: float = 1800) -> Path:
    """`python -m compare run ARGS` into `out`; the run's directory (exits on failure)."""
    cmd = [sys.executable, "-m", "compare", "run", *args, "--device", device, "--quiet", "--out", str(out),
           *(["--threads", str(threads)] if threads else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"gpu_check: `{' '.join(cmd)}` failed: {proc.stderr.strip().splitlines()[-1:]}")
    (run_dir,) = out.glob("runs/*")
    return run_dir


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def logged_rate(run_dir: Path) -> float:
    """The learner's steps/s over its last logged window (its latest 2,000 agent steps)."""
    logged = records(run_dir / "metrics.jsonl")
    return float(logged[-1]["steps_per_s"]) if logged else float("nan")


def same_run(a: Path, b: Path) -> bool:
    """Identical weights, evaluation and logs (timing aside)."""
    def untimed(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records(run_dir / "metrics.jsonl")]

    weights = [torch.load(d / "model.pt", weights_only=True) for d in (a, b)]
    return (weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
            and (a / "eval.json").read_text() == (b / "eval.json").read_text() and untimed(a) == untimed(b))


def killed_and_resumed(args: list[str], out: Path, device: str, threads: int | None) -> Path:
    """The run of `args`, SIGKILLed once its first checkpoint is on disk, then resumed."""
    cmd = [sys.executable, "-m", "compare", "run", *args, "--device", device, "--quiet", "--out", str(out),
           *(["--threads", str(threads)] if threads else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 1800  # a hang guard: the runs take seconds to minutes
        while proc.poll() is None and time.monotonic() < deadline and not any(out.glob("runs/*/checkpoint.pt")):
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    (run_dir,) = out.glob("runs/*")
    if (run_dir / "eval.json").exists():
        sys.exit("gpu_check: the run ended before it could be killed; give it more steps")
    resume = subprocess.run([sys.executable, "-m", "compare", "run", "--resume", str(run_dir), "--quiet"],
                            capture_output=True, text=True, timeout=1800)
    if resume.returncode != 0:
        sys.exit(f"gpu_check: the resume failed: {resume.stderr.strip().splitlines()[-1:]}")
    return run_dir


def machine(device: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": device}
    if torch.cuda.is_available():
        info.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                     "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]})
    return info


def gpu_check(device: str, out: Path, threads: int | None = None, tiny: bool = False,
              echo: Callable[[str], None] = print) -> bool:
    """Run the check into `out` (a folder to create), print its table; whether both checks hold."""
    if out.exists():
        raise UsageError(f"--out {out} exists; give a new folder")
    size = SIZES["tiny" if tiny else "full"]

    def run(args: list[str], name: str) -> Path:
        return compare_run(args, out / name, device, threads)

    # Breakout under each method's default preset; only the replay and the evaluation are shortened.
    dqn_steps = size["learning_starts"] + max(size["measured"], 0 if tiny else RATE_WINDOW)
    q_args = ["--game", "Breakout", "--steps", str(dqn_steps), "--set", f"learning_starts={size['learning_starts']}",
              "--set", f"buffer_size={size['buffer']}", *size["extra"], *SHORT_EVALUATION]
    rates = {"dqn (chen2022: batch 128 every 4 steps)": logged_rate(run(["--method", "dqn", *q_args], "dqn")),
             "dsqn, T = 8 (chen2022)": logged_rate(run(["--method", "dsqn", "--timesteps", "8", *q_args], "dsqn")),
             "ppo (atari: 8 envs x 128 steps)": logged_rate(run(["--method", "ppo", "--game", "Breakout", "--steps",
                                                                 str(size["ppo"]), *SHORT_EVALUATION], "ppo"))}

    check_args = ["--method", "dqn", "--game", "Breakout", "--steps", str(size["check"]),
                  "--set", f"learning_starts={size['check'] // 6}", "--set", f"buffer_size={size['buffer']}",
                  "--set", f"checkpoint_interval={size['check'] // 5}", *size["extra"], *SHORT_EVALUATION]
    first, second = run(check_args, "same-seed-a"), run(check_args, "same-seed-b")
    deterministic = same_run(first, second)
    resumed = killed_and_resumed(check_args, out / "killed-and-resumed", device, threads)
    exact_resume = same_run(first, resumed)

    rows = [*((f"training steps/s, {name}", f"{rate:,.1f}") for name, rate in rates.items()),
            ("one seed twice: identical weights, logs and episodes", "yes" if deterministic else "NO"),
            ("killed after its first checkpoint, resumed: identical to the uninterrupted run",
             "yes" if exact_resume else "NO")]
    info = machine(device)
    echo(f"GPU check ({'tiny dry run: the speeds measure nothing' if tiny else 'Breakout'}), "
         + ", ".join(f"{k} {v}" for k, v in info.items()))
    echo("\n| check | result |\n| --- | --- |\n" + "\n".join(f"| {name} | {value} |" for name, value in rows))
    (out / "gpu_check.json").write_text(json.dumps({"machine": info, "tiny": tiny, "rows": rows}, indent=1))
    return deterministic and exact_resume


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", type=Path, required=True, help="a folder to create (must not exist)")
    parser.add_argument("--threads", type=int, help="torch threads per run [default: compare run's]")
    parser.add_argument("--tiny", action="store_true", help="tiny runs: a dry run of the script, no measurement")
    options = parser.parse_args(argv)
    try:
        return 0 if gpu_check(options.device, options.out, options.threads, options.tiny) else 1
    except UsageError as e:
        parser.error(str(e))
