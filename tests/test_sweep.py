"""`compare sweep`: real small sweeps with each launcher, a killed sweep, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_clean_error, compare

from compare.app import sweep as sweep_module

CELLS = ["--games", "CartPole-v1", "--methods", "dqn,dsqn,convert", "--seeds", "0-1", "--steps", "1000",
         "--set", "eval_episodes=2", "--set", "mlp_hidden=32,32", "--set", "learning_starts=300",
         "--set", "calibration_frames=300", "--set", "timesteps=4"]


def sweep(results, *extra, timeout=900):
    return compare("sweep", *CELLS, "--results", results, *extra, timeout=timeout)


def finished_runs(results):
    return {p.name: (p / "eval.json").stat().st_mtime_ns for p in (results / "runs").iterdir()
            if (p / "eval.json").is_file()}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    results = tmp_path_factory.mktemp("local") / "results"
    res = sweep(results, "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    return results, res


@pytest.mark.slow
def test_local_sweep_runs_every_cell_and_the_table_reads_them(local_sweep):
    results, res = local_sweep
    assert "6 done, 0 skipped" in res.stdout and "[6/6]" in res.stdout
    done = [line for line in res.stdout.splitlines() if line.startswith("[") and ": done" in line]
    assert len(done) == 6 and all("(final evaluation: mean return " in line for line in done)
    runs = finished_runs(results)
    assert len(runs) == 6 and {name.split("__")[1] for name in runs} == {"dqn", "dsqn", "convert"}
    for name in runs:  # each cell is an ordinary run, as `compare run` makes it
        config = json.loads((results / "runs" / name / "config.json").read_text())
        assert config["method"] in ("dqn", "dsqn", "convert") and config["protocol"]["eval_episodes"] == 2
        assert config["threads"] == 1  # cpus_per_run (default 1) threads per cell
        if config["method"] == "convert":
            assert config["source"].endswith(name.replace("convert", "dqn"))
            assert config["convert"]["timesteps"] == [4]
        else:
            assert config["total_steps"] == 1000
    table = compare("table", "--results", results, "--format", "json")
    assert table.returncode == 0, table.stderr
    (t,) = json.loads(table.stdout)
    assert sorted(t["column_methods"].values()) == ["convert", "dqn", "dsqn"]  # one variant each
    assert all(c["seeds"] == 2 for c in t["cells"]["CartPole-v1"].values())


def test_rerunning_a_finished_sweep_redoes_nothing(local_sweep):
    results, _ = local_sweep
    before = finished_runs(results)
    res = sweep(results, "--workers", "2")
    assert res.returncode == 0 and "0 done, 6 skipped" in res.stdout, res.stdout
    assert res.stdout.count("finished earlier, skipped (final evaluation: mean return ") == 6
    assert finished_runs(results) == before


@pytest.mark.slow
def test_killed_sweep_completes_the_missing_cells_only(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "compare", "sweep", *CELLS, "--results", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (results / "runs").is_dir():
            time.sleep(0.2)
        while time.time() < deadline and proc.poll() is None and not finished_runs(results):
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the cell it is running
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before = finished_runs(results)
    assert 1 <= len(done_before) < 6
    res = sweep(results)
    assert res.returncode == 0, res.stdout + res.stderr
    after = finished_runs(results)
    assert len(after) == 6
    assert {k: after[k] for k in done_before} == done_before  # finished cells were not redone
    assert f"{len(done_before)} skipped" in res.stdout


@pytest.mark.slow
def test_ray_launcher_makes_the_same_runs(local_sweep, tmp_path):
    pytest.importorskip("ray")
    results = tmp_path / "results"
    res = sweep(results, "--launcher", "ray", "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(finished_runs(results)) == set(finished_runs(local_sweep[0]))
    assert compare("table", "--results", results).returncode == 0


@pytest.mark.slow
def test_slurm_launcher_with_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit")
    results = tmp_path / "results"
    res = compare("sweep", "--games", "CartPole-v1", "--methods", "dqn", "--seeds", "0-1", "--steps", "600",
                  "--set", "eval_episodes=1", "--set", "learning_starts=200", "--results", results,
                  "--launcher", "slurm", "--slurm-cluster", "local", "--workers", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 done" in res.stdout and len(finished_runs(results)) == 2


@pytest.mark.slow
def test_sweep_file_and_dry_run(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('games = ["CartPole-v1", "Pong"]\nmethods = "dqn,convert"\nseeds = "0-2"\n'
                    'steps = 5000\n[set]\neval_episodes = 2\n')
    res = compare("sweep", path, "--results", tmp_path / "results", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 12
    assert all("convert" not in line for line in lines[:6])  # training first, then conversions
    assert "after: Pong dqn seed 2" in lines[-1] and "total: 30,000 agent steps" in res.stdout
    assert not (tmp_path / "results").exists()  # a dry run runs nothing


STUDIES = Path(__file__).resolve().parents[1] / "studies"
MINATAR_STUDY_STEPS = 30_000


@pytest.mark.slow
@pytest.mark.parametrize("name, cells, derived, steps", [("minatar.toml", 36, 12, 24 * MINATAR_STUDY_STEPS),
                                                         ("minatar-full.toml", 150, 50, 100 * 5_000_000),
                                                         ("atari-chen2022.toml", 306, 102, 204 * 12_500_000)])
def test_committed_studies_plan_their_cells_on_the_family_defaults(tmp_path, name, cells, derived, steps):
    """The study commands of docs/minatar.md: every cell resolves, each method on its learner's family
    preset (one learner per study), conversions after their DQN; a dry run writes nothing."""
    res = compare("sweep", STUDIES / name, "--results", tmp_path / "results", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == cells and all("[new]" in line for line in lines)
    assert all((" convert " in line or " quantize " in line) and "after:" in line for line in lines[-derived:])
    assert not any(" convert " in line or " quantize " in line for line in lines[:-derived])
    assert f"total: {steps:,} agent steps" in res.stdout
    family, dqn_preset = ("minatar", "minatar") if "minatar" in name else ("atari", "chen2022")
    assert (f"presets ({family}): dqn {dqn_preset}, dsqn {dqn_preset}, convert default, quantize default, "
            "ppo atari, hybrid atari") in res.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, fragments", [
    (["--games", "Pongg", "--methods", "dqn", "--seeds", "0"], ["unknown game 'Pongg'"]),
    (["--games", "Pong", "--methods", "dqnn", "--seeds", "0"], ["unknown method 'dqnn'"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "4-2"], ["not a seed range"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "0", "--launcher", "k8s"], ["unknown launcher 'k8s'"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "0", "--set", "lrr=1"], ["--set lrr"]),
    (["--games", "Pong"], ["needs --games, --methods and --seeds"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "0-99999999999"], ["at most 10,000 seeds"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "0", "--cpus-per-run", "inf"], ["cpus_per_run=inf must be a number"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "0", "--launcher", "slurm", "--gpus-per-run", "0.5"],
     ["gpus_per_run=0.5", "whole GPUs"]),
    (["--games", "CartPole-v1,CartPole-v1", "--methods", "dqn", "--seeds", "0"], ["game CartPole-v1 more than once"]),
    (["--games", "Pong,ALE/Pong-v5", "--methods", "dqn", "--seeds", "0"], ["game Pong more than once"]),
    (["--games", "Pong", "--methods", "dqn,dqn", "--seeds", "0"], ["method dqn more than once"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "0", "--device", "gpu"], ["'gpu' is not one of"]),
    (["--games", "Pong", "--methods", "dqn", "--seeds", "0", "--launcher", "slurm", "--slurm-time", "0"],
     ["slurm_time_min=0 must be at least 1"]),
])
def test_bad_sweep_input(tmp_path, args, fragments):
    assert_clean_error(compare("sweep", *args, "--results", tmp_path / "r"), *fragments)
    assert not (tmp_path / "r").exists()


def test_sweep_file_with_an_unknown_key(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('games = "Pong"\nmethods = "dqn"\nseeds = "0"\nworkerz = 4\n')
    assert_clean_error(compare("sweep", path), "unknown key 'workerz'", "workers")


def test_a_bad_setting_is_refused_before_any_cell_starts(tmp_path):
    res = compare("sweep", "--games", "CartPole-v1", "--methods", "dsqn", "--seeds", "0", "--steps", "100",
                  "--set", "timesteps=0", "--results", tmp_path / "r")
    assert_clean_error(res, "timesteps=0 must be a positive integer")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_failing_cell_is_reported_with_its_error_line(tmp_path):
    # Valid as a setting, refused by the cell itself: the replay does not fit in memory.
    res = compare("sweep", "--games", "CartPole-v1", "--methods", "dsqn", "--seeds", "0", "--steps", "100",
                  "--set", "buffer_size=1e12", "--results", tmp_path / "r")
    assert res.returncode == 1
    assert "0 done, 0 skipped (finished earlier), 1 failed" in res.stdout
    assert "failed: CartPole-v1 dsqn seed 0: compare: error: buffer_size=1000000000000 needs" in res.stdout


def test_a_launcher_without_its_extra_says_what_to_install(monkeypatch):
    import importlib.util

    from compare.app.sweep import check_launcher
    from compare.core.errors import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(UsageError, match=r"needs ray; install it with: pip install -e '\.\[ray\]'"):
        check_launcher("ray")
    check_launcher("local")


def test_a_cell_runs_with_cpus_per_run_threads(monkeypatch):
    spec = sweep_module.make_spec("CartPole-v1", "dqn", "0", cpus_per_run=3, launcher="ray")
    args = sweep_module.cell_command(spec, spec.cells()[0])
    assert args[args.index("--threads") + 1] == "3"
    seen = {}

    def fake_run(command, env, **kwargs):  # the child process itself is tested above
        seen.update(env)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(sweep_module.subprocess, "run", fake_run)
    assert sweep_module.run_cell(args, spec.threads) == (0, "")
    assert all(seen[name] == "3" for name in sweep_module.THREAD_VARIABLES)


def test_a_tracked_sweep_groups_its_cells_in_wandb():
    spec = sweep_module.make_spec("CartPole-v1", "dqn", "0", track="wandb")
    args = sweep_module.cell_command(spec, spec.cells()[0])
    assert args[args.index("--track") + 1] == "wandb"
    assert args[args.index("--wandb-group") + 1] == f"sweep-{spec.sweep_id}"
    assert "--track" not in sweep_module.cell_command(sweep_module.make_spec("CartPole-v1", "dqn", "0"),
                                                      spec.cells()[0])


def test_the_reproduction_study_plans_the_papers_setup(tmp_path):
    """studies/minatar-youngtian2019.toml: DQN on both published games, 3 seeds, 500k steps,
    under Young & Tian's protocol and preset."""
    res = compare("sweep", STUDIES / "minatar-youngtian2019.toml", "--results", tmp_path / "results", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 6 and all(" dqn seed " in line for line in lines)
    assert "total: 3,000,000 agent steps" in res.stdout and "presets (minatar): dqn youngtian2019" in res.stdout


def test_the_command_lines_settings_merge_with_the_files_key_by_key(tmp_path):
    from compare.app.sweep import cell_overrides, from_toml

    path = tmp_path / "sweep.toml"
    path.write_text('games = "CartPole-v1"\nmethods = "dqn"\nseeds = "0"\n'
                    '[set]\nlearning_starts = 200\neval_episodes = 2\nlr = 0.01\n')
    spec = from_toml(path, overrides=("lr=0.001", "gamma=0.9"))
    assert cell_overrides(spec, "dqn") == {"learning_starts": "200", "eval_episodes": "2", "lr": "0.001",
                                           "gamma": "0.9"}
    assert cell_overrides(from_toml(path), "dqn")["lr"] == "0.01"


def test_local_cells_run_each_on_a_gpu_of_its_own(monkeypatch):
    """Two workers on a machine with two GPUs: each cell sees one GPU (CUDA_VISIBLE_DEVICES),
    the two at once never the same; more workers than GPUs share them round robin."""
    assert sweep_module.gpu_slots(3, ["0", "1"]) == ["0", "1", "0"]
    assert sweep_module.gpu_slots(2, []) == [None, None]  # no GPU: the environment is left alone
    monkeypatch.setattr(sweep_module, "visible_gpus", lambda: ["2", "5"])
    running, seen = set(), []

    def fake_cell(args, threads, gpu):
        assert gpu not in running
        running.add(gpu)
        time.sleep(0.2)
        running.discard(gpu)
        seen.append(gpu)
        return 0, ""

    monkeypatch.setattr(sweep_module, "run_cell", fake_cell)
    spec = sweep_module.make_spec("CartPole-v1", "dqn", "0-3", workers=2)
    sweep_module._launch(spec, [["run"]] * 4, lambda i, result: None)
    assert sorted(seen) == ["2", "2", "5", "5"]


def test_a_cell_given_a_gpu_sees_only_it(monkeypatch):
    seen = {}

    def fake_run(command, env, **kwargs):
        seen.update(env)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(sweep_module.subprocess, "run", fake_run)
    assert sweep_module.run_cell(["run"], 1, "3") == (0, "")
    assert seen["CUDA_VISIBLE_DEVICES"] == "3"


@pytest.mark.slow
def test_the_committed_studys_dry_run_says_nothing_is_left_to_run_in_a_checkout():
    """Its cells are committed and count as finished: the dry run says so instead of a bare total."""
    res = compare("sweep", STUDIES / "minatar.toml", "--dry-run", cwd=STUDIES.parent)
    assert res.returncode == 0, res.stderr
    assert ("still to run: 0 (36 of 36 cells finished, 0 interrupted; finished cells are skipped: to make them "
            "again, give an empty --results)") in res.stdout


def test_a_sweep_on_cuda_gives_every_training_cell_the_device_and_refuses_a_machine_without_one(monkeypatch, tmp_path):
    """device=cuda reaches every training cell's command (a derived cell runs where its method
    does); with no GPU for the local launcher the sweep stops before any cell starts, instead of
    letting `auto` cells run on the CPU."""
    spec = sweep_module.make_spec("CartPole-v1", "dqn,convert", "0", device="cuda", results=str(tmp_path / "r"))
    commands = {cell.method: sweep_module.cell_command(spec, cell) for cell in spec.cells()}
    assert commands["dqn"][commands["dqn"].index("--device") + 1] == "cuda"
    assert "--device" not in commands["convert"]
    auto = sweep_module.make_spec("CartPole-v1", "dqn", "0")
    assert sweep_module.cell_command(auto, auto.cells()[0])[-2:] == ["--device", "auto"]
    assert spec.sweep_id == sweep_module.make_spec("CartPole-v1", "dqn,convert", "0").sweep_id  # how, not what
    monkeypatch.setattr(sweep_module, "visible_gpus", lambda: [])
    with pytest.raises(sweep_module.UsageError, match="device=cuda: this machine has no CUDA device"):
        sweep_module.run_sweep(spec, print)
    assert not (tmp_path / "r").exists()
    with pytest.raises(sweep_module.UsageError, match="device='gpu': allowed: auto, cpu, cuda"):
        sweep_module.make_spec("CartPole-v1", "dqn", "0", device="gpu")


def test_slurm_jobs_get_whole_gpus_and_the_time_limit_asked_for(monkeypatch):
    """submitit's parameters as the sweep sets them: the GPUs per job and --slurm-time."""
    seen = {}

    class Job:
        def result(self):
            return 0, ""

    class Executor:
        def __init__(self, folder, cluster):
            seen["cluster"] = cluster

        def update_parameters(self, **parameters):
            seen.update(parameters)

        def map_array(self, fn, commands, threads):
            return [Job() for _ in commands]

    monkeypatch.setitem(sys.modules, "submitit", type(sys)("submitit"))
    sys.modules["submitit"].AutoExecutor = Executor
    spec = sweep_module.make_spec("CartPole-v1", "dqn", "0-1", launcher="slurm", gpus_per_run=2, slurm_time_min=90)
    done = []
    sweep_module._launch(spec, [["run"]] * 2, lambda i, result: done.append(result))
    assert (seen["gpus_per_node"], seen["timeout_min"], done) == (2, 90, [(0, ""), (0, "")])
    default = sweep_module.make_spec("CartPole-v1", "dqn", "0", launcher="slurm")
    sweep_module._launch(default, [["run"]], lambda i, result: None)
    assert seen["timeout_min"] == 24 * 60
