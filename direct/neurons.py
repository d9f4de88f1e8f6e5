"""Spiking neurons for directly trained networks: a functional core and thin layer modules.

The LIF neuron is Norse's current-free ("box") LIF, `norse.torch.functional.lif_box`:
    v <- v + dt * tau_mem_inv * (v_leak - v + x);  z = H(v - v_th);  reset
With dt = 1, tau_mem_inv = 1/tau and v_leak = 0 this is the DSQN paper's v <- v + (x - v)/tau.
Two things Norse's step does not offer, and the DSQN paper uses, are added here: the ATan
surrogate gradient and a reset whose spike is detached from the graph. The other surrogates
are Norse's own (`norse.torch.functional.threshold`), and the output layer is Norse's
current-free leaky integrator (`li_box_feed_forward_step`). `tests/test_dsqn.py` checks this
step against Norse's on the same input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from norse.torch.functional.leaky_integrator_box import (
    LIBoxParameters, LIBoxState, li_box_feed_forward_step)
from norse.torch.functional.threshold import threshold as norse_threshold
from torch import nn

Surrogate = Literal["atan", "super", "triangle", "tanh", "circ", "heavi_erfc"]
SURROGATES = ("atan", "super", "triangle", "tanh", "circ", "heavi_erfc")


class ATanSpike(torch.autograd.Function):
    """Heaviside forward; gradient alpha/2 / (1 + (pi/2 * alpha * x)^2) (Fang et al. 2021)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        return grad_output * (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2), None


def spike(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    """Heaviside step of `x` (membrane minus threshold) with a surrogate gradient."""
    if surrogate == "atan":
        return ATanSpike.apply(x, alpha)
    return norse_threshold(x, surrogate, alpha)


@dataclass(frozen=True)
class LIFParameters:
    tau_mem: float = 2.0          # v <- v + (x - v) / tau_mem
    v_th: float = 1.0
    v_reset: float = 0.0
    reset: Literal["hard", "soft"] = "hard"   # hard: v <- v_reset; soft: v <- v - v_th
    detach_reset: bool = True     # the reset does not carry gradient (DSQN reference code)
    surrogate: Surrogate = "atan"
    alpha: float = 2.0


def lif_step(x: torch.Tensor, v: torch.Tensor, p: LIFParameters) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the current-free LIF neuron: returns (spikes, new membrane)."""
    v = v + (x - v) / p.tau_mem
    z = spike(v - p.v_th, p.surrogate, p.alpha)
    zr = z.detach() if p.detach_reset else z
    if p.reset == "hard":
        v = v * (1 - zr) + zr * p.v_reset
    else:
        v = v - zr * p.v_th
    return z, v


def li_step(x: torch.Tensor, v: torch.Tensor, tau_mem: float) -> torch.Tensor:
    """One step of Norse's current-free leaky integrator: v <- v + (x - v) / tau_mem."""
    v_new, _ = li_box_feed_forward_step(x, LIBoxState(v), LIBoxParameters(
        tau_mem_inv=torch.as_tensor(1.0 / tau_mem), v_leak=torch.as_tensor(0.0)), dt=1.0)
    return v_new


class LIFLayer(nn.Module):
    """LIF neurons over a whole sequence: (T, B, ...) input currents -> (T, B, ...) spikes.

    A static input (B, ...) is presented at every one of `timesteps` steps. Only elementwise
    work loops over T; the synaptic layers around it run once on all T x B inputs.
    """

    is_spiking = True  # counted by compare.accounting

    def __init__(self, p: LIFParameters):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        static = timesteps is not None
        steps = timesteps if static else x.shape[0]
        v = torch.zeros_like(x if static else x[0])
        out = []
        for t in range(steps):
            z, v = lif_step(x if static else x[t], v, self.p)
            out.append(z)
        return torch.stack(out)

    def step(self, x: torch.Tensor, v: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step for step-by-step simulation; `v` None starts from rest."""
        return lif_step(x, torch.zeros_like(x) if v is None else v, self.p)


class LeakyIntegratorLayer(nn.Module):
    """Non-spiking output neurons: (T, B, A) input currents -> (T, B, A) membrane voltages."""

    def __init__(self, tau_mem: float):
        super().__init__()
        self.tau_mem = tau_mem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            v = li_step(x[t], v, self.tau_mem)
            out.append(v)
        return torch.stack(out)

    def step(self, x: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        return li_step(x, torch.zeros_like(x) if v is None else v, self.tau_mem)
