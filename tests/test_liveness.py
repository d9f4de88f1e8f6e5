"""Spiking networks that fire from the first step: the data-driven initialisation (`init=data`)
on every environment family and learner preset, on real observations from the harness."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compare

from compare.app import api
from compare.core import liveness
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.evaluation import random_observations
from compare.core.liveness import initial_scales, liveness_at_start
from compare.core.registry import get_method
from compare.core.training import new_deployed_network

GAMES = ("Breakout", "MinAtar/Breakout", "CartPole-v1")  # Atari frames, MinAtar frames, a vector
RATE_BAND = (0.01, 0.5)  # alive, and far from firing at every step (the target is 10%)
CASES = [(method, game, preset) for method in ("dsqn", "hybrid") for game in GAMES
         for preset in get_method(method).learner.presets]


def new_network(method: str, game: str, preset: str, **settings):
    resolved = api.resolve(method=method, game=game, preset=preset, steps=1000, device="cpu",
                           settings={"init": "data", "init_observations": 32, **settings})
    spec = resolve_env(game)
    network = new_deployed_network(get_method(method), resolved, spec)
    scales = initial_scales(network, resolved.options, spec, resolved.protocol, resolved.seed)
    return network, scales, resolved, spec


def loss_at_step_zero(method: str, network, obs: torch.Tensor) -> torch.Tensor:
    """dsqn: the TD loss on consecutive observations with random rewards; hybrid: the policy-
    gradient loss with random advantages (what the DQN and PPO learners backpropagate)."""
    gen = torch.Generator().manual_seed(0)
    out = network(obs[:-1])
    actions = torch.randint(out.shape[1], (len(out),), generator=gen)
    if method == "dsqn":
        with torch.no_grad():
            target = torch.rand(len(out), generator=gen) + 0.99 * network(obs[1:]).max(dim=1).values
        return F.smooth_l1_loss(out.gather(1, actions[:, None]).squeeze(1), target)
    advantages = torch.randn(len(out), generator=gen)
    return -(advantages * F.log_softmax(out, dim=1).gather(1, actions[:, None]).squeeze(1)).mean()


@pytest.mark.slow
@pytest.mark.parametrize("method, game, preset", CASES)
def test_a_new_spiking_network_fires_in_every_layer_and_every_synaptic_layer_gets_a_gradient(method, game, preset):
    network, scales, resolved, spec = new_network(method, game, preset)
    assert set(scales) == {f"synapses.{i}" for i in range(len(network.lifs))}
    start = liveness_at_start(network, spec, resolved.protocol, resolved.seed, count=64)  # its own stream
    assert set(start["firing_rate"]) >= {f"lifs.{i}" for i in range(len(network.lifs))}
    for name, rate in start["firing_rate"].items():
        if name.startswith("lifs."):
            assert RATE_BAND[0] <= rate <= RATE_BAND[1], (name, rate, start["firing_rate"])
    obs = torch.as_tensor(random_observations(spec, resolved.protocol, 17, 1, "liveness"))
    network.zero_grad()
    loss_at_step_zero(method, network, obs).backward()
    for i, layer in enumerate(network.synapses):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, (i, preset)


def test_recorded_scales_rebuild_the_same_network_and_init_default_is_pytorchs():
    network, scales, resolved, spec = new_network("dsqn", "MinAtar/Breakout", "minatar")
    again, again_scales, *_ = new_network("dsqn", "MinAtar/Breakout", "minatar")
    assert scales == again_scales
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))
    assert api.resolve(method="dsqn", game="MinAtar/Breakout", steps=1000, device="cpu").options.init == "data"
    plain = api.resolve(method="dsqn", game="MinAtar/Breakout", steps=1000, device="cpu", settings={"init": "default"})
    assert initial_scales(new_deployed_network(get_method("dsqn"), plain, spec), plain.options, spec,
                          plain.protocol, 0) is None


def test_a_run_records_and_reapplies_its_scales(tmp_path):
    res = compare("run", "--method", "dsqn", "--game", "CartPole-v1", "--steps", "300", "--quiet", "--out", tmp_path,
                  "--set", "learning_starts=301", "--eval-episodes", "1", "--set", "init=data")
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    network, scales, *_ = new_network("dsqn", "CartPole-v1", "cartpole", init_observations=256)
    assert config["init_scales"] == pytest.approx(scales)
    saved = torch.load(run / "model.pt", weights_only=True)  # no update was made: the initial network
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())


def bisection_on_whole_forwards(network, observations: torch.Tensor, rate: float) -> dict[str, float]:
    """The data-driven init as first written: every bisection step a whole forward, the rate read
    by CostMeter (what `data_driven_scales` must reproduce exactly, at a fraction of the cost)."""
    def rate_now(spiking: str) -> float:
        return liveness.firing(network.eval(), observations)["firing_rate"][spiking]

    names = {id(module): name for name, module in network.named_modules()}
    return {names[id(layer)]: liveness.bisect_scale(layer, rate, partial(rate_now, spiking))
            for layer, spiking in network.init_layers()}


@pytest.mark.parametrize("method, game, preset", [("dsqn", "MinAtar/Breakout", "minatar"),
                                                  ("dsqn", "MinAtar/Breakout", "liu2022"),  # rate readout, T = 64
                                                  ("hybrid", "CartPole-v1", None),           # population encoder
                                                  ("hybrid", "MinAtar/Breakout", None)])     # spiking output layer
def test_each_layer_is_set_on_the_spikes_a_whole_forward_gives_it(method, game, preset):
    resolved = api.resolve(method=method, game=game, preset=preset, steps=1000, device="cpu",
                           settings={"init": "default"})
    spec = resolve_env(game)
    observations = torch.as_tensor(random_observations(spec, resolved.protocol, 64, 0, "init"))
    networks, scales = [], []
    for calibrate in (bisection_on_whole_forwards, liveness.data_driven_scales):
        torch.manual_seed(0)
        networks.append(new_deployed_network(get_method(method), resolved, spec))
        scales.append(calibrate(networks[-1], observations, 0.1))
    assert scales[0] == scales[1] and len(scales[0]) == len(networks[0].lifs)
    assert all(torch.equal(a, b) for a, b in zip(networks[0].state_dict().values(), networks[1].state_dict().values()))


@pytest.mark.parametrize("setting, fragment", [
    ("init_rate=1.5", "init_rate=1.5 must lie strictly between 0 and 1"),
    ("init_rate=0", "must lie strictly between 0 and 1"),
    ("init_observations=0", "init_observations=0 must be a positive integer"),
    ("init=lsuv", "init='lsuv' is not allowed; choose one of: default, data"),
])
def test_bad_init_settings(setting, fragment):
    key, value = setting.split("=")
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        api.resolve(method="dsqn", game="CartPole-v1", settings={key: value})


def test_a_run_recorded_before_init_existed_reads_as_the_plain_init():
    """A dsqn run recorded before `init` existed (tests/data/landed_runs: written by an earlier
    version) used PyTorch's init, and the table must not show it as the default init=data."""
    from compare.app.table import variant_of
    from compare.core.settings import Settings

    config = json.loads((Path(__file__).parent / "data" / "landed_runs" / "dsqn" / "config.json").read_text())
    assert "init" not in config["method_options"]
    assert Settings.from_dict(config).options.init == "default"
    assert ("init", "default") in variant_of(config).changes
