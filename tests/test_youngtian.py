"""Young & Tian 2019's MinAtar DQN setup (`--protocol youngtian2019 --preset youngtian2019`) and
their statistic, the moving average of 100 training-episode returns."""

import json

import pytest
import torch
from conftest import assert_clean_error, compare
from test_reporting import write_run

from compare.app import api
from compare.app.table import build_tables, read_runs
from compare.core.dqn import DQNLearner
from compare.core.scores import published_minatar_curves, training_return_average

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)

# kenjyoung/MinAtar examples/dqn.py (after PR #37), the constants it uses.
PAPER = {"batch_size": 32, "buffer_size": 100_000, "target_update_period": 1_000, "train_freq": 1,
         "learning_starts": 5_000, "epsilon_end": 0.1, "epsilon_decay_steps": 100_000, "lr": 2.5e-4,
         "optimizer": "rmsprop", "optimizer_eps": 0.01, "optimizer_momentum": 0.0, "gamma": 0.99, "loss": "huber",
         "epsilon_from_learning_starts": True}


def test_the_papers_setup_is_recorded_in_config_json(tmp_path):
    res = compare("run", "--method", "dqn", "--game", "MinAtar/Breakout", "--protocol", "youngtian2019",
                  "--preset", "youngtian2019", "--steps", "200", "--eval-episodes", "1", "--quiet", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert {k: config["dqn"][k] for k in PAPER} == PAPER
    assert config["protocol"]["sticky_action_prob"] == 0.1 and config["protocol"]["full_action_space"] is True
    weights = torch.load(run / "model.pt", weights_only=True)
    output = [v for k, v in weights.items() if k.endswith("weight")][-1]
    assert output.shape[0] == 6  # the full action set: one Q-value per MinAtar action (Breakout's minimal: 3)


def test_epsilon_decays_after_the_replay_start_as_their_script_computes_it():
    cfg = DQNLearner.preset("youngtian2019")

    def theirs(t):  # world_dynamics: uniform random before the replay start, then the linear anneal
        return 1.0 if t < 5000 else (0.1 if t - 5000 >= 100_000 else (0.1 - 1.0) / 100_000 * (t - 5000) + 1.0)

    for t in (0, 4_999, 5_000, 30_000, 55_000, 104_999, 105_000, 400_000):
        assert cfg.epsilon(t, 5_000_000) == pytest.approx(theirs(t)), t
    assert DQNLearner.preset("minatar").epsilon(5_000, 5_000_000) < 1.0  # this project's preset: from step 0


def test_the_papers_protocol_refuses_other_families():
    for game in ("CartPole-v1", "Breakout"):
        assert_clean_error(compare("run", "--game", game, "--protocol", "youngtian2019", "--steps", "10"),
                           "--protocol youngtian2019 is for minatar games")


def test_the_moving_average_of_100_training_returns():
    records = [{"step": 10 * (i + 1), "episode_return": float(i % 7)} for i in range(250)]
    assert training_return_average(records, 2_500) == pytest.approx(sum(i % 7 for i in range(150, 250)) / 100)
    assert training_return_average(records, 555) == pytest.approx(sum(i % 7 for i in range(55)) / 55)
    assert training_return_average(records, 5) is None


def test_the_table_reports_the_training_statistic_and_the_published_value_at_its_budget(tmp_path):
    for seed, offset in enumerate((0.0, 1.0)):
        run = write_run(tmp_path, "dqn", "MinAtar/Breakout", seed, 3.0, steps=250_000)
        config = json.loads((run / "config.json").read_text())
        resolved = api.resolve(method="dqn", game="MinAtar/Breakout", seed=seed, steps=250_000,
                               protocol="youngtian2019", preset="youngtian2019", device="cpu").to_dict()
        (run / "config.json").write_text(json.dumps({**config, **resolved}))
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"step": 1_000 * (i + 1), "episode_return": i + offset}) + "\n" for i in range(250)))
    (table,) = build_tables(read_runs(tmp_path)[0], kind="train-ma100", reference=True)
    (cell,) = table["cells"]["MinAtar/Breakout"].values()
    assert cell["values"] == [pytest.approx(199.5), pytest.approx(200.5)]
    published = dict((f, v) for f, v, _ in published_minatar_curves()["MinAtar/Breakout"])
    assert table["published_at_budget"] == {"MinAtar/Breakout": published[250_000]}
    md = compare("table", "--results", tmp_path, "--score", "train-ma100", "--reference")
    assert "Young & Tian 2019 DQN at 250,000 frames (published, training statistic)" in md.stdout
    assert "mean return of the last 100 training episodes" in md.stdout
    plot = compare("plot", "--results", tmp_path, "--out", tmp_path / "figures", "--curve", "train-ma100")
    assert plot.returncode == 0 and "learning_curves__" in plot.stdout, plot.stderr
    # part-way, e.g. at a published figure's earlier point: the last 100 episodes ending by step 150k
    (early,) = build_tables(read_runs(tmp_path)[0], kind="train-ma100", reference=True, at_step=150_000)
    (cell,) = early["cells"]["MinAtar/Breakout"].values()
    assert cell["values"] == [pytest.approx(99.5), pytest.approx(100.5)] and early["read_at"] == 150_000
    md = compare("table", "--results", tmp_path, "--score", "train-ma100", "--at-step", "250000", "--reference")
    assert "training statistic read at 250,000 agent steps" in md.stdout
    assert_clean_error(compare("table", "--results", tmp_path, "--at-step", "1000"), "use it with --score train-ma100")
    assert_clean_error(compare("table", "--results", tmp_path, "--score", "train-ma100", "--at-step", "300000"),
                       "--at-step 300,000 is past the budget")


def test_the_training_statistic_of_a_run_without_training_episodes_is_refused(tmp_path):
    dqn = write_run(tmp_path, "dqn", "CartPole-v1", 0, 7.0, steps=1000)
    (dqn / "metrics.jsonl").write_text(json.dumps({"step": 10, "episode_return": 7.0}) + "\n")
    write_run(tmp_path, "convert", "CartPole-v1", 0, 5.0, source=dqn, steps=1000,
              sweep=[{"timesteps": 8, "mean_return": 5.0, "conformance": 1.0, "neuro": {}}])
    assert_clean_error(compare("table", "--results", tmp_path, "--score", "train-ma100"),
                       "has no training episodes")
    assert compare("table", "--results", tmp_path, "--score", "train-ma100", "--methods", "dqn").returncode == 0


def test_the_written_out_loop_uses_the_constants_of_the_papers_preset():
    from compare.app import reference_loop as theirs

    cfg = DQNLearner.preset("youngtian2019")
    assert (theirs.BATCH_SIZE, theirs.REPLAY_BUFFER_SIZE, theirs.TARGET_NETWORK_UPDATE_FREQ, theirs.REPLAY_START_SIZE,
            theirs.FIRST_N_FRAMES, theirs.END_EPSILON, theirs.STEP_SIZE, theirs.MIN_SQUARED_GRAD, theirs.GAMMA) == (
        cfg.batch_size, cfg.buffer_size, cfg.target_update_period, cfg.learning_starts, cfg.epsilon_decay_steps,
        cfg.epsilon_end, cfg.lr, cfg.optimizer_eps, cfg.gamma)
    assert {k: PAPER[k] for k in ("batch_size", "buffer_size", "learning_starts", "lr")} == {
        "batch_size": theirs.BATCH_SIZE, "buffer_size": theirs.REPLAY_BUFFER_SIZE,
        "learning_starts": theirs.REPLAY_START_SIZE, "lr": theirs.STEP_SIZE}


def test_the_reference_loop_saves_each_run_reads_it_back_and_reports_their_statistic(tmp_path):
    out = tmp_path / "their-loop"
    args = ("reference-loop", "--game", "MinAtar/Breakout", "--frames", "5300", "--seeds", "0,1", "--at",
            "2000,5300", "--out", out)
    first = compare(*args)
    assert first.returncode == 0, first.stderr
    files = sorted(out.glob("*.json"))
    assert [f.name for f in files] == ["youngtian2019-dqn__breakout__seed0.json", "youngtian2019-dqn__breakout__seed1.json"]
    saved = [json.loads(f.read_text()) for f in files]
    assert all(s["frame_stamps"][-1] == 5300 and s["training_frames_per_s"] > 0 for s in saved)  # updates ran
    expected = [training_return_average([{"step": t, "episode_return": r} for t, r in
                                         zip(s["frame_stamps"], s["returns"])], 5300) for s in saved]
    row = first.stdout.strip().splitlines()[-1].split(",")
    assert row[:2] == ["breakout", "5300"] and [float(v) for v in row[2:4]] == pytest.approx(expected, abs=0.005)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = compare(*args)  # both runs are on disk: read back, not rerun
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_the_reference_loop_refuses_bad_input(tmp_path):
    assert_clean_error(compare("reference-loop", "--game", "Breakout", "--out", tmp_path), "MinAtar games only")
    assert_clean_error(compare("reference-loop", "--frames", "1000", "--at", "2000", "--out", tmp_path),
                       "--at 2000 is past --frames 1000")
    assert_clean_error(compare("reference-loop", "--at", "1e5", "--out", tmp_path), "--at '1e5'")
    assert not any(tmp_path.iterdir())


def test_a_run_whose_training_log_is_committed_compressed_reads_as_before(tmp_path):
    import gzip

    from compare.core.runstore import Run, UsageError

    run = Run(tmp_path)
    records = [{"step": 10 * (i + 1), "episode_return": float(i)} for i in range(5)]
    for record in records:
        run.log_metric(record)
    (tmp_path / "metrics.jsonl.gz").write_bytes(gzip.compress((tmp_path / "metrics.jsonl").read_bytes()))
    (tmp_path / "metrics.jsonl").unlink()
    assert run.metrics() == records
    (tmp_path / "metrics.jsonl.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(UsageError, match="metrics.jsonl.gz is damaged"):
        run.metrics()


def test_the_shipped_runs_of_their_loop_are_the_committed_runs_statistic():
    """The SpaceInvaders rows of the shipped their-code-here curve are recomputed from the
    committed runs of the written-out loop (results/minatar-youngtian2019/their-loop)."""
    import csv
    from pathlib import Path

    from compare.core.scores import THEIR_CODE_HERE

    root = Path(__file__).resolve().parents[1]
    committed = sorted((root / "results" / "minatar-youngtian2019" / "their-loop").glob("*space_invaders*.json"))
    assert len(committed) == 3
    runs = [json.loads(p.read_text()) for p in committed]
    lines = [line for line in (root / "compare" / "core" / "data" / THEIR_CODE_HERE).read_text().splitlines()
             if line and not line.startswith("#")]
    rows = [row for row in csv.DictReader(lines) if row["game"] == "space_invaders"]
    assert [int(r["frames"]) for r in rows] == [100_000, 150_000, 200_000, 250_000]
    for row in rows:
        values = [training_return_average([{"step": t, "episode_return": g} for t, g in
                                           zip(run["frame_stamps"], run["returns"])], int(row["frames"]))
                  for run in runs]
        assert [float(row[f"run{i}"]) for i in (1, 2, 3)] == pytest.approx(values, abs=0.005)
        assert float(row["mean"]) == pytest.approx(sum(values) / 3, abs=0.005)
