"""The DQN learner's fast update (FlatRMSprop; the DSQN's fused LIF layers) against the plain
one (torch's RMSprop; autograd through `lif_step`, one time step at a time), on MinAtar."""

import tempfile
from pathlib import Path

import pytest
import torch

from compare.bench import WARMUP, _bench_learner, spiking_and_ann
from compare.core.envs import resolve_env
from compare.core.linear import linear_kernel, onednn_available
from compare.core.protocols import get_protocol
from compare.core.registry import get_method
from compare.core.runstore import Run

UPDATES = 20


def plain(learner) -> None:
    """torch's own optimizer and, for a spiking network, the step-by-step forward."""
    group = learner.opt.param_groups[0]
    learner.opt = torch.optim.RMSprop(learner.q.parameters(), lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                                      momentum=group["momentum"], centered=True, foreach=True)
    for net in (learner.q, learner.target):
        if hasattr(net, "forward_stepwise"):
            net.forward = net.forward_stepwise


@pytest.mark.parametrize("preset", ["youngtian2019", "minatar"])
@pytest.mark.parametrize("kind", ["dqn", "dsqn"])
def test_fast_and_plain_updates_agree(kind, preset):
    spec, protocol = resolve_env("MinAtar/Breakout"), get_protocol("youngtian2019")
    networks = [spiking_and_ann(spec, protocol, get_method("dsqn").option_presets["minatar"])[kind]
                for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))
        fast, slow = (_bench_learner(spec, protocol, 0, 1, run, net, preset) for net in networks)
        fast.begin()
        fast.train_until(WARMUP - 1)  # fills the replay; the first update would come at WARMUP
        plain(slow)
        start = [p.detach().clone() for p in fast.q.parameters()]
        for _ in range(UPDATES):
            batch = fast.replay.sample(fast.cfg.batch_size)
            fast._update(batch, fast.cfg.lr)
            slow._update(batch, slow.cfg.lr)
        fast.env.close()
        slow.env.close()
    moved = max(float((p.detach() - p0).abs().max()) for p, p0 in zip(fast.q.parameters(), start))
    assert moved > 1e-4
    for a, b in zip(fast.q.parameters(), slow.q.parameters(), strict=True):
        if kind == "dqn":  # the same arithmetic, operation for operation
            assert torch.equal(a, b)
        else:  # the fused backward sums in another order: float rounding, far below one update
            torch.testing.assert_close(a, b, rtol=0, atol=moved * 1e-3)


@pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN linear operator")
@pytest.mark.parametrize("kind", ["dqn", "dsqn"])
def test_updates_through_onednn_and_blas_agree(kind):
    """Twenty updates on the same batches with the linear layers through oneDNN and through
    torch's F.linear: the same learning to float rounding (the kernels sum in other orders)."""
    spec, protocol = resolve_env("MinAtar/Breakout"), get_protocol("youngtian2019")
    networks = [spiking_and_ann(spec, protocol, get_method("dsqn").option_presets["minatar"])[kind]
                for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))
        ours, blas = (_bench_learner(spec, protocol, 0, 1, run, net, "youngtian2019") for net in networks)
        ours.begin()
        ours.train_until(WARMUP - 1)
        start = [p.detach().clone() for p in ours.q.parameters()]
        for _ in range(UPDATES):
            batch = ours.replay.sample(ours.cfg.batch_size)
            with linear_kernel("onednn"):
                ours._update(batch, ours.cfg.lr)
            with linear_kernel("blas"):
                blas._update(batch, blas.cfg.lr)
        ours.env.close()
        blas.env.close()
    moved = max(float((p.detach() - p0).abs().max()) for p, p0 in zip(ours.q.parameters(), start))
    assert moved > 1e-4
    assert any(not torch.equal(a, b) for a, b in zip(ours.q.parameters(), blas.q.parameters()))
    for a, b in zip(ours.q.parameters(), blas.q.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=moved * 1e-2)
