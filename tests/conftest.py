import contextlib
import faulthandler
import gc
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch

# samna must never be imported (see tests/tripwire). The tripwire goes first on the path here
# and, through PYTHONPATH, in every `python -m compare` the tests start; each import attempt
# is logged, and the session fails at the end if the log is not empty.
TRIPWIRE = Path(__file__).parent / "tripwire"
# One log for the whole session: pytest-xdist's workers inherit the controller's variable, and
# the controller (which alone decides the exit status) reads the log at the end.
if "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ["COMPARE_SAMNA_LOG"] = str(Path(tempfile.gettempdir()) / f"compare-samna-imports-{os.getpid()}.log")
    Path(os.environ["COMPARE_SAMNA_LOG"]).unlink(missing_ok=True)
else:  # two workers share the cores: in-process torch work takes one thread each
    torch.set_num_threads(1)
SAMNA_LOG = Path(os.environ["COMPARE_SAMNA_LOG"])
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRIPWIRE), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(TRIPWIRE))
sys.modules.pop("samna", None)


def pytest_collection_modifyitems(config, items):
    """The real learning runs (minutes each) first: `make test`'s two workers take one test
    module at a time in the order the modules first appear (`--dist loadscope
    --no-loadscope-reorder`), and a long module started last would leave the other worker idle.
    The learning runs sit in several small modules, so that the two workers share them; tests
    that share a module fixture (a trained run) sit in one module, which builds it once.
    (pytest-xdist's `--dist loadgroup` cannot group them instead: with pytest 9.2.0 and
    pytest-xdist 3.8.0, measured here, its group suffix does not reach the node ids, and every
    test becomes a unit of its own.)"""
    items.sort(key=lambda item: item.get_closest_marker("learning") is None)


def pytest_sessionfinish(session, exitstatus):
    if "PYTEST_XDIST_WORKER" not in os.environ and SAMNA_LOG.exists() and SAMNA_LOG.read_text().strip():
        print(f"\nsamna was imported during the tests; stacks in {SAMNA_LOG}:\n{SAMNA_LOG.read_text()}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- helpers shared by the test modules (`from conftest import ...`) ---------------------------

# Every process a test starts uses one torch thread unless it sets its own: two workers share two
# cores, and a second thread each makes them spin against each other (measured: an Atari PPO run
# took twice as long with two threads as with one beside another busy thread).
os.environ["OMP_NUM_THREADS"] = "1"


# The commands a test starts through `compare` run through the CLI's own `main` in the test's
# process: a new interpreter spends seconds importing torch, norse and rliable before it does
# anything (measured 2026-12-05: `compare table` on a store 11.5 s, ~8 s of it imports; a
# 300-step CartPole run 8.5 s). A new process stays where the process itself is under test or
# would be changed: `sweep` (its controller handles signals and starts the cells), `bench`, a
# test that changes PYTHONPATH (an installed plug-in) or the working directory, a learning run
# (`compare_run`, with its hang guard), and what tests start with subprocess themselves (killed
# runs, resource limits).
IN_PROCESS = {"table", "plot", "list", "methods", "run", "eval", "export"}
TEST_PYTHONPATH = os.environ["PYTHONPATH"]


def compare(*args, cwd=None, timeout=900, new_process=False):
    """`compare ARGS` as a user runs it: the completed process. A new `run` without `--threads`
    gets `--threads 1` (Atari's default is min(4, CPUs); see OMP_NUM_THREADS above). Commands
    in IN_PROCESS run in this process (`compare_in_this_process`), the others, and any with
    `new_process`, as `python -m compare`; `timeout` guards either against a hang."""
    args = [str(a) for a in args]
    if args[:1] == ["run"] and "--threads" not in args and "--resume" not in args:
        args += ["--threads", "1"]
    if (not new_process and args[:1] and args[0] in IN_PROCESS and cwd is None
            and os.environ.get("PYTHONPATH") == TEST_PYTHONPATH):
        return compare_in_this_process(args, timeout)
    return subprocess.run([sys.executable, "-m", "compare", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def compare_in_this_process(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """`compare ARGS` through `compare.app.cli.main` here, as `python -m compare` would give it:
    its exit code, its stdout, and on stderr its lines followed by the Python warnings it
    raised (printed once each, as a new process prints them). An exception that `main` lets
    through fails the test, as a traceback would. sys.argv is the command's while it runs (a
    run records it in config.json); torch's thread count is restored after. A command still
    running after `timeout` seconds (a hang) dumps every thread's traceback to the real stderr
    and ends the process: the worker dies and pytest reports the test as crashed."""
    from compare.app.cli import main

    stdout, stderr, threads, code = io.StringIO(), io.StringIO(), torch.get_num_threads(), 0
    with (contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr),
          warnings.catch_warnings(record=True) as caught, mock.patch.object(sys, "argv", ["compare", *args])):
        warnings.simplefilter("default")  # a new process's filters: each warning once, these not at all
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        faulthandler.dump_traceback_later(timeout, exit=True, file=sys.__stderr__)
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        finally:
            faulthandler.cancel_dump_traceback_later()
            torch.set_num_threads(threads)
            gc.collect()  # a run's replay and networks go now, not at the worker's next collection
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return subprocess.CompletedProcess(["compare", *args], code, stdout.getvalue(), stderr.getvalue() + shown)


def compare_run(tmp_path, *args):
    """A training (or conversion) run as a user starts it, in a new process, under
    tmp_path/results: its directory. The timeout only guards against a hang: several times the
    slowest run's quiet time."""
    out = tmp_path / "results"
    proc = compare("run", "--quiet", "--out", out, *args, timeout=1500, new_process=True)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = out.glob("runs/*")
    return run_dir


def assert_clean_error(proc, *fragments):
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every run file in `directory` (not the writer lock or temp files): what a
    refused or read-only command must leave unchanged."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def kill_after_first_checkpoint(cmd: list[str], out: Path) -> Path:
    """Start a training run and SIGKILL it mid-way between checkpoints: as soon as its log holds
    an episode finished after the first checkpoint it wrote (the run's own signal that it went on,
    not a sleep, which a fast machine can outrun past the last checkpoint). Its directory."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, checkpoint, went_on = time.time() + 300, None, False
        while time.time() < deadline and proc.poll() is None and not went_on:
            if checkpoint is None:
                checkpoint = next(iter(out.glob("runs/*/checkpoint.pt")), None)
                if checkpoint is not None:
                    step = torch.load(checkpoint, weights_only=True)["train_state"]["step"]
            else:
                log = checkpoint.parent / "metrics.jsonl"
                records = read_jsonl(log) if log.exists() else []
                went_on = bool(records) and records[-1]["step"] > step
            time.sleep(0.02)
        assert went_on and proc.poll() is None, "run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    return checkpoint.parent


def throwaway_install(target: Path, what: str, *requirements: str) -> Path:
    """pip-install `requirements` (without their dependencies) into the folder `target` only,
    or skip the test, saying why, when the package index cannot give them."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           *requirements], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"could not install {what} from the package index: {proc.stderr.strip()[-200:]}")
    return target


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records]


def same_tensors(a, b) -> bool:
    """Equal state dicts (or dicts of them, by role), tensor by tensor."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)


def resume_and_check(run_dir, uninterrupted=None):
    """Resume a killed run; check that it continued from its checkpoint (not from step 0) and,
    given the directory of the same run never interrupted, that it ended identical to it."""
    checkpoint_step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["train_state"]["step"]
    kept = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] <= checkpoint_step]
    res = compare("run", "--resume", run_dir, "--quiet")
    assert res.returncode == 0, res.stderr
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert steps == sorted(steps)
    assert [r["episode"] for r in records] == list(range(1, len(records) + 1))  # each episode once
    assert steps[len(kept)] > checkpoint_step > 0  # the resumed process went on from the checkpoint
    if uninterrupted is not None:
        assert without_timing(read_jsonl(run_dir / "metrics.jsonl")) == without_timing(
            read_jsonl(uninterrupted / "metrics.jsonl"))
        for name in ("eval.json", "evals.jsonl"):
            if (uninterrupted / name).exists():
                assert (run_dir / name).read_text() == (uninterrupted / name).read_text(), name
        resumed, whole = (torch.load(d / "model.pt", weights_only=True) for d in (run_dir, uninterrupted))
        assert same_tensors(resumed, whole)
    return json.loads((run_dir / "eval.json").read_text())


def kill_and_resume(args: list[str], tmp_path: Path, exact: bool) -> tuple[Path, dict]:
    """Run `compare ARGS` (a training run with frequent checkpoints), SIGKILL it after its first
    checkpoint, resume it and check the resume (`resume_and_check`); with `exact`, against the
    same run made once without interruption. Returns the run directory and its eval.json."""
    uninterrupted = None
    if exact:
        res = compare(*args, "--out", tmp_path / "whole")
        assert res.returncode == 0, res.stderr
        (uninterrupted,) = (tmp_path / "whole").glob("runs/*")
    out = tmp_path / "results"
    run_dir = kill_after_first_checkpoint([sys.executable, "-m", "compare", *args, "--out", str(out)], out)
    assert not (run_dir / "eval.json").exists()
    return run_dir, resume_and_check(run_dir, uninterrupted)
