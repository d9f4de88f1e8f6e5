"""The structure a new method relies on: the ANN, DSQN and hybrid actor share one topology;
imports point down the layers; seed streams never collide. (Plug-ins: tests/test_plugins.py.)"""

import ast
import json
import shutil
from pathlib import Path

import pytest
from torch import nn

from compare.app.cli import main
from compare.core.networks import build_ann, synapse_stack
from compare.core.registry import registered
from compare.core.seeding import STREAMS, stream_seed
from direct.dsqn import DSQNOptions, build_dsqn
from direct.hybrid import HybridOptions, SpikingActor

ROOT = Path(__file__).resolve().parent.parent


# -- one topology ------------------------------------------------------------------------------

def weight_shapes(modules) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in modules if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("family, obs_shape", [("atari", (4, 84, 84)), ("minatar", (6, 10, 10)), ("classic", (4,))])
def test_ann_dsqn_and_hybrid_actor_share_the_synapse_stack(family, obs_shape):
    n_actions, out_pop, pop = 5, 3, 7
    stack = weight_shapes(synapse_stack(family, obs_shape, n_actions, (32, 32)))
    ann = weight_shapes(build_ann(family, obs_shape, n_actions, (32, 32)).modules())
    dsqn = weight_shapes(build_dsqn(DSQNOptions(mlp_hidden=(32, 32)), family, obs_shape, n_actions).synapses)
    actor = weight_shapes(SpikingActor(HybridOptions(mlp_hidden=(32, 32), out_pop=out_pop, pop_size=pop),
                                       family, obs_shape, n_actions).synapses)
    assert ann == dsqn == stack
    # The actor's output layer has a population per action, and vector inputs enter through
    # the population encoder; every other layer is the same.
    expected = list(stack)
    expected[-1] = (n_actions * out_pop, expected[-1][1])
    if family == "classic":
        expected[0] = (expected[0][0], obs_shape[0] * pop)
    assert actor == expected


# -- layers --------------------------------------------------------------------------------------

LAYERS = {"compare.core": 0, "compare.baselines": 1, "direct": 1, "converters": 1, "compare.app": 2, "compare.bench": 2, "compare.gpu_check": 2}
# Function-level imports of project modules that are deliberate (ARCHITECTURE.md lists them).
DELIBERATE_LAZY = {"compare/app/cli.py", "compare/app/api.py"}


def layer_of(module: str) -> int | None:
    return next((rank for prefix, rank in LAYERS.items() if module == prefix or module.startswith(prefix + ".")), None)


def project_imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and layer_of(node.module) is not None:
            yield node, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if layer_of(alias.name) is not None:
                    yield node, alias.name


def test_imports_point_down_and_sit_at_module_level():
    files = [p for folder in ("compare", "direct", "converters") for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 20
    upward, nested = [], []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        module = relative[:-3].replace("/", ".").removesuffix(".__init__")
        own = layer_of(module)
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node, target in project_imports(tree):
            if own is not None and layer_of(target) > own:
                upward.append(f"{relative}:{node.lineno} imports {target}")
            if id(node) not in top_level and relative not in DELIBERATE_LAZY:
                nested.append(f"{relative}:{node.lineno} imports {target} inside a function")
    assert not upward, upward
    assert not nested, nested


def code_strings(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of a module that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_application_layer_names_no_method():
    """compare/app/ decides nothing by a method's name (what a method can do, it declares), so an
    installed method gets every command; the bench (compare/bench.py), which measures named
    methods against their published loops, sits beside it."""
    names = set(registered())
    assert {"dqn", "dsqn", "convert"} <= names
    named = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
             for path in sorted((ROOT / "compare" / "app").glob("*.py"))
             for node in code_strings(ast.parse(path.read_text())) if node.value in names]
    assert not named, named


# -- seeds ---------------------------------------------------------------------------------------

def test_seed_streams_never_collide():
    seeds = [stream_seed(seed, stream, *index) for seed in (0, 1, 10_000) for stream in STREAMS
             for index in ((), (0,), (1,), (10_000,))]
    assert len(set(seeds)) == len(seeds)
    assert stream_seed(3, "final_eval") == stream_seed(3, "final_eval")  # deterministic
    assert all(0 <= s < 2**31 for s in seeds)


# -- the run store is unchanged ------------------------------------------------------------------

LANDED = Path(__file__).parent / "data" / "landed_runs"  # made by the code before the restructuring (baa1880)


def test_runs_made_by_the_landed_code_are_still_read(tmp_path, capsys):
    runs = tmp_path / "results" / "runs"
    shutil.copytree(LANDED, runs)
    config = json.loads((runs / "convert" / "config.json").read_text())
    (runs / "convert" / "config.json").write_text(json.dumps({**config, "source": str(runs / "dqn")}))  # moved
    main(["table", "--results", str(tmp_path / "results"), "--format", "json"])
    tables = json.loads(capsys.readouterr().out)  # budgets 300 (Q-methods) and 256 (ppo)
    cells = {t["column_methods"][c]: t["cells"]["CartPole-v1"][c] for t in tables for c in t["columns"]}
    assert sorted(cells) == ["convert", "dqn", "dsqn", "ppo"]
    for method, cell in cells.items():
        stored = json.loads((runs / method / "eval.json").read_text())["mean_return"]
        assert cell["mean"] == pytest.approx(stored)
    for method in cells:
        main(["eval", str(runs / method), "--episodes", "2"])
        assert f"{method} CartPole-v1: mean return" in capsys.readouterr().out
    for method in ("dsqn", "convert"):
        main(["export", str(runs / method), "--target", "nir", "--out", str(tmp_path / f"nir-{method}")])
        assert (tmp_path / f"nir-{method}" / "model.nir").is_file()
