"""The reporting layer's conclusions on run stores written by hand (no training): operating
points chosen off the test episodes, standard errors, normalized aggregates, byte-identical
regeneration, verdict lines and the figures."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, compare
from PIL import Image

from compare.app import api
from compare.app.cli import main
from compare.app.table import build_tables, read_runs
from compare.core.scores import normalized_score, small_env_references

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)

MINATAR = ("MinAtar/Breakout", "MinAtar/SpaceInvaders")


def write_run(root: Path, method: str, game: str, seed: int, mean_return: float, *, source: Path | None = None,
              sweep: list[dict] | None = None, evals: list[tuple[int, float]] = (), steps: int = 30_000) -> Path:
    """A finished run as the run store keeps it: config.json from the settings resolver,
    eval.json with the given score (and a conversion's sweep), evals.jsonl."""
    settings = api.resolve(method=method, game=game, seed=seed, steps=steps, source=source, device="cpu")
    name = f"{game.replace('/', '-')}__{method}__seed{seed}"
    run = root / "runs" / name
    run.mkdir(parents=True)
    config = settings.to_dict()
    if source is not None:
        config["source_settings"] = json.loads((source / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config))
    record = {"game": game, "method": method, "seed": seed, "mean_return": mean_return, "episodes": 3,
              "episode_returns": [mean_return] * 3, "episode_lengths": [10] * 3, "neuro": {}}
    if sweep is not None:
        record["sweep"] = sweep
    (run / "eval.json").write_text(json.dumps(record))
    (run / "evals.jsonl").write_text("".join(json.dumps({"step": s, "mean_return": r}) + "\n" for s, r in evals))
    return run


def sweep_entry(timesteps: int, test: float, validation: float | None) -> dict:
    entry = {"timesteps": timesteps, "mean_return": test, "episodes": 3, "episode_returns": [test] * 3,
             "episode_lengths": [10] * 3, "conformance": 0.9, "neuro": {"timesteps": timesteps}}
    if validation is not None:
        entry["validation_mean_return"] = validation
    return entry


@pytest.fixture
def conversion_store(tmp_path):
    """A dqn run and its conversion, whose per-T test means are [5, 9, 6] and validation means [8, 6, 7]."""
    dqn = write_run(tmp_path, "dqn", "CartPole-v1", 0, 7.0, steps=1000)
    sweep = [sweep_entry(t, test, val) for t, test, val in ((8, 5.0, 8.0), (16, 9.0, 6.0), (32, 6.0, 7.0))]
    write_run(tmp_path, "convert", "CartPole-v1", 0, 5.0, source=dqn, sweep=sweep, steps=1000)
    return tmp_path


def convert_cell(table: dict) -> dict:
    (column,) = [c for c, m in table["column_methods"].items() if m == "convert"]
    return table["cells"]["CartPole-v1"][column]


def test_a_conversion_reports_its_validation_chosen_t_and_the_optimistic_one_only_on_request(conversion_store):
    res = compare("table", "--results", conversion_store, "--format", "json")
    assert res.returncode == 0, res.stderr
    (table,) = json.loads(res.stdout)
    assert convert_cell(table)["mean"] == 5.0  # T=8, the validation-best, not the test-best 9
    assert any("T chosen on validation episodes" in note for note in table["notes"])
    optimistic = compare("table", "--results", conversion_store, "--format", "json", "--timesteps", "best-test")
    (table,) = json.loads(optimistic.stdout)
    assert convert_cell(table)["mean"] == 9.0
    assert any("chosen on the reported test episodes (optimistic)" in note for note in table["notes"])
    md = compare("table", "--results", conversion_store, "--timesteps", "best-test")
    assert "(optimistic)" in md.stdout.splitlines()[1]


def test_a_conversion_without_validation_scores_falls_back_to_the_test_best_and_says_it_is_optimistic(tmp_path):
    dqn = write_run(tmp_path, "dqn", "CartPole-v1", 0, 7.0, steps=1000)
    sweep = [sweep_entry(t, test, None) for t, test in ((8, 5.0), (16, 9.0))]
    write_run(tmp_path, "convert", "CartPole-v1", 0, 9.0, source=dqn, sweep=sweep, steps=1000)
    (table,) = build_tables(read_runs(tmp_path)[0])
    assert convert_cell(table)["mean"] == 9.0
    assert any("(optimistic)" in note for note in table["notes"])


def test_a_t_the_conversion_did_not_evaluate_is_refused(conversion_store, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["table", "--results", str(conversion_store), "--timesteps", "64"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluated T = 8, 16, 32 only" in err[0]
    with pytest.raises(SystemExit):
        main(["table", "--results", str(conversion_store), "--timesteps", "²"])
    assert "allowed: selected, best-test or a positive integer" in capsys.readouterr().err


def test_the_standard_error_over_seeds_is_in_every_output_format(tmp_path):
    values = [3.0, 4.5, 8.0]
    for seed, value in enumerate(values):
        write_run(tmp_path, "dqn", "CartPole-v1", seed, value, steps=1000)
    se = np.std(values, ddof=1) / np.sqrt(3)
    shown = f"{np.mean(values):.2f} +- {se:.2f} (n=3)"
    for fmt in ("md", "csv", "latex"):
        res = compare("table", "--results", tmp_path, "--format", fmt)
        assert res.returncode == 0, res.stderr
        assert shown.replace("+-", "$\\pm$" if fmt == "latex" else "+-") in res.stdout, fmt
        assert "standard error over seeds (sample SD, ddof = 1" in res.stdout, fmt
    (table,) = json.loads(compare("table", "--results", tmp_path, "--format", "json").stdout)
    (c,) = table["cells"]["CartPole-v1"].values()
    assert c["se"] == pytest.approx(se) and c["sd"] == pytest.approx(np.std(values, ddof=1))
    frame = api.table(tmp_path)
    assert frame["se"].iloc[0] == pytest.approx(se)


def test_minatar_aggregates_pool_normalized_scores_only(tmp_path):
    scores = {"MinAtar/Breakout": [5.0, 6.0, 7.0], "MinAtar/SpaceInvaders": [20.0, 30.0, 25.0]}
    for game, values in scores.items():
        for seed, value in enumerate(values):
            write_run(tmp_path, "dqn", game, seed, value)
    (table,) = build_tables(read_runs(tmp_path)[0])
    assert table["unit"] == "normalized"
    refs = small_env_references()
    normalized = sorted(normalized_score(refs[g], v) for g, values in scores.items() for v in values)
    expected = np.mean(normalized[1:5])  # IQM of 6 runs: the middle four (rliable trims 25% each side)
    (agg,) = table["aggregates"].values()
    assert agg["iqm"] == pytest.approx(expected)
    raw = build_tables(read_runs(tmp_path)[0], unit="raw")[0]
    assert "iqm" not in next(iter(raw["aggregates"].values()))
    assert any("raw returns of different games do not pool" in note for note in raw["notes"])


def test_a_game_without_a_reference_gives_no_aggregate_row_and_a_note(tmp_path):
    for game in ("MinAtar/Breakout", "MinAtar/Asterix"):
        for seed in (0, 1):
            write_run(tmp_path, "dqn", game, seed, 3.0 + seed)
    (table,) = build_tables(read_runs(tmp_path)[0])
    assert table["unit"] == "raw" and "iqm" not in next(iter(table["aggregates"].values()))
    assert any("no normalization reference for MinAtar/Asterix" in note for note in table["notes"])
    md = compare("table", "--results", tmp_path)
    assert "| IQM score [95% CI] | - |" in md.stdout and "do not pool" in md.stdout


def test_a_reference_file_with_a_missing_or_non_numeric_column_is_refused(tmp_path, capsys):
    write_run(tmp_path, "dqn", "MinAtar/Breakout", 0, 5.0)
    bad = {"missing.csv": "game,random,reference_name,source\nMinAtar/Breakout,0.4,x,y\n",
           "text.csv": "game,random,reference,reference_name,source\nMinAtar/Breakout,0.4,ten,x,y\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        before = sorted(p.name for p in tmp_path.rglob("*"))
        res = compare("table", "--results", tmp_path, "--reference-scores", tmp_path / name)
        assert_clean_error(res, "reference scores")
        assert ("missing column 'reference'" if name == "missing.csv" else "must be numbers") in res.stderr
        assert sorted(p.name for p in tmp_path.rglob("*")) == before


def two_game_study(root: Path) -> Path:
    """dqn and dsqn on both MinAtar games, three seeds each, with periodic evaluations."""
    rng = np.random.default_rng(0)
    for method, level in (("dqn", 1.0), ("dsqn", 0.8)):
        for game, scale in zip(MINATAR, (6.0, 25.0)):
            for seed in range(3):
                final = float(level * scale + rng.normal())
                write_run(root, method, game, seed, final,
                          evals=[(10_000, final * 0.3), (20_000, final * 0.7)])
    return root


def test_a_table_regenerates_byte_for_byte_and_leaves_numpys_global_rng_alone(tmp_path):
    store = two_game_study(tmp_path)
    np.random.seed(123)
    state = np.random.get_state()
    tables = [build_tables(read_runs(store)[0]) for _ in range(2)]
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    assert json.dumps(tables[0]) == json.dumps(tables[1])
    for fmt in ("md", "json"):
        first, second = (compare("table", "--results", store, "--format", fmt).stdout for _ in range(2))
        assert first == second and first


def test_each_compared_column_gets_a_verdict_line_with_a_few_seeds_warning(tmp_path):
    store = two_game_study(tmp_path)
    (table,) = build_tables(read_runs(store)[0])
    (line,) = table["verdicts"].values()
    assert line.startswith("dsqn: ") and "dqn" in line and "only 3 seeds per cell" in line
    low, high = table["aggregates"]["dsqn"]["p_improve_ci"]
    expected = "better than" if low > 0.5 else "worse than" if high < 0.5 else "no difference detected at n = 3"
    assert expected in line
    md = compare("table", "--results", store)
    assert line in md.stdout
    frame = api.table(store)
    assert set(frame.loc[frame["method"] == "dsqn", "verdict"]) == {line}
    assert frame.loc[frame["method"] == "dqn", "verdict"].isna().all()


def test_plot_draws_performance_profiles_and_sample_efficiency_and_says_what_it_skipped(tmp_path):
    store = two_game_study(tmp_path / "store")
    res = compare("plot", "--results", store, "--out", tmp_path / "figures")
    assert res.returncode == 0, res.stderr
    written = {Path(line).name.split("__")[0] for line in res.stdout.splitlines()}
    assert {"performance_profile", "sample_efficiency"} <= written
    for line in res.stdout.splitlines():
        with Image.open(line) as image:
            assert image.size[0] > 300 and image.size[1] > 200
    assert "not drawn: learning curves, MinAtar/Breakout" in res.stderr  # no metrics.jsonl in this store


def test_a_network_forced_silent_is_flagged_at_start_at_each_evaluation_and_in_the_table(tmp_path):
    res = compare("run", "--method", "dsqn", "--game", "CartPole-v1", "--steps", "600", "--quiet", "--out", tmp_path,
                  "--set", "learning_starts=100", "--set", "eval_interval=300", "--eval-episodes", "2",
                  "--set", "v_th=1000", "--set", "init=default")  # a threshold no input current reaches
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("compare: warning:")]
    assert len(warnings) == 3 and "as initialised" in warnings[0] and "at step 300" in warnings[1]
    assert all("silent (firing rate 0) lifs.0, lifs.1" in line for line in warnings)
    (run,) = (tmp_path / "runs").iterdir()
    start = json.loads((run / "config.json").read_text())["liveness_at_start"]
    assert start["silent_layers"] == ["lifs.0", "lifs.1"] and start["observations"] == 256
    evals = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert [e["silent_layers"] for e in evals] == [["lifs.0", "lifs.1"]] * 2
    assert json.loads((run / "eval.json").read_text())["silent_layers"] == ["lifs.0", "lifs.1"]
    table = compare("table", "--results", tmp_path)
    assert "(n=1) [silent: 1 of 1]" in table.stdout and "a dead network, not a weak method" in table.stdout


def test_a_live_network_gets_no_warning_and_no_mark(tmp_path):
    res = compare("run", "--method", "dsqn", "--game", "CartPole-v1", "--steps", "300", "--quiet", "--out", tmp_path,
                  "--set", "learning_starts=100", "--eval-episodes", "2", "--set", "weight_gain=4")
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
    (run,) = (tmp_path / "runs").iterdir()
    start = json.loads((run / "config.json").read_text())["liveness_at_start"]
    assert start["silent_layers"] == [] and all(0 < r < 1 for r in start["firing_rate"].values())
    assert "[silent" not in compare("table", "--results", tmp_path).stdout


@pytest.mark.parametrize("game", ["MinAtar/Breakout", "CartPole-v1"])
def test_the_shipped_random_scores_are_the_harness_measurement_they_cite(game):
    """small_env_reference_scores.csv's `random`: 10,000 episodes, `nature` protocol, seed 12345."""
    from compare.core.envs import resolve_env
    from compare.core.evaluation import random_policy_result
    from compare.core.protocols import get_protocol

    result = random_policy_result(resolve_env(game), get_protocol("nature"), 10_000, seed=12345)
    assert round(float(np.mean(result.episode_returns)), 3) == small_env_references()[game].random


def test_every_figures_title_clears_its_axes_labels_and_ticks(conversion_store, monkeypatch, tmp_path):
    """The titles are drawn above everything of their axes (a long variant name once overprinted
    the conversion figure's axis label)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from compare.app import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append((fig, path)), path)[1])
    records, _ = read_runs(conversion_store)
    written, _ = plots.write_plots(records, tmp_path / "figures")
    assert any(path.name.startswith("conversion__") for path in written)
    for fig, path in figures:
        canvas = FigureCanvasAgg(fig)  # plots close their figures; draw this one again as it was saved
        canvas.draw()
        renderer = canvas.get_renderer()
        titles = [t for t in [fig._suptitle] + [ax.title for ax in fig.axes] if t is not None and t.get_text()]
        assert titles, path.name
        for title in titles:
            box = title.get_window_extent(renderer)
            for ax in fig.axes:
                parts = [ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()]
                for part in (p for p in parts if p.get_text() and p is not title):
                    assert not box.overlaps(part.get_window_extent(renderer)), (path.name, title.get_text(),
                                                                               part.get_text())
