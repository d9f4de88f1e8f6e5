"""The Python API: the README's notebook example runs, and its results are the CLI's."""

import json
import re
from pathlib import Path

import pytest

from compare.app import api
from compare.core.errors import UsageError

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)

README = Path(__file__).parents[1] / "README.md"


def notebook_example() -> str:
    text = README.read_text()
    return re.search(r"<!-- notebook example -->\n```python\n(.*?)```", text, re.S).group(1)


def test_the_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(notebook_example(), "README.md", "exec"), {})
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    methods = sorted(json.loads((p / "config.json").read_text())["method"] for p in runs)
    assert methods == ["convert", "dqn"]
    frame = api.table(tmp_path / "results")
    assert sorted(frame["method"]) == ["convert", "dqn"] and (frame["seeds"] == 1).all()
    for run_dir in runs:  # each cell is the run's own final score
        config = json.loads((run_dir / "config.json").read_text())
        score = json.loads((run_dir / "eval.json").read_text())["mean_return"]
        assert frame.loc[frame["method"] == config["method"], "mean"].item() == pytest.approx(score)
    assert "energy_ratio_to_ann_memory" in capsys.readouterr().out


def test_api_settings_are_the_clis(tmp_path):
    settings = api.resolve(method="dsqn", game="CartPole-v1", settings={"timesteps": 4, "mlp_hidden": (32, 32)},
                           threads=1)
    assert settings.options.timesteps == 4 and settings.options.mlp_hidden == (32, 32)
    assert settings.threads == 1 and settings.preset == "cartpole"
    with pytest.raises(UsageError, match="unknown setting for dsqn 'timestep'"):
        api.resolve(method="dsqn", settings={"timestep": 4})
    with pytest.raises(UsageError, match="no run store"):
        api.table(tmp_path)
