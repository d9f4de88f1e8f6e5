"""Fair comparisons by construction: one learner per study, one column per variant, stated
score and energy conventions."""

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_clean_error, compare

from compare.app.resolve import resolve_settings
from compare.core.accounting import CostMeter
from direct.dsqn import DSQNOptions, build_dsqn

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)

FAST = ["--game", "CartPole-v1", "--steps", "600", "--quiet", "--set", "eval_episodes=2",
        "--set", "learning_starts=300", "--set", "mlp_hidden=16,16"]


def table_json(results, *args):
    res = compare("table", "--results", results, "--format", "json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res.stderr


def config(run_dir):
    return json.loads((run_dir / "config.json").read_text())


def run(out, *args):
    res = compare("run", "--out", out, *args)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1].removeprefix("run directory: "))


def test_a_sweep_gives_every_q_method_the_same_learner_and_one_group(tmp_path):
    res = compare("sweep", "--games", "Breakout", "--methods", "dqn,dsqn,convert", "--seeds", "0",
                  "--steps", "400", "--results", tmp_path, "--set", "eval_episodes=1",
                  "--set", "calibration_frames=100", "--set", "timesteps=4")
    assert res.returncode == 0, res.stdout + res.stderr
    configs = {c["method"]: c for c in (config(p) for p in (tmp_path / "runs").iterdir())}
    assert configs["dqn"]["dqn"] == configs["dsqn"]["dqn"]  # the whole learner section
    assert configs["dqn"]["preset"] == configs["dsqn"]["preset"] == "chen2022"
    tables, _ = table_json(tmp_path)
    (table,) = tables
    assert set(table["column_methods"].values()) == {"dqn", "dsqn", "convert"}
    assert not any(note.startswith("learner presets differ") for note in table["notes"]), table["notes"]


def test_a_preset_given_to_a_sweep_reaches_every_method_that_has_it(tmp_path):
    res = compare("sweep", "--games", "Breakout", "--methods", "dqn,dsqn,ppo", "--seeds", "0",
                  "--preset", "nature", "--dry-run", "--results", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "presets (atari): dqn nature, dsqn nature, ppo atari" in res.stdout


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """CartPole runs: dsqn at T=4 and T=8 on seeds 0 and 1; dqn default and with another lr."""
    out = tmp_path_factory.mktemp("variants")
    runs = {}
    for seed in ("0", "1"):
        for t in ("4", "8"):
            runs["dsqn", t, seed] = run(out, "--method", "dsqn", "--seed", seed, "--set", f"timesteps={t}", *FAST)
    runs["dqn", "default"] = run(out, "--method", "dqn", "--seed", "0", *FAST)
    runs["dqn", "lr"] = run(out, "--method", "dqn", "--seed", "0", "--set", "lr=1e-5", *FAST)
    return out, runs


def test_each_dsqn_variant_is_its_own_column_with_both_seeds(variants):
    out, _ = variants
    (table,), log = table_json(out, "--methods", "dsqn")
    assert table["columns"] == ["dsqn [learning_starts=300, mlp_hidden=16,16]",  # T=8 is the default
                                "dsqn [learning_starts=300, mlp_hidden=16,16, timesteps=4]"]
    for column in table["columns"]:
        assert table["cells"]["CartPole-v1"][column]["seeds"] == 2
    assert "skipped" not in log


def test_a_changed_learning_rate_is_a_column_labelled_by_the_difference(variants):
    out, _ = variants
    (table,), _ = table_json(out, "--methods", "dqn")
    assert table["columns"] == ["dqn [learning_starts=300, mlp_hidden=16,16]",
                                "dqn [learning_starts=300, lr=1e-05, mlp_hidden=16,16]"]


def test_a_label_names_the_column(variants, tmp_path):
    out, _ = variants
    labelled = run(tmp_path, "--method", "dqn", "--seed", "0", "--label", "small net", *FAST)
    assert config(labelled)["label"] == "small net"
    (table,), _ = table_json(tmp_path)
    assert table["columns"] == ["dqn [small net]"]


def test_a_later_run_replaces_a_sweep_run_of_the_same_settings_but_not_another(tmp_path):
    args = ["--games", "CartPole-v1", "--methods", "dqn", "--seeds", "0", "--steps", "600",
            "--set", "eval_episodes=2", "--set", "learning_starts=300", "--set", "mlp_hidden=16,16"]
    assert compare("sweep", *args, "--results", tmp_path).returncode == 0
    (swept,) = (tmp_path / "runs").iterdir()
    later = run(tmp_path, "--method", "dqn", "--seed", "0", *FAST)
    assert swept.name > later.name  # by name the sweep run sorts last; by creation it is older
    different = run(tmp_path, "--method", "dqn", "--seed", "0", *FAST, "--set", "gamma=0.98")
    (table,), log = table_json(tmp_path)
    assert f"{swept.name}: repeated by {later.name}" in log
    assert len(table["columns"]) == 2 and all(c["seeds"] == 1 for c in table["cells"]["CartPole-v1"].values())
    gamma = next(c for c in table["columns"] if "gamma=0.98" in c)
    score = json.loads((different / "eval.json").read_text())["mean_return"]
    assert table["cells"]["CartPole-v1"][gamma]["mean"] == pytest.approx(score)


def write_run(root, name, method, seed, final, periodic=(), neuro=None, **settings_kw):
    """A hand-made finished run: a real resolved config, an eval.json and periodic evals."""
    run_dir = root / "runs" / name
    run_dir.mkdir(parents=True)
    overrides = {"eval_episodes": "2", **settings_kw}
    settings = resolve_settings(method, "CartPole-v1", seed, 1000, "nature", None, overrides, "cpu")
    (run_dir / "config.json").write_text(json.dumps({**settings.to_dict(), "created": f"2026-01-01T00:00:0{seed}"}))
    (run_dir / "evals.jsonl").write_text("".join(json.dumps({"step": 100 * (i + 1), "mean_return": v}) + "\n"
                                                 for i, v in enumerate(periodic)))
    (run_dir / "eval.json").write_text(json.dumps({"method": method, "game": "CartPole-v1", "seed": seed,
                                                   "mean_return": final, "neuro": neuro or {}}))
    return run_dir


def test_best_eval_takes_the_best_periodic_evaluation(tmp_path):
    write_run(tmp_path, "a", "dqn", 0, final=100.0, periodic=[50.0, 300.0, 200.0])
    write_run(tmp_path, "b", "dqn", 1, final=120.0, periodic=[80.0, 90.0])
    (final,), _ = table_json(tmp_path)
    (best,), _ = table_json(tmp_path, "--score", "best-eval")
    assert final["cells"]["CartPole-v1"]["dqn"]["values"] == [100.0, 120.0]
    assert best["cells"]["CartPole-v1"]["dqn"]["values"] == [300.0, 120.0]  # the final counts as one
    assert best["cells"]["CartPole-v1"]["dqn"]["mean"] == pytest.approx(210.0)
    assert "optimistic" in best["conventions"] and "final evaluation" in final["conventions"]


def layer_counts(role, kind, dense=0.0, accumulates=0.0, passes=1.0, nonzero=0.0):
    return {"name": f"{role}{dense}", "role": role, "input": kind, "dense": dense, "accumulates": accumulates,
            "nonzero_inputs": nonzero, "passes": passes, "input_size": 10, "output_size": 10, "weights": 100,
            "bias": False}


def neuro_of(timesteps, synapses, neurons=(), bits=32, rate=None):
    counts = {"timesteps": timesteps, "weight_bits": bits, "activation_bits": bits, "synapses": list(synapses),
              "neurons": list(neurons), "activations": 0.0}
    return {"timesteps": timesteps, "counts": counts, **({} if rate is None else {"mean_firing_rate": rate})}


def test_energy_models_and_the_first_layer_rule_in_the_table(tmp_path):
    # dsqn at T=8: 1,000 MACs in the first layer, 50 accumulates fed by spikes; the ANN 2,000 MACs
    once, per_step = 1000 * 4.6e-12 + 50 * 0.9e-12, 8000 * 4.6e-12 + 50 * 0.9e-12
    snn = neuro_of(8, [layer_counts("static", "analog", dense=1000), layer_counts("spikes", "spikes", 4000, 50, 8, 5)],
                   [{"name": "lif", "updates": 80.0, "spikes": 5.0, "adds": 3, "mults": 1, "state_words": 1}], rate=0.0625)
    write_run(tmp_path, "s", "dsqn", 0, final=10.0, neuro=snn)
    write_run(tmp_path, "a", "dqn", 0, final=10.0, neuro=neuro_of(1, [layer_counts("analog", "analog", dense=2000)]))
    # an int8 network (its counts say so, whatever its method): 2,000 MACs at 0.2 + 0.1 pJ
    write_run(tmp_path, "q", "ppo", 0, final=10.0, neuro=neuro_of(1, [layer_counts("analog", "analog", dense=2000)],
                                                                   bits=8))
    (default,), _ = table_json(tmp_path)
    (charged_once,), _ = table_json(tmp_path, "--energy", "once", "--energy-model", "compute")
    assert default["energy"] == "per-step" and "every time step" in default["conventions"]
    assert default["energy_models"] == ["memory", "compute"] and "Lemaire" in default["conventions"]
    dsqn = default["aggregates"]["dsqn"]
    assert dsqn["energy_uj"]["compute"] == pytest.approx(per_step * 1e6)
    assert dsqn["energy_ratio_to_ann"]["compute"] == pytest.approx(per_step / (2000 * 4.6e-12))
    assert set(dsqn["energy_uj"]) == {"memory", "compute"} and dsqn["energy_uj"]["memory"] > dsqn["energy_uj"]["compute"]
    assert charged_once["energy_models"] == ["compute"]
    assert charged_once["aggregates"]["dsqn"]["energy_uj"] == {"compute": pytest.approx(once * 1e6)}
    assert charged_once["aggregates"]["dsqn"]["energy_ratio_to_ann"]["compute"] == pytest.approx(once / (2000 * 4.6e-12))
    # compute model, once: fixed 4.6 nJ (first layer), 45 pJ from 5 spikes: the int8 network's 600 pJ is
    # below the fixed part, no rate would do; under per_step likewise
    crossover = charged_once["aggregates"]["dsqn"]["crossover"]
    assert crossover["against"] == "ppo" and crossover["model"] == "compute"
    assert crossover["rate"] == {"CartPole-v1": None} and crossover["firing_rate"] == {"CartPole-v1": 0.0625}


def test_the_crossover_rate_in_the_table_is_the_rate_at_which_the_snn_costs_the_int8_ann_s(tmp_path):
    # compute model: the SNN's fixed part 100 x 0.9 pJ (binary first layer), 1,000 accumulates from
    # spikes at rate 0.2 (900 pJ); the int8 network 2,000 MACs x 0.3 pJ = 600 pJ:
    # 90 + 900 r / 0.2 = 600  ->  r = 0.1133
    snn = neuro_of(4, [layer_counts("static", "binary", dense=400, accumulates=100, nonzero=10),
                       layer_counts("spikes", "spikes", 4000, 1000, 4, 100)], rate=0.2)
    write_run(tmp_path, "s", "dsqn", 0, final=10.0, neuro=snn)
    write_run(tmp_path, "q", "ppo", 0, final=10.0, neuro=neuro_of(1, [layer_counts("analog", "analog", dense=2000)],
                                                                   bits=8))
    (table,), _ = table_json(tmp_path, "--energy", "once", "--energy-model", "compute")
    assert table["aggregates"]["dsqn"]["crossover"]["rate"]["CartPole-v1"] == pytest.approx(0.2 * (600 - 90) / 900)
    out = compare("table", "--results", tmp_path, "--energy", "once", "--energy-model", "compute").stdout
    assert "crossover firing rate vs ppo, compute [its firing rate]" in out and "0.113 [0.2]" in out


def test_the_nature_cnn_dsqn_first_layer_under_both_conventions():
    torch.manual_seed(0)
    net = build_dsqn(DSQNOptions(timesteps=8), "atari", (4, 84, 84), 4)
    with CostMeter(net) as cost, torch.no_grad():
        net(torch.full((2, 4, 84, 84), 128, dtype=torch.uint8))  # analog frames
    summary = cost.summary()
    block = summary["energy"]["compute"]
    conv1 = 20 * 20 * 32 * 4 * 8 * 8
    assert summary["macs_per_decision"] == conv1
    first = [layer for layer in summary["counts"]["synapses"] if layer["role"] == "static"]
    assert len(first) == 1 and first[0]["dense"] == conv1 and first[0]["input"] == "analog"
    assert conv1 * 4.6e-12 * 1e6 == pytest.approx(15.07, abs=0.01)  # the first layer once
    # per step, the first layer's MACs 7 more times; everything else the same
    assert block["per_step"]["total_j"] - block["once"]["total_j"] == pytest.approx(7 * conv1 * 4.6e-12)


def test_tan2021_conversion_is_labelled_as_tans(variants, tmp_path):
    _, runs = variants
    source = runs["dqn", "default"]
    res = compare("run", "--method", "convert", "--source", source, "--preset", "tan2021", "--out", tmp_path,
                  "--set", "calibration_frames=200", "--quiet")
    assert res.returncode == 0, res.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    options = config(run_dir)["convert"]
    assert config(run_dir)["preset"] == "tan2021"
    assert options["timesteps"] == [500] and options["readout"] == "robust" and options["initial_membrane"] == 0.0
    (table,), _ = table_json(tmp_path)
    assert "convert [tan2021, calibration_frames=200, from dqn [learning_starts=300, mlp_hidden=16,16]]" \
        in table["columns"]


@pytest.mark.parametrize("args, fragments", [
    (["table", "--score", "best"], ["'best' is not one of 'final', 'best-eval'"]),
    (["table", "--energy", "twice"], ["'twice' is not one of 'per-step', 'once'"]),
    (["run", "--label", "../x"], ["--label '../x'", "letters, digits"]),
    (["run", "--method", "dsqn", "--preset", "tan2021"], ["unknown preset for dsqn 'tan2021'"]),
])
def test_bad_convention_label_and_preset(tmp_path, args, fragments):
    (tmp_path / "runs").mkdir()
    extra = ["--results", tmp_path] if args[0] == "table" else ["--out", tmp_path, "--quiet"]
    before = sorted((tmp_path / "runs").iterdir())
    assert_clean_error(compare(*args, *extra), *fragments)
    assert sorted((tmp_path / "runs").iterdir()) == before
