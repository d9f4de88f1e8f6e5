"""Hostile files, concurrent writers, killed processes and bad values: each is refused with one
line and exit 2, executes nothing, and leaves the files already on disk as they were."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, compare, read_jsonl, snapshot

from compare.app.cli import main

SHORT = ["--game", "CartPole-v1", "--quiet", "--set", "eval_episodes=2", "--set", "mlp_hidden=16"]
LONG_RUN = ["run", *SHORT, "--steps", "20000", "--set", "learning_starts=500", "--set", "train_freq=16",
            "--set", "gradient_steps=4", "--set", "checkpoint_interval=2000"]


@pytest.fixture(scope="module")
def finished_dqn(tmp_path_factory):
    """A finished short CartPole DQN run with a checkpoint and a replay."""
    out = tmp_path_factory.mktemp("dqn")
    res = compare("run", *SHORT, "--steps", "600", "--out", out, "--set", "checkpoint_interval=300",
                  "--set", "learning_starts=100")
    assert res.returncode == 0, res.stderr
    (run_dir,) = out.glob("runs/*")
    assert {"checkpoint.pt", "replay", "model.pt", "eval.json"} <= {p.name for p in run_dir.iterdir()}
    return run_dir


@pytest.fixture(scope="module")
def finished_dsqn(tmp_path_factory):
    """A finished short CartPole DSQN run (NIR-exportable)."""
    out = tmp_path_factory.mktemp("dsqn")
    res = compare("run", "--method", "dsqn", *SHORT, "--steps", "300", "--out", out, "--set", "learning_starts=100",
                  "--set", "timesteps=2")
    assert res.returncode == 0, res.stderr
    (run_dir,) = out.glob("runs/*")
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path, finished: bool = True) -> Path:
    copy = tmp_path / "results" / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    if not finished:
        (copy / "eval.json").unlink()
    return copy


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class Plant:
    """Unpickling this creates a file: what a crafted checkpoint or model would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- nothing read back executes code ------------------------------------------------------------

@pytest.mark.parametrize("target", ["resume", "eval", "export", "convert", "sweep"])
def test_a_crafted_checkpoint_or_model_is_refused_and_runs_nothing(finished_dqn, tmp_path, target):
    marker = tmp_path / "pwned"
    run_dir = copy_run(finished_dqn, tmp_path, finished=target != "resume")
    name = "checkpoint.pt" if target == "resume" else "model.pt"
    torch.save({"train_state": {"step": 1}, "q": Plant(marker)}, run_dir / name)
    before = snapshot(run_dir)
    if target == "resume":
        res = compare("run", "--resume", run_dir)
    elif target == "eval":
        res = compare("eval", run_dir, "--episodes", "1")
    elif target == "export":
        res = compare("export", run_dir, "--target", "speck2f", "--out", tmp_path / "export")
    elif target == "convert":
        res = compare("run", "--method", "convert", "--source", run_dir, "--out", tmp_path / "snn", "--quiet")
    else:  # a sweep whose cell is this run: its rerun resumes the cell
        (run_dir / "eval.json").unlink()
        torch.save({"train_state": {"step": 1}, "q": Plant(marker)}, run_dir / "checkpoint.pt")
        before = snapshot(run_dir)
        res = sweep_over(run_dir)
    if target == "sweep":
        assert res.returncode == 1 and "FAILED" in res.stdout and "holds more than tensors" in res.stdout
    else:
        assert_clean_error(res, "holds more than tensors")
    assert not marker.exists()
    assert snapshot(run_dir) == before


def sweep_over(run_dir: Path) -> subprocess.CompletedProcess:
    """Rerun the one-cell sweep whose cell is `run_dir` (moved to the cell's name and back)."""
    results, args = run_dir.parent.parent, ["--games", "CartPole-v1", "--methods", "dqn", "--seeds", "0"]
    plan = compare("sweep", *args, "--results", results, "--dry-run")
    cell = results / "runs" / f"CartPole-v1__dqn__seed0__sweep-{plan.stdout.split()[1].rstrip(':')}"
    os.rename(run_dir, cell)
    try:
        return compare("sweep", *args, "--results", results)
    finally:
        os.rename(cell, run_dir)


# -- one writer per run -------------------------------------------------------------------------

def wait_for(predicate, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_second_writer_is_refused_and_the_log_stays_whole(tmp_path):
    out = tmp_path / "results"
    first = subprocess.Popen([sys.executable, "-m", "compare", *LONG_RUN, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(out.glob("runs/*/metrics.jsonl")))
        (run_dir,) = out.glob("runs/*")
        second = compare("run", "--resume", run_dir)
        assert_clean_error(second, f"is being written by process {first.pid}")
        assert first.poll() is None  # the first writer went on
    finally:
        first.kill()
        first.wait()
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert [r["episode"] for r in records] == list(range(1, len(records) + 1))


SWEEP = ["sweep", "--games", "CartPole-v1", "--methods", "dqn", "--seeds", "0", "--steps", "100000",
         "--set", "mlp_hidden=16", "--set", "eval_episodes=2", "--set", "learning_starts=500",
         "--set", "train_freq=16", "--set", "gradient_steps=4"]


def children(pid: int) -> list[int]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_sweep_rerun_reports_a_running_cell_and_a_killed_controller_takes_its_cell_along(tmp_path):
    results = tmp_path / "results"
    controller = subprocess.Popen([sys.executable, "-m", "compare", *SWEEP, "--results", str(results)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(results.glob("runs/*/metrics.jsonl")))
        (cell,) = children(controller.pid)
        rerun = compare(*SWEEP, "--results", results)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "running elsewhere" in rerun.stdout and "0 failed, 1 running elsewhere" in rerun.stdout
        os.kill(controller.pid, signal.SIGKILL)  # the controller alone, not its process group
        controller.wait()
        assert wait_for(lambda: not Path(f"/proc/{cell}").exists() or
                        Path(f"/proc/{cell}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 30)
    finally:
        if controller.poll() is None:
            controller.kill()


# -- clean errors -------------------------------------------------------------------------------

def test_list_skips_damaged_runs_and_shows_the_others(finished_dqn, tmp_path):
    good = copy_run(finished_dqn, tmp_path)
    damage = {"truncated": lambda d: truncate(d / "eval.json"),
              "a-list": lambda d: (d / "eval.json").write_text("[1, 2]"),
              "no-keys": lambda d: (d / "config.json").write_text(json.dumps({"method": "dqn"}))}
    for label, spoil in damage.items():
        broken = good.parent / f"{good.name}-{label}"
        shutil.copytree(good, broken)
        spoil(broken)
    res = compare("list", "--results", tmp_path / "results")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    lines = res.stdout.splitlines()
    assert any(line.startswith(good.name + " ") and "finished" in line for line in lines)
    for label in damage:
        assert any(line.startswith(f"{good.name}-{label}") and "skipped" in line for line in lines), label


def spoiled(run_dir: Path, tmp_path: Path, how: str) -> tuple[Path, list[str]]:
    """A copy of the run damaged `how`, and the command that must refuse it."""
    if how == "source-eval":
        copy = copy_run(run_dir, tmp_path)
        truncate(copy / "eval.json")
        return copy, ["run", "--method", "convert", "--source", copy, "--out", tmp_path / "snn", "--quiet"]
    if how == "replay":
        copy = copy_run(run_dir, tmp_path, finished=False)
        truncate(next((copy / "replay").glob("frames-*.npy")))
        return copy, ["run", "--resume", copy]
    if how == "foreign-config":
        copy = copy_run(run_dir, tmp_path)
        (copy / "config.json").write_text(json.dumps({"method": "dqn", "hello": "world"}))
        return copy, ["eval", copy]
    copy = copy_run(run_dir, tmp_path)  # a config that is JSON but no object
    (copy / "config.json").write_text("[]")
    return copy, ["eval", copy]


@pytest.mark.parametrize("how, fragment", [
    ("source-eval", "eval.json is unreadable or truncated"),
    ("replay", ".npy is truncated or corrupt"),
    ("foreign-config", "is not a compare run config"),
    ("list-config", "holds a JSON list"),
])
def test_corrupt_or_foreign_files_are_refused(finished_dqn, tmp_path, how, fragment):
    run_dir, command = spoiled(finished_dqn, tmp_path, how)
    before = snapshot(run_dir)
    assert_clean_error(compare(*command), fragment)
    assert snapshot(run_dir) == before


def test_export_of_a_conversion_with_a_truncated_eval_json(finished_dqn, tmp_path):
    res = compare("run", "--method", "convert", "--source", finished_dqn, "--timesteps", "4",
                  "--calibration-frames", "200", "--set", "eval_episodes=1", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    (run_dir,) = tmp_path.glob("runs/*convert*")
    truncate(run_dir / "eval.json")
    before = snapshot(run_dir)
    assert_clean_error(compare("export", run_dir, "--target", "nir", "--out", tmp_path / "nir"),
                       "eval.json is unreadable or truncated")
    assert snapshot(run_dir) == before and not (tmp_path / "nir").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--set", "lr=nan"], "lr='nan' must be a finite number"),
    (["--set", "lr=inf"], "lr='inf' must be a finite number"),
    (["--set", "buffer_size=1e12"], "buffer_size=1000000000000 needs"),
    (["--set", "mlp_hidden=-5"], "mlp_hidden=-5 must list positive layer widths"),
    (["--set", "mlp_hidden=0"], "mlp_hidden=0 must list positive layer widths"),
    (["--set", "epsilon_start=2"], "epsilon_start=2.0 must lie in [0, 1]"),
    (["--set", "exploration_fraction=-1"], "exploration_fraction=-1.0 must lie in (0, 1]"),
    (["--method", "dsqn", "--set", "v_th=-1"], "v_th=-1.0 must be positive"),
    (["--seed", str(2**32)], "--seed"),
    (["--name", "x" * 300], "too long; at most 200"),
    (["--name", "\U0001D538" * 70], "(280 bytes) is too long"),  # 70 characters, 4 bytes each
    # values torch would take (or reject with its own traceback): refused before anything starts
    (["--set", "optimizer_eps=-1"], "optimizer_eps=-1.0 must be positive"),
    (["--set", "max_grad_norm=-1"], "max_grad_norm=-1.0 must be positive, or 0 for no clipping"),
    (["--method", "ppo", "--set", "max_grad_norm=-0.5"], "max_grad_norm=-0.5 must be positive"),
    (["--method", "ppo", "--set", "vf_coef=-1"], "vf_coef=-1.0 must be zero or positive"),
    (["--method", "ppo", "--set", "ent_coef=-0.1"], "ent_coef=-0.1 must be zero or positive"),
    (["--method", "dsqn", "--set", "tau_mem=0.5"], "tau_mem=0.5 must be at least 1"),
    (["--method", "dsqn", "--set", "out_tau_mem=0.5"], "out_tau_mem=0.5 must be at least 1"),
    (["--method", "hybrid", "--set", "out_tau_mem=0.9"], "out_tau_mem=0.9 must be at least 1"),
    (["--method", "dsqn", "--set", "v_reset=2"], "v_reset=2.0 must lie below v_th=1.0"),
])
def test_bad_values_for_a_run(tmp_path, args, fragment):
    out = tmp_path / "results"
    assert_clean_error(compare("run", "--game", "CartPole-v1", "--steps", "100", "--quiet", "--out", out, *args),
                       fragment)
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())  # no run half-made


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "5"], "--seed: --method convert takes the game, seed, budget and protocol of its --source run"),
    (["--steps", "5"], "--steps: --method convert takes"),
    (["--protocol", "nosuch"], "--protocol: --method convert takes"),
    (["--game", "Pong"], "--game: --method convert takes"),
    (["--device", "cuda"], "--device cuda cannot be honoured"),
])
def test_a_conversion_refuses_what_it_would_ignore(finished_dqn, tmp_path, args, fragment):
    out = tmp_path / "results"
    assert_clean_error(compare("run", "--method", "convert", "--source", finished_dqn, "--quiet", "--out", out, *args),
                       fragment)
    assert not out.exists()


def test_an_out_that_is_a_dangling_symlink_is_one_line(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    assert_clean_error(compare("run", *SHORT, "--steps", "50", "--out", tmp_path / "out"),
                       "is a symbolic link to", "which does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_a_budget_that_never_reaches_learning_starts_is_said(tmp_path):
    res = compare("run", *SHORT, "--steps", "200", "--set", "learning_starts=500", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "compare: warning: learning_starts=500 is not below the budget of 200 steps" in res.stderr


def test_bad_evaluation_seed(finished_dqn):
    before = snapshot(finished_dqn)
    assert_clean_error(compare("eval", finished_dqn, "--seed", "-100000"), "--seed")
    assert snapshot(finished_dqn) == before


@pytest.mark.parametrize("args, fragment", [
    (["--attack", "fgsm", "--eps", "nan"], "must list finite numbers >= 0"),
    (["--attack", "fgsm", "--eps", "0.01,inf"], "must list finite numbers >= 0"),
    (["--eps", "0.01"], "--eps sizes an attack: add --attack fgsm"),
])
def test_bad_attack_sizes_are_refused_and_nothing_is_written(finished_dqn, capsys, args, fragment):
    before = snapshot(finished_dqn)
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(finished_dqn), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and fragment in err[0], err
    assert snapshot(finished_dqn) == before


@pytest.mark.parametrize("toml, fragment", [
    ('steps = "abc"', "steps='abc' must be an integer"),
    ('workers = "x"', "workers='x' must be an integer"),
    ("protocol = 5", "protocol=5 must be a string"),
    ('cpus_per_run = "x"', "cpus_per_run='x' must be a number"),
    ("set = 5", "set=5 must be a table"),
    ('[set]\nlr = "abc"', "lr='abc' is not a number"),
])
def test_bad_sweep_files_are_refused_before_any_cell_starts(tmp_path, toml, fragment):
    path = tmp_path / "sweep.toml"
    path.write_text(f'games = "CartPole-v1"\nmethods = "dqn"\nseeds = "0"\nresults = "{tmp_path / "r"}"\n{toml}\n')
    assert_clean_error(compare("sweep", path), fragment)
    assert not (tmp_path / "r").exists()


def test_a_directory_as_the_sweep_file(tmp_path):
    assert_clean_error(compare("sweep", tmp_path), "is a directory")


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path):
    """The file-size limit (RLIMIT_FSIZE) stands in for a full disk: the first checkpoint's
    replay does not fit."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "compare", *LONG_RUN, "--out", str(out)], capture_output=True,
                          text=True, timeout=900, preexec_fn=limit)
    assert_clean_error(proc, "File too large", "free space, then run the command again", "--resume")
    (run_dir,) = out.glob("runs/*")
    json.loads((run_dir / "config.json").read_text())
    read_jsonl(run_dir / "metrics.jsonl")  # every line whole
    assert not list(run_dir.glob(".*.tmp"))
    # with space again, the run continues from what it kept and finishes
    res = compare("run", "--resume", run_dir, "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "eval.json").read_text())["step"] == 20000


@pytest.mark.slow
def test_a_full_disk_during_a_nir_export_is_one_line_and_leaves_nothing(finished_dsqn, tmp_path):
    """h5py, under nir.write, crashed the process (exit -11) on a full disk and left its
    staging folder behind; the graph is now serialized in memory and written atomically."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    out = tmp_path / "exports" / "nir"
    proc = subprocess.run([sys.executable, "-m", "compare", "export", str(finished_dsqn), "--target", "nir",
                           "--out", str(out)], capture_output=True, text=True, timeout=900, preexec_fn=limit)
    assert_clean_error(proc, "model.nir", "File too large")
    assert list((tmp_path / "exports").iterdir()) == []  # no export, no staging folder
    res = compare("export", finished_dsqn, "--target", "nir", "--out", out)  # with space: it works
    assert res.returncode == 0, res.stderr
    assert (out / "model.nir").is_file()


def test_a_short_append_is_cut_back_and_reported(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n')
    script = (
        "import resource, signal, sys\n"
        "from compare.core.errors import UsageError\n"
        "from compare.core.runstore import append_jsonl\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (40, 40))\n"
        "try:\n"
        f"    append_jsonl({str(log)!r}, {{'step': 2, 'pad': 'x' * 60}})\n"
        "except UsageError as e:\n"
        "    print(e)\n"
        "    sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert log.read_text() == '{"step": 1}\n'  # the partial line is gone


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_run_resumes_on_the_cpu_with_one_line(finished_dqn, tmp_path):
    run_dir = copy_run(finished_dqn, tmp_path, finished=False)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "device": "cuda"}))
    res = compare("run", "--resume", run_dir)
    assert res.returncode == 0, res.stderr
    assert "no CUDA device here, continuing on the cpu" in res.stderr
    assert (run_dir / "eval.json").is_file()


# -- no dead ends -------------------------------------------------------------------------------

def test_a_run_killed_at_birth_is_started_again_by_name(tmp_path):
    out = tmp_path / "results"
    stub = out / "runs" / "mine"
    stub.mkdir(parents=True)
    (stub / ".compare-run").touch()  # the first file of every run directory
    (stub / ".config.json.abc.tmp").write_text("{")
    assert_clean_error(compare("run", "--resume", stub), "start the run again with --name mine")
    res = compare("run", *SHORT, "--steps", "300", "--set", "learning_starts=100", "--out", out, "--name", "mine")
    assert res.returncode == 0, res.stderr
    assert (stub / "eval.json").is_file() and not list(stub.glob(".*.tmp"))


def test_a_users_own_folder_named_like_a_run_is_never_taken_over(tmp_path):
    out = tmp_path / "results"
    mine = out / "runs" / "mydata"
    mine.mkdir(parents=True)
    (mine / "data.csv").write_text("a,b\n1,2\n")
    (mine / "notes.txt").write_text("my notes")
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    res = compare("run", *SHORT, "--steps", "300", "--out", out, "--name", "mydata")
    assert_clean_error(res, "was not made by compare", "choose another name")
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before  # not even a lock file added


def test_a_sweep_leaves_a_users_folder_named_like_its_cell_alone(tmp_path):
    results = tmp_path / "results"
    args = ("sweep", "--games", "CartPole-v1", "--methods", "dqn", "--seeds", "0", "--steps", "300",
            "--set", "eval_episodes=1", "--set", "learning_starts=100", "--results", results)
    dry = compare(*args, "--dry-run")
    sweep_id = dry.stdout.split()[1].rstrip(":")
    mine = results / "runs" / f"CartPole-v1__dqn__seed0__sweep-{sweep_id}"
    mine.mkdir(parents=True)
    (mine / "user.txt").write_text("keep me")
    res = compare(*args)
    assert res.returncode == 1 and "1 failed" in res.stdout and "was not made by compare" in res.stdout
    assert [p.name for p in mine.iterdir()] == ["user.txt"] and (mine / "user.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", ["resume", "fgsm"])
def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(finished_dqn, tmp_path, command):
    run_dir = copy_run(finished_dqn, tmp_path, finished=command == "fgsm")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("someone else's file\n")
    (run_dir / ".lock").unlink(missing_ok=True)
    (run_dir / ".lock").symlink_to(elsewhere)
    before = snapshot(run_dir)
    args = ("run", "--resume", run_dir) if command == "resume" else ("eval", run_dir, "--attack", "fgsm",
                                                                       "--eps", "0.01", "--episodes", "1")
    assert_clean_error(compare(*args), ".lock is a symbolic link")
    assert elsewhere.read_text() == "someone else's file\n" and snapshot(run_dir) == before


@pytest.mark.slow
def test_a_killed_named_conversion_is_replaced_by_the_same_command(finished_dqn, tmp_path):
    command = ["run", "--method", "convert", "--source", finished_dqn, "--timesteps", "4", "--calibration-frames",
               "200", "--set", "eval_episodes=1", "--out", tmp_path, "--name", "snn", "--quiet"]
    assert compare(*command).returncode == 0
    run_dir = tmp_path / "runs" / "snn"
    (run_dir / "eval.json").unlink()  # as if killed before it finished
    assert_clean_error(compare("run", "--resume", run_dir), "the same command with --name snn replaces it")
    res = compare(*command)
    assert res.returncode == 0, res.stderr
    assert (run_dir / "eval.json").is_file()
    assert_clean_error(compare(*command), "already exists")  # a finished one is never replaced


def test_leftover_temp_files_go_and_results_are_world_readable(finished_dqn, tmp_path):
    run_dir = copy_run(finished_dqn, tmp_path, finished=False)
    (run_dir / ".checkpoint.pt.x1.tmp").write_bytes(b"half")
    res = compare("run", "--resume", run_dir)
    assert res.returncode == 0, res.stderr
    assert not list(run_dir.glob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "eval.json", "model.pt", "checkpoint.pt", "metrics.jsonl"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.parametrize("damage", ["chunk shape", "head outside the ring"])
def test_a_refused_resume_leaves_the_run_as_it_was(finished_dqn, tmp_path, damage):
    run_dir = copy_run(finished_dqn, tmp_path, finished=False)
    if damage == "chunk shape":
        for chunk in (run_dir / "replay").glob("*.npy"):  # one more value per frame than the env gives
            frames = np.load(chunk)
            np.save(chunk, np.zeros((*frames.shape[:-1], frames.shape[-1] + 1), frames.dtype), allow_pickle=False)
    else:
        (state_file,) = (run_dir / "replay").glob("state.s*.npz")
        with np.load(state_file, allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
        state["head"] = state["head"] + 10**9
        with open(state_file, "wb") as f:
            np.savez(f, **state)
    before = snapshot(run_dir)
    assert_clean_error(compare("run", "--resume", run_dir), "does not fit this run", "delete that folder")
    assert snapshot(run_dir) == before


def _damage_json(name: str, key: str, value):
    def damage(run_dir: Path) -> None:
        data = json.loads((run_dir / name).read_text())
        data[key] = value
        (run_dir / name).write_text(json.dumps(data))
    return damage


@pytest.mark.slow
@pytest.mark.parametrize("damage, reason", [
    (_damage_json("config.json", "method", ["dqn"]), 'method is ["dqn"], not a str'),
    (_damage_json("config.json", "game", 3), "game is 3, not a str"),
    (_damage_json("config.json", "game", "NoSuchGame"), "config.json game: unknown game"),
    (_damage_json("config.json", "total_steps", -100), "out of range"),
    (_damage_json("eval.json", "neuro", "x"), "neuro is not an object of costs"),
    (_damage_json("eval.json", "mean_return", True), "mean_return is true, not a finite number"),
    (lambda d: (d / "eval.json").write_text((d / "eval.json").read_text().replace('"mean_return": ', '"mean_return": NaN, "was": ', 1)),
     "mean_return is NaN, not a finite number"),
    (_damage_json("eval.json", "sweep", {"timesteps": 4}), "sweep is not a list of entries"),
])
def test_a_run_with_wrongly_typed_files_is_skipped_with_its_reason(finished_dqn, tmp_path, damage, reason):
    good = copy_run(finished_dqn, tmp_path)
    bad = good.with_name("damaged")
    shutil.copytree(good, bad)
    damage(bad)
    before = snapshot(tmp_path / "results")
    for command in (("table",), ("plot", "--out", tmp_path / "plots")):
        res = compare(*command, "--results", tmp_path / "results")
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        skipped = [line for line in (res.stdout + res.stderr).splitlines() if "damaged:" in line]
        assert len(skipped) == 1 and reason in skipped[0], res.stdout + res.stderr
    if "not a str" in reason or "range" in reason:  # commands on that run refuse it
        assert_clean_error(compare("eval", bad, "--episodes", "1"), "is not a compare run config")
    assert snapshot(tmp_path / "results") == before


def test_log_lines_of_the_wrong_shape_are_skipped(finished_dqn, tmp_path):
    run_dir = copy_run(finished_dqn, tmp_path)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('3\n[1, 2]\n{"step": "a", "episode_return": 1}\n{"step": null}\n{"episode_return": 2}\n')
    with open(run_dir / "evals.jsonl", "a") as f:
        f.write('3\n[1, 2]\n{"step": "a", "mean_return": 1}\n')
    res = compare("plot", "--results", tmp_path / "results", "--out", tmp_path / "plots")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    from compare.core.runstore import read_jsonl as read_log

    records = read_log(run_dir / "metrics.jsonl")
    assert records and all(isinstance(r, dict) and isinstance(r["step"], int) for r in records)


@pytest.mark.slow
def test_a_damaged_robustness_file_is_refused_before_the_attack_and_kept(finished_dqn, tmp_path):
    run_dir = copy_run(finished_dqn, tmp_path)
    (run_dir / "robustness.json").write_text("[1, 2]")
    before = snapshot(run_dir)
    assert_clean_error(compare("eval", run_dir, "--attack", "fgsm", "--eps", "0.01", "--episodes", "1"),
                       "robustness.json is not an object of attacks")
    assert snapshot(run_dir) == before and (run_dir / "robustness.json").read_text() == "[1, 2]"
    assert compare("table", "--results", tmp_path / "results").returncode == 0


@pytest.mark.slow
def test_two_plots_into_one_folder_at_once_both_finish(finished_dqn, tmp_path):
    copy_run(finished_dqn, tmp_path)
    command = [sys.executable, "-m", "compare", "plot", "--results", str(tmp_path / "results"),
               "--out", str(tmp_path / "figures")]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any((tmp_path / "figures").glob("*.png")) and not list((tmp_path / "figures").glob(".*"))
