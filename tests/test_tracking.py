"""TensorBoard event files next to every training run's logs, read back with TensorBoard's reader."""

import json
import os
import struct
import subprocess
import sys

import pytest
from conftest import compare, kill_after_first_checkpoint, read_jsonl
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)


def scalars(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_training_run_writes_its_curves_for_tensorboard(tmp_path):
    res = compare("run", "--method", "dsqn", "--game", "CartPole-v1", "--steps", "3000", "--quiet",
                  "--set", "eval_episodes=2", "--set", "learning_starts=500", "--set", "eval_interval=1000",
                  "--set", "periodic_eval_episodes=2", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert list(run_dir.glob("events.out.tfevents.*"))
    tags = scalars(run_dir)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert tags["train/episode_return"] == [(r["step"], pytest.approx(r["episode_return"])) for r in metrics]
    for key in ("train/loss", "train/epsilon", "train/steps_per_s", "train/episode_length"):
        assert tags[key], key
    evals = read_jsonl(run_dir / "evals.jsonl")
    assert [step for step, _ in tags["eval/mean_return"]] == [r["step"] for r in evals] == [1000, 2000, 3000]
    final = json.loads((run_dir / "eval.json").read_text())
    assert tags["final/mean_return"] == [(3000, pytest.approx(final["mean_return"]))]
    for layer, rate in final["neuro"]["firing_rate"].items():
        assert tags[f"neuro/firing_rate/{layer}"] == [(3000, pytest.approx(rate))]
    for model in ("compute", "compute+neurons", "memory"):
        assert tags[f"final/energy_uj/{model}/per_step"] == [
            (3000, pytest.approx(final["neuro"]["energy"][model]["per_step"]["total_j"] * 1e6))]


def test_a_resumed_run_purges_the_events_after_its_checkpoint(tmp_path):
    cmd = ["run", "--method", "dqn", "--game", "CartPole-v1", "--steps", "24000", "--quiet",
           "--set", "eval_episodes=2", "--set", "mlp_hidden=32,32", "--set", "checkpoint_interval=10000",
           "--out", str(tmp_path)]
    run_dir = kill_after_first_checkpoint([sys.executable, "-m", "compare", *cmd], tmp_path)
    res = compare("run", "--resume", run_dir, "--quiet")
    assert res.returncode == 0, res.stderr
    steps = [step for step, _ in scalars(run_dir)["train/episode_return"]]
    assert steps == [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]  # no step twice


def wandb_records(run_dir):
    """History rows and config of an offline W&B run, read from its .wandb file (W&B's
    LevelDB-style log of protobuf records: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, buffer = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    history, config = [], {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buffer = payload if kind in (1, 2) else buffer + payload  # full/first, or middle/last
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(buffer)
        which = record.WhichOneof("record_type")
        if which == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif which in ("config", "run"):
            updates = record.config.update if which == "config" else record.run.config.update
            config.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates})
    return history, config


def test_track_wandb_mirrors_the_config_and_the_same_scalars_offline(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    res = subprocess.run([sys.executable, "-m", "compare", "run", "--method", "dqn", "--game", "CartPole-v1",
                          "--steps", "2000", "--quiet", "--set", "eval_episodes=2", "--set", "learning_starts=500",
                          "--set", "eval_interval=1000", "--set", "periodic_eval_episodes=2", "--track", "wandb",
                          "--wandb-project", "compare-test", "--wandb-group", "g1", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    history, config = wandb_records(run_dir)
    stored = json.loads((run_dir / "config.json").read_text())
    assert config["dqn"] == stored["dqn"] and config["protocol"] == stored["protocol"]
    assert stored["wandb"] == {"project": "compare-test", "entity": None, "group": "g1"}
    returns = [(row["global_step"], row["train/episode_return"]) for row in history if "train/episode_return" in row]
    assert returns == [(r["step"], r["episode_return"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert [row["global_step"] for row in history if "eval/mean_return" in row] == [1000, 2000]
    final = json.loads((run_dir / "eval.json").read_text())
    assert [row["final/mean_return"] for row in history if "final/mean_return" in row] == [final["mean_return"]]
    tensorboard = scalars(run_dir)  # the same numbers as the TensorBoard files
    assert [(s, pytest.approx(v)) for s, v in tensorboard["train/episode_return"]] == returns
