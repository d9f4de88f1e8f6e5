"""Spiking neurons for directly trained networks: a functional core and thin layer modules.

The LIF neuron is Norse's current-free ("box") LIF, `norse.torch.functional.lif_box`:
    v <- v + dt * tau_mem_inv * (v_leak - v + x);  z = H(v - v_th);  reset
With dt = 1, tau_mem_inv = 1/tau and v_leak = 0 this is the DSQN paper's v <- v + (x - v)/tau.
Two things Norse's step does not offer, and the DSQN paper uses, are added here: the ATan
surrogate gradient and a reset whose spike is detached from the graph. The other surrogates
are Norse's own (`norse.torch.functional.threshold`). The output neurons are Norse's
current-free leaky integrator (`li_box_feed_forward_step`), v <- v + (x - v)/tau.
`tests/test_dsqn.py` checks both steps against Norse's on the same input.

Layers run a whole sequence of T steps as one autograd node (`LIFSequence`, `LISequence`):
the same arithmetic as the single steps, with backpropagation through time written out, which
on a CPU takes most of the per-op overhead out of a spiking network's update. That fused path
is the default; `neuron_impl="norse"` runs Norse's own `lif_box_feed_forward_step` and
`li_box_feed_forward_step` one step at a time instead (autograd through Norse's ops, the
detached reset passed to Norse as its reset method); `tests/test_dsqn.py` checks that both give
the same Q-values and gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from norse.torch.functional.heaviside import heaviside
from norse.torch.functional.leaky_integrator_box import LIBoxParameters, LIBoxState, li_box_feed_forward_step
from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters, lif_box_feed_forward_step
from norse.torch.functional.reset import reset_subtract, reset_value
from norse.torch.functional.threshold import threshold as norse_threshold
from torch import nn

from compare.core.errors import UsageError
from compare.core.spiking import LI_OPS, LIF_OPS

Surrogate = Literal["atan", "super", "triangle", "tanh", "circ", "heavi_erfc"]
SURROGATES = ("atan", "super", "triangle", "tanh", "circ", "heavi_erfc")
NeuronImpl = Literal["fused", "norse"]


class ATanSpike(torch.autograd.Function):
    """Heaviside forward; gradient alpha/2 / (1 + (pi/2 * alpha * x)^2) (Fang et al. 2021)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * atan_derivative(x, ctx.alpha), None


def atan_derivative(x: torch.Tensor, alpha: float, inplace: bool = False) -> torch.Tensor:
    """`inplace`: overwrite `x` (a temporary) instead of allocating."""
    y = x.mul_(math.pi / 2 * alpha) if inplace else x * (math.pi / 2 * alpha)
    return y.square_().add_(1).reciprocal_().mul_(alpha / 2)


def spike(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    """Heaviside step of `x` (membrane minus threshold) with a surrogate gradient."""
    if surrogate == "atan":
        return ATanSpike.apply(x, alpha)
    return norse_threshold(x, surrogate, alpha)


def check_time_constant(name: str, tau: float) -> None:
    """A membrane time constant in steps: v <- v + (x - v) / tau overshoots x below 1."""
    if not tau >= 1:
        raise UsageError(f"{name}={tau} must be at least 1 (in steps; 1: no memory)")


@dataclass(frozen=True)
class LIFParameters:
    tau_mem: float = 2.0          # v <- v + (x - v) / tau_mem
    v_th: float = 1.0
    v_reset: float = 0.0
    reset: Literal["hard", "soft"] = "hard"   # hard: v <- v_reset; soft: v <- v - v_th
    detach_reset: bool = True     # the reset does not carry gradient (DSQN reference code)
    surrogate: Surrogate = "atan"
    alpha: float = 2.0
    impl: NeuronImpl = "fused"


@dataclass(frozen=True)
class NeuronOptions:
    """LIF settings shared by the networks trained here (`--set` keys of dsqn and hybrid)."""

    tau_mem: float = 2.0               # LIF: v <- v + (x - v) / tau_mem
    v_th: float = 1.0
    v_reset: float = 0.0
    reset: Literal["hard", "soft"] = "hard"
    detach_reset: bool = True
    surrogate: Surrogate = "atan"
    surrogate_alpha: float = 2.0
    neuron_impl: NeuronImpl = "fused"  # norse: Norse's own step functions (same values, slower)
    weight_gain: float = 1.0           # x PyTorch's default synapse init (1: the papers' init)
    # data: before training, each synaptic layer feeding spiking neurons is rescaled (first to
    # last) so that its neurons fire at init_rate on init_observations random-policy observations
    # of the run's own environment (compare.core.liveness); with the papers' init (default:
    # PyTorch's x weight_gain) the Atari DSQN starts silent in every layer.
    init: Literal["default", "data"] = "data"
    # runs recorded before `init` existed used the plain init (config.from_dict)
    RECORDED_WITHOUT: ClassVar[dict] = {"init": "default"}
    init_rate: float = 0.1
    init_observations: int = 256

    def __post_init__(self):
        if self.surrogate not in SURROGATES:
            raise UsageError(f"surrogate={self.surrogate!r} is not allowed; choose one of: {', '.join(SURROGATES)}")
        if self.neuron_impl == "norse" and self.surrogate == "atan":
            raise UsageError("neuron_impl=norse: Norse has no ATan surrogate; choose surrogate="
                             f"{', '.join(SURROGATES[1:])}, or neuron_impl=fused")
        for name in ("v_th", "surrogate_alpha", "weight_gain"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be positive")
        check_time_constant("tau_mem", self.tau_mem)
        if self.reset == "hard" and self.v_reset >= self.v_th:
            raise UsageError(f"v_reset={self.v_reset} must lie below v_th={self.v_th}: a hard reset there fires "
                             "again on every step")
        if not 0 < self.init_rate < 1:
            raise UsageError(f"init_rate={self.init_rate} must lie strictly between 0 and 1 (a firing rate)")
        if self.init_observations < 1:
            raise UsageError(f"init_observations={self.init_observations} must be a positive integer")

    @property
    def lif(self) -> LIFParameters:
        return LIFParameters(tau_mem=self.tau_mem, v_th=self.v_th, v_reset=self.v_reset,
                             reset=self.reset, detach_reset=self.detach_reset,
                             surrogate=self.surrogate, alpha=self.surrogate_alpha, impl=self.neuron_impl)


def scale_weights(synapses: list[nn.Module], gain: float) -> list[nn.Module]:
    """Multiply every synaptic weight by `gain` (`weight_gain`): with PyTorch's default init a
    LIF layer whose inputs are sparse (binary frames, spikes) can be silent at the start, and a
    silent network passes almost no gradient."""
    with torch.no_grad():
        for layer in synapses:
            layer.weight.mul_(gain)
    return synapses


def lif_step(x: torch.Tensor, v: torch.Tensor, p: LIFParameters) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the current-free LIF neuron: returns (spikes, new membrane)."""
    v = torch.lerp(v, x, 1.0 / p.tau_mem)  # v + (x - v) / tau_mem
    z = spike(v - p.v_th, p.surrogate, p.alpha)
    zr = z.detach() if p.detach_reset else z
    if p.reset == "hard":
        return z, v * (1 - zr) + zr * p.v_reset
    return z, v - zr * p.v_th


def surrogate_derivative(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    """d spike / d x of the chosen surrogate, elementwise, from the surrogate's own backward
    (`x` is a temporary it may overwrite)."""
    if surrogate == "atan":
        return atan_derivative(x, alpha, inplace=True)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(spike(x, surrogate, alpha).sum(), x)
    return grad


class LIFSequence(torch.autograd.Function):
    """LIF neurons over T steps as one autograd node.

    Forward computes exactly `lif_step`'s values without building a graph; backward is the
    same backpropagation through time written out. Autograd then tracks one node per layer
    instead of ~10 small ops per layer and step, which is most of a small network's update
    time on a CPU. Both directions write into buffers allocated once per call (on a CPU these
    passes are memory-bound, and a fresh tensor per step costs as much as the arithmetic).
    `tests/test_dsqn.py` checks both directions against `lif_step`.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: LIFParameters) -> torch.Tensor:
        k = 1.0 / p.tau_mem
        membranes = torch.empty_like(x)   # after integration, before reset
        spikes = torch.empty_like(x)
        v = torch.zeros_like(x[0])        # after reset; rewritten in place every step
        # Float ops only (a comparison written as 1.0 / 0.0, the reset as a multiply-add): on a
        # CPU an op with a bool operand or result costs several float ops. Every value is the
        # one `lif_step` computes: v - v z is exactly 0 or v, and v - z v_th is where's v - v_th.
        for x_t, v_t, z_t in zip(x.unbind(0), membranes.unbind(0), spikes.unbind(0)):
            torch.lerp(v, x_t, k, out=v_t)
            torch.gt(v_t, p.v_th, out=z_t)
            if p.reset == "hard":
                torch.addcmul(v_t, v_t, z_t, value=-1, out=v)
                if p.v_reset:
                    v.add_(z_t, alpha=p.v_reset)
            else:
                torch.add(v_t, z_t, alpha=-p.v_th, out=v)
        ctx.save_for_backward(membranes, spikes)
        ctx.p = p
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        membranes, spikes = ctx.saved_tensors
        p = ctx.p
        k = 1.0 / p.tau_mem
        slope = surrogate_derivative(membranes - p.v_th, p.surrogate, p.alpha)
        # The reset u = reset(v, z): du/dv, and du/dz when the reset's spike carries gradient.
        du_dv = torch.sub(1, spikes) if p.reset == "hard" else None
        if not p.detach_reset:
            du_dz = (p.v_reset - membranes) if p.reset == "hard" else torch.full_like(spikes, -p.v_th)
            # dL/dv_t = slope_t (dL/dz_t + du_dz_t g_t) + du_dv_t g_t, g_t = dL/du_t
            du_dv = (du_dv if du_dv is not None else 1) + du_dz * slope
        # dL/dv_t, built in place of the slope: dL/dz_t slope_t, plus what flows back from
        # step t + 1 through the leak (1 - k) and the reset.
        grad_v = slope.mul_(grad_spikes)
        steps = grad_v.unbind(0)
        resets = du_dv.unbind(0) if du_dv is not None else None
        for t in range(len(steps) - 2, -1, -1):
            if resets is None:
                steps[t].add_(steps[t + 1], alpha=1 - k)
            else:
                steps[t].addcmul_(steps[t + 1], resets[t], value=1 - k)
        return grad_v.mul_(k), None


def li_step(x: torch.Tensor, v: torch.Tensor, tau_mem: float) -> torch.Tensor:
    """One step of the current-free leaky integrator: v <- v + (x - v) / tau_mem (Norse's
    `li_box_feed_forward_step` with dt = 1 and v_leak = 0)."""
    return torch.lerp(v, x, 1.0 / tau_mem)


class LISequence(torch.autograd.Function):
    """Leaky integrators over T steps as one autograd node (values exactly `li_step`'s)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, tau_mem: float) -> torch.Tensor:
        out = torch.empty_like(x)
        v = torch.zeros_like(x[0])
        for x_t, out_t in zip(x.unbind(0), out.unbind(0)):
            v = torch.lerp(v, x_t, 1.0 / tau_mem, out=out_t)
        ctx.tau_mem = tau_mem
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        k = 1.0 / ctx.tau_mem
        grad_v = torch.empty_like(grad_out)  # dL/dv_t, through v_t's own output and v_(t+1)
        steps, outs = grad_v.unbind(0), grad_out.unbind(0)
        steps[-1].copy_(outs[-1])
        for t in range(len(steps) - 2, -1, -1):
            torch.add(outs[t], steps[t + 1], alpha=1 - k, out=steps[t])
        return grad_v.mul_(k), None


def norse_lif_sequence(x: torch.Tensor, p: LIFParameters) -> torch.Tensor:
    """(T, B, ...) currents -> spikes through Norse's `lif_box_feed_forward_step`, step by step."""
    base = reset_value if p.reset == "hard" else reset_subtract

    def reset(z, v, v_reset, v_th):  # Norse's own reset, fed the spike detached if the model says so
        return base(z.detach() if p.detach_reset else z, v, v_reset, v_th)

    def tensor(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=x.dtype, device=x.device)

    params = LIFBoxParameters(tau_mem_inv=tensor(1.0 / p.tau_mem), v_leak=tensor(0.0), v_th=tensor(p.v_th),
                              v_reset=tensor(p.v_reset), method=p.surrogate, alpha=tensor(p.alpha),
                              reset_method=reset)
    state, spikes = LIFBoxFeedForwardState(v=torch.zeros_like(x[0])), []
    for t in range(x.shape[0]):
        z, state = lif_box_feed_forward_step(x[t], state, params, dt=1.0)
        spikes.append(z)
    return torch.stack(spikes)


def norse_li_sequence(x: torch.Tensor, tau_mem: float) -> torch.Tensor:
    """(T, B, ...) currents -> membranes through Norse's `li_box_feed_forward_step`."""
    params = LIBoxParameters(tau_mem_inv=torch.tensor(1.0 / tau_mem, dtype=x.dtype, device=x.device),
                             v_leak=torch.zeros((), dtype=x.dtype, device=x.device))
    state, out = LIBoxState(torch.zeros_like(x[0])), []
    for t in range(x.shape[0]):
        v, state = li_box_feed_forward_step(x[t], state, params, dt=1.0)
        out.append(v)
    return torch.stack(out)


class LIFLayer(nn.Module):
    """LIF neurons over a whole sequence: (T, B, ...) input currents -> (T, B, ...) spikes.

    A static input (B, ...) is presented at every one of `timesteps` steps. Only elementwise
    work loops over T; the synaptic layers around it run once on all T x B inputs.
    """

    update_ops = LIF_OPS

    def __init__(self, p: LIFParameters):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        if timesteps is not None:
            x = x.expand(timesteps, *x.shape)  # a view: the static current is not copied
        if self.p.impl == "norse":
            return norse_lif_sequence(x, self.p)
        return LIFSequence.apply(x, self.p)

    def step(self, x: torch.Tensor, v: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step for step-by-step simulation; `v` None starts from rest."""
        return lif_step(x, torch.zeros_like(x) if v is None else v, self.p)


class LeakyIntegratorLayer(nn.Module):
    """Non-spiking output neurons: (T, B, A) input currents -> (T, B, A) membrane voltages."""

    update_ops = LI_OPS

    def __init__(self, tau_mem: float, impl: NeuronImpl = "fused"):
        super().__init__()
        self.tau_mem, self.impl = tau_mem, impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "norse":
            return norse_li_sequence(x, self.tau_mem)
        return LISequence.apply(x, self.tau_mem)

    def step(self, x: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        return li_step(x, torch.zeros_like(x) if v is None else v, self.tau_mem)
