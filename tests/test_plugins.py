"""Methods from another package: found through the `compare.methods` entry points in every
process (run, sweep cells, table, eval, export), with nothing in the project naming them. The
package is tests/plugins (its dist-info is what `pip install` would write)."""

import json
import os
from pathlib import Path

import pytest
from conftest import compare

from compare.app.cli import main
from compare.core.registry import registered

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def toy_package(monkeypatch):
    """tests/plugins on the path of this process and of every process it starts."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))


def test_the_built_in_methods_are_entry_points_too():
    assert {"dqn", "dsqn", "convert", "ppo", "hybrid"} <= set(registered())
    assert "toy_spiking" not in registered()  # not installed: only on the path of the tests below


def test_a_toy_q_method_and_a_toy_actor_train_and_tabulate_through_the_cli(tmp_path, toy_package, capsys):
    for method in ("toy_q", "toy_ac"):
        main(["run", "--method", method, "--game", "CartPole-v1", "--steps", "512", "--quiet",
              "--out", str(tmp_path), "--set", "width=8", "--set", "eval_episodes=2",
              "--set", "learning_starts=100" if method == "toy_q" else "num_steps=32"])
    runs = {json.loads((p / "config.json").read_text())["method"]: p for p in (tmp_path / "runs").iterdir()}
    assert set(runs) == {"toy_q", "toy_ac"}
    assert json.loads((runs["toy_q"] / "config.json").read_text())["method_options"]["width"] == 8
    assert "dqn" in json.loads((runs["toy_q"] / "config.json").read_text())  # its learner's section
    assert "ppo" in json.loads((runs["toy_ac"] / "config.json").read_text())
    critic = json.loads((runs["toy_ac"] / "eval.json").read_text())["critic_neuro_training_only"]
    assert critic["macs_per_decision"] == 4 * 16 + 16 * 1  # the learner added its ANN critic
    capsys.readouterr()
    main(["table", "--results", str(tmp_path), "--format", "json"])
    (table,) = json.loads(capsys.readouterr().out)
    columns = {m: c for c, m in table["column_methods"].items()}
    assert list(columns) == ["toy_q", "toy_ac"] and columns["toy_q"].startswith("toy_q [")
    for method in ("toy_q", "toy_ac"):
        score = json.loads((runs[method] / "eval.json").read_text())["mean_return"]
        assert table["cells"]["CartPole-v1"][columns[method]]["mean"] == pytest.approx(score)


@pytest.mark.slow
def test_a_toy_spiking_method_is_swept_tabulated_reevaluated_and_exported_in_new_processes(tmp_path, toy_package):
    results = tmp_path / "results"
    res = compare("sweep", "--games", "CartPole-v1", "--methods", "toy_spiking", "--seeds", "0-1", "--steps", "600",
                  "--set", "learning_starts=200", "--set", "eval_episodes=2", "--workers", "2", "--results", results)
    assert res.returncode == 0, res.stderr
    runs = sorted((results / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["method"] == "toy_spiking" and config["method_options"]["timesteps"] == 4
        neuro = json.loads((run / "eval.json").read_text())["neuro"]
        # costed as it declares itself (compare.core.spiking): T = 4, one LIF layer, spikes into the output
        assert neuro["timesteps"] == 4 and set(neuro["firing_rate"]) == {"lifs.0"}
        assert neuro["macs_per_decision"] == 4 * 32  # the observation's layer, once per decision

    res = compare("methods")
    assert res.returncode == 0 and "toy_spiking" in res.stdout and "export: nir" in res.stdout.split("toy_spiking")[1]
    res = compare("table", "--results", results, "--format", "json")
    assert res.returncode == 0, res.stderr
    (table,) = json.loads(res.stdout)
    (column,) = table["column_methods"]
    assert table["column_methods"][column] == "toy_spiking" and table["cells"]["CartPole-v1"][column]["seeds"] == 2

    res = compare("eval", runs[0], "--episodes", "2")
    assert res.returncode == 0 and "toy_spiking CartPole-v1: mean return" in res.stdout, res.stderr

    res = compare("export", runs[0], "--target", "nir", "--out", tmp_path / "nir")
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / "nir" / "export.json").read_text())
    assert record["source_method"] == "toy_spiking" and record["timesteps"] == 4
    assert (tmp_path / "nir" / "model.nir").stat().st_size > 0

    res = compare("export", runs[0], "--target", "speck2f", "--out", tmp_path / "chip")
    assert res.returncode == 2 and "takes a finished" in res.stderr and "toy_spiking" not in res.stderr.split("takes")[1]


def test_no_file_of_the_project_names_the_toy_methods():
    for folder in ("compare", "direct", "converters"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "toy_" not in path.read_text(), path
