"""`compare table`, `compare plot` and FGSM on real short runs made here."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, compare

from compare.app.robustness import fgsm
from compare.core.energy import estimate
from compare.core.scores import human_normalized_score
from compare.core.training import evaluate_saved_run, load_deployed

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)

STEPS = ["--game", "CartPole-v1", "--steps", "1500", "--quiet", "--set", "eval_episodes=2",
         "--set", "mlp_hidden=32,32", "--set", "learning_starts=500"]


def make_run(out, *args):
    res = compare("run", "--out", out, *args)
    assert res.returncode == 0, res.stderr
    return sorted((out / "runs").iterdir(), key=lambda p: p.stat().st_mtime)[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    runs = {}
    for method in ("dqn", "dsqn"):
        for seed in (0, 1):
            runs[method, seed] = make_run(out, "--method", method, "--seed", seed, *STEPS)
    runs["convert", 0] = make_run(out, "--method", "convert", "--source", runs["dqn", 0], "--timesteps", "4,8",
                                  "--calibration-frames", "300")
    return out, runs


def read(run_dir, name="eval.json"):
    return json.loads((run_dir / name).read_text())


def column(table, method):
    """The one column of `method` in a table (its label lists the settings STEPS changed)."""
    (name,) = [c for c, m in table["column_methods"].items() if m == method]
    return name


def test_table_cells_and_aggregates_match_the_run_files(store):
    out, runs = store
    res = compare("table", "--results", out, "--format", "json")
    assert res.returncode == 0, res.stderr
    (table,) = json.loads(res.stdout)
    assert list(table["column_methods"].values()) == ["dqn", "dsqn", "convert"]
    assert table["games"] == ["CartPole-v1"]
    assert column(table, "dqn") == "dqn [learning_starts=500, mlp_hidden=32,32]"
    for method in ("dqn", "dsqn", "convert"):
        scores = [read(runs[m, s])["mean_return"] for (m, s) in runs if m == method]
        c = table["cells"]["CartPole-v1"][column(table, method)]
        assert c["seeds"] == len(scores)
        assert c["mean"] == pytest.approx(np.mean(scores))
        assert c["sd"] == pytest.approx(np.std(scores, ddof=1) if len(scores) > 1 else None)
    agg = {m: table["aggregates"][column(table, m)] for m in ("dqn", "dsqn", "convert")}
    for method in ("dqn", "dsqn"):  # one game: the IQM is the IQM of that game's seeds
        from rliable import metrics

        scores = np.array([[read(runs[method, s])["mean_return"]] for s in (0, 1)])
        assert agg[method]["iqm"] == pytest.approx(metrics.aggregate_iqm(scores))
        assert agg[method]["iqm_ci"][0] <= agg[method]["iqm"] <= agg[method]["iqm_ci"][1]
    assert "p_improve_over_baseline" not in agg["dqn"] and 0 <= agg["dsqn"]["p_improve_over_baseline"] <= 1
    assert agg["dsqn"]["baseline_column"] == agg["dsqn"]["ann"]  # the method's declared ANN baseline
    assert agg["dsqn"]["timesteps"] == [8] and "timesteps" not in agg["dqn"]
    convert = read(runs["convert", 0])
    assert agg["convert"]["timesteps"] == [convert["selected_timesteps"]]
    assert agg["convert"]["conformance"] == pytest.approx(convert["conformance"])
    for model in ("memory", "compute"):  # the default models, from the counts each eval.json records
        dsqn_energy, dqn_energy = (np.mean([estimate(read(runs[m, s])["neuro"]["counts"], model, "per_step").total
                                            for s in (0, 1)]) for m in ("dsqn", "dqn"))
        assert read(runs["dsqn", 0])["neuro"]["energy"][model]["per_step"]["total_j"] > 0
        assert agg["dsqn"]["energy_uj"][model] == pytest.approx(dsqn_energy * 1e6)
        assert agg["dsqn"]["energy_ratio_to_ann"][model] == pytest.approx(dsqn_energy / dqn_energy)


def test_markdown_table_prints_every_cell_and_says_what_it_read(store):
    out, runs = store
    res = compare("table", "--results", out, "--reference")
    assert res.returncode == 0, res.stderr
    for method, _seed in runs:
        assert f"{method} [" in res.stderr
    dqn = [read(runs["dqn", s])["mean_return"] for s in (0, 1)]
    assert f"{np.mean(dqn):.2f} +- {np.std(dqn, ddof=1) / np.sqrt(2):.2f} (n=2)" in res.stdout
    for label in ("IQM score [95% CI]", "P(improvement over its ANN baseline)", "| T |", "mean firing rate",
                  "energy per decision (uJ)", "energy ratio to the ANN", "conformance", "human (published)"):
        assert label in res.stdout
    row = next(line for line in res.stdout.splitlines() if line.startswith("| CartPole-v1"))
    assert row.rstrip().endswith("| - | - | - |")  # no published scores for CartPole: dashes, not zeros
    csv = compare("table", "--results", out, "--format", "csv", "--methods", "dqn,convert")
    header = csv.stdout.splitlines()[0]
    assert csv.returncode == 0 and header.startswith('group,game,"dqn [') and ',"convert [' in header
    latex = compare("table", "--results", out, "--format", "latex", "--timesteps", "4")
    assert latex.returncode == 0 and "\\begin{tabular}" in latex.stdout and "$\\pm$" in latex.stdout


def test_broken_and_unfinished_runs_are_skipped_with_a_reason(store, tmp_path):
    out, runs = store
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    broken = copy / "runs" / runs["dsqn", 1].name
    (broken / "eval.json").write_text("{not json")
    unfinished = copy / "runs" / (runs["dqn", 1].name + "x")
    shutil.copytree(copy / "runs" / runs["dqn", 1].name, unfinished)
    (unfinished / "eval.json").unlink()
    res = compare("table", "--results", copy, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert f"{broken.name}: unreadable eval.json" in res.stderr
    assert f"{unfinished.name}: unfinished" in res.stderr
    (table,) = json.loads(res.stdout)
    assert table["cells"]["CartPole-v1"][column(table, "dsqn")]["seeds"] == 1


def test_runs_under_different_protocols_are_never_pooled(store, tmp_path):
    out, runs = store
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    make_run(copy, "--method", "dqn", "--seed", "2", *STEPS, "--set", "eval_episodes=3")
    res = compare("table", "--results", copy, "--format", "json", "--methods", "dqn")
    tables = json.loads(res.stdout)
    assert len(tables) == 2
    assert sorted(t["cells"]["CartPole-v1"][column(t, "dqn")]["seeds"] for t in tables) == [1, 2]
    assert any("eval_episodes=3" in t["group"] for t in tables), [t["group"] for t in tables]


@pytest.mark.parametrize("args, fragments", [
    (["--methods", "dqnn"], ["unknown method 'dqnn'"]),
    (["--games", "Pongg"], ["unknown game 'Pongg'"]),
    (["--games", "Pong"], ["no usable finished runs", "for these filters"]),
    (["--timesteps", "x"], ["--timesteps 'x'", "allowed: selected, best-test"]),
    (["--timesteps", "7"], ["--timesteps 7:", "evaluated T = 4, 8 only"]),
    (["--normalize", "hns"], ["--normalize hns: CartPole-v1 is not an Atari game"]),
])
def test_bad_table_input(store, args, fragments):
    out, _ = store
    assert_clean_error(compare("table", "--results", out, *args), *fragments)


def test_missing_results_directory(tmp_path):
    assert_clean_error(compare("table", "--results", tmp_path / "none"), "no run store")
    (tmp_path / "runs").mkdir()
    assert_clean_error(compare("plot", "--results", tmp_path), "no usable finished runs")


def test_human_normalized_score_on_a_hand_computed_example():
    # pong: random -20.7, human 14.6 -> (0 + 20.7) / 35.3
    assert human_normalized_score("pong", 0.0) == pytest.approx(20.7 / 35.3)
    assert human_normalized_score("breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized_score(None, 10.0) is None


def test_plot_writes_every_kind_of_figure(store, tmp_path):
    out, _ = store
    res = compare("plot", "--results", out, "--out", tmp_path / "plots")
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in (tmp_path / "plots").iterdir())
    for kind in ("learning_curves__", "conversion__", "score_vs_energy__", "performance_profile__"):
        (path,) = [tmp_path / "plots" / f for f in files if f.startswith(kind)]
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (path, len(data))


def test_fgsm_at_eps_zero_keeps_the_score_and_a_large_eps_changes_actions(store):
    out, runs = store
    run_dir = runs["dqn", 0]
    clean = evaluate_saved_run(run_dir, 3, None, "cpu")
    attacked = compare("eval", run_dir, "--episodes", "3", "--attack", "fgsm", "--eps", "0,0.5")
    assert attacked.returncode == 0, attacked.stderr
    stored = read(run_dir, "robustness.json")["fgsm"]
    assert stored["results"]["0"]["episode_returns"] == clean["episode_returns"]
    assert stored["attack"] == "white-box"
    # At a large eps the greedy actions change on some states, for the ANN and (through its
    # surrogate gradient) for the DSQN.
    obs = torch.randn(256, 4).numpy()
    for key in (("dqn", 0), ("dsqn", 0)):
        net = load_deployed(runs[key]).network
        with torch.no_grad():
            before = net(torch.as_tensor(obs)).argmax(1)
            after = net(torch.as_tensor(fgsm(net, obs, 0.5, None))).argmax(1)
        assert (before != after).any(), key
    table = compare("table", "--results", out, "--robustness", "--methods", "dqn")
    assert "FGSM" in table.stdout and "mlp_hidden=32,32] eps=0.5" in table.stdout


def test_fgsm_on_a_converted_run_is_a_transfer_attack(store):
    _, runs = store
    res = compare("eval", runs["convert", 0], "--episodes", "2", "--attack", "fgsm", "--eps", "0.1")
    assert res.returncode == 0, res.stderr
    assert read(runs["convert", 0], "robustness.json")["fgsm"]["attack"].startswith("transfer")


def test_atari_tables_default_to_human_normalized_scores(tmp_path):
    run = make_run(tmp_path, "--method", "dqn", "--game", "Breakout", "--steps", "200", "--quiet",
                   "--set", "eval_episodes=1", "--set", "learning_starts=100")
    res = compare("table", "--results", tmp_path, "--format", "json")
    (table,) = json.loads(res.stdout)
    assert table["unit"] == "hns"
    raw = read(run)["mean_return"]
    assert table["cells"]["Breakout"][column(table, "dqn")]["mean"] == pytest.approx((raw - 1.7) / (30.5 - 1.7))
    (raw_table,) = json.loads(compare("table", "--results", tmp_path, "--format", "json", "--normalize", "raw").stdout)
    assert raw_table["cells"]["Breakout"][column(raw_table, "dqn")]["mean"] == pytest.approx(raw)
