"""FlatRMSprop makes torch's centered RMSprop updates bit for bit, and their checkpoints load
into each other."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from compare.core.networks import build_ann
from compare.core.optim import FlatRMSprop
from direct.dsqn import DSQNOptions, build_dsqn

SETTINGS = dict(lr=2.5e-4, alpha=0.95, eps=0.01)


def networks(kind: str):
    torch.manual_seed(0)
    if kind == "ann":
        net = build_ann("minatar", (4, 10, 10), 6)
    else:
        net = build_dsqn(DSQNOptions(weight_gain=8.0, init="default"), "minatar", (4, 10, 10), 6)
    return net, copy.deepcopy(net)


def train(net, opt, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        obs = (torch.rand(32, 4, 10, 10, generator=g) < 0.1).to(torch.uint8)
        target = torch.randn(32, 6, generator=g)
        loss = F.smooth_l1_loss(net(obs), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def through_disk(state: dict) -> dict:
    """A state dict as a checkpoint brings it back (in memory, torch's state_dict shares its
    tensors with the optimizer)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("kind", ["ann", "dsqn"])
@pytest.mark.parametrize("momentum", [0.0, 0.95])
def test_flat_rmsprop_equals_torch_bit_for_bit(kind, momentum):
    ours, theirs = networks(kind)
    opt_ours = FlatRMSprop(ours.parameters(), momentum=momentum, **SETTINGS)
    opt_theirs = torch.optim.RMSprop(theirs.parameters(), momentum=momentum, centered=True, foreach=True, **SETTINGS)
    train(ours, opt_ours, 30, seed=1)
    train(theirs, opt_theirs, 30, seed=1)
    assert not same(ours, networks(kind)[0])  # it trained
    assert same(ours, theirs)
    mine, torchs = opt_ours.state_dict(), opt_theirs.state_dict()
    assert mine["param_groups"] == torchs["param_groups"]
    for i, state in torchs["state"].items():
        assert set(mine["state"][i]) == set(state)
        assert all(torch.equal(mine["state"][i][k], v) for k, v in state.items())


def test_checkpoints_load_across_and_continue_bit_for_bit():
    momentum = 0.95
    ours, theirs = networks("ann")
    opt_theirs = torch.optim.RMSprop(theirs.parameters(), momentum=momentum, centered=True, foreach=True, **SETTINGS)
    train(theirs, opt_theirs, 10, seed=2)
    # torch's checkpoint into ours, then both go on
    ours.load_state_dict(theirs.state_dict())
    opt_ours = FlatRMSprop(ours.parameters(), momentum=momentum, **SETTINGS)
    opt_ours.load_state_dict(through_disk(opt_theirs.state_dict()))
    train(ours, opt_ours, 10, seed=3)
    train(theirs, opt_theirs, 10, seed=3)
    assert same(ours, theirs)
    # ours into a fresh torch optimizer
    again, _ = networks("ann")
    again.load_state_dict(through_disk(ours.state_dict()))
    opt_again = torch.optim.RMSprop(again.parameters(), momentum=momentum, centered=True, foreach=True, **SETTINGS)
    opt_again.load_state_dict(through_disk(opt_ours.state_dict()))
    train(again, opt_again, 5, seed=4)
    train(ours, opt_ours, 5, seed=4)
    assert same(again, ours)


def test_state_of_an_optimizer_that_never_stepped_loads():
    ours, theirs = networks("ann")
    opt_theirs = torch.optim.RMSprop(theirs.parameters(), centered=True, foreach=True, **SETTINGS)
    opt_ours = FlatRMSprop(ours.parameters(), **SETTINGS)
    opt_ours.load_state_dict(opt_theirs.state_dict())  # empty state: torch creates it at the first step
    train(ours, opt_ours, 3, seed=5)
    train(theirs, opt_theirs, 3, seed=5)
    assert same(ours, theirs)


@pytest.mark.parametrize("eps,negative", [(0.01, False), (0.01, True), (1e-30, False)])
def test_zero_subnormal_and_negative_state_as_torch(eps, negative):
    """The square root's floor (SQRT_FLOOR) changes nothing: zeros and subnormal numbers in
    square_avg - grad_avg^2, a negative rounding error (torch writes NaN), and an eps too small
    for the floor to vanish (the plain path)."""
    ours, theirs = networks("ann")
    settings = {**SETTINGS, "eps": eps}
    opt_ours = FlatRMSprop(ours.parameters(), **settings)
    opt_theirs = torch.optim.RMSprop(theirs.parameters(), centered=True, foreach=True, **settings)
    train(ours, opt_ours, 3, seed=6)
    train(theirs, opt_theirs, 3, seed=6)
    for opt in (opt_ours, opt_theirs):
        state = opt.state[next(iter(opt.state))]
        flat_sq, flat_avg = state["square_avg"].view(-1), state["grad_avg"].view(-1)
        flat_sq[:4], flat_avg[:4] = torch.tensor([0.0, 1e-40, 3e-39, 1e-45]), 0.0
        if negative:
            flat_sq[4], flat_avg[4] = 1.0, 1.5  # square_avg - grad_avg^2 < 0: torch writes NaN
    train(ours, opt_ours, 1, seed=7)
    train(theirs, opt_theirs, 1, seed=7)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])
    assert any(p.isnan().any() for p in ours.parameters()) == negative
