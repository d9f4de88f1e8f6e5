"""Centered RMSProp over one flat buffer: torch's arithmetic in one pass per operation.

`torch.optim.RMSprop(foreach=True)` runs every elementwise operation of its step once per
parameter tensor; on the small networks a CPU trains here (MinAtar's has six tensors, 133k
numbers) that per-tensor overhead is most of the step. `FlatRMSprop` keeps parameters,
gradients and optimizer state as views of one flat buffer each and runs the same operations,
in the same order, once on the whole buffer (on a CPU, the square root's argument first raised
to a floor that changes no result: SQRT_FLOOR). Elementwise arithmetic does not depend on how
the elements are grouped, so the updates are bit for bit torch's (`tests/test_optim.py`), and
`state_dict()` keeps torch's format, so a checkpoint written by either loads into the other.

What it assumes, as every network here satisfies: one parameter group, and every parameter in
the loss's graph (torch skips a parameter whose gradient is None; here every gradient is a
view that `zero_grad` zeroes, so such a parameter would still see its state decay).
"""

from __future__ import annotations

import torch

# torch's CPU square root is many times slower on 0 and on subnormal numbers than on normal ones
# (docs/performance.md, "Throughput of the MinAtar loop"; flush-to-zero does not help), and a centered
# RMSprop's `square_avg - grad_avg^2` is 0 for every weight that has never had a gradient.
# Raising it to the smallest normal number first changes no result: its root (1.1e-19) vanishes
# when eps is added, as does the root of anything below it (checked for the eps in use).
SQRT_FLOOR = torch.finfo(torch.float32).tiny


def _sqrt_floor_vanishes(eps: float) -> bool:
    return bool(torch.tensor(SQRT_FLOOR).sqrt() + eps == torch.tensor(eps))


def _flat_views(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    views, start = [], 0
    for tensor in like:
        views.append(flat[start:start + tensor.numel()].view_as(tensor))
        start += tensor.numel()
    return views


class FlatRMSprop(torch.optim.RMSprop):
    """torch's centered RMSprop (optionally with heavy-ball momentum), one buffer per quantity."""

    STATE_KEYS = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr: float, alpha: float, eps: float, momentum: float = 0.0):
        params = list(params)
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=True, foreach=True)
        self._params = params
        self._flat_param = torch.cat([p.detach().reshape(-1) for p in params])
        for p, view in zip(params, _flat_views(self._flat_param, params)):
            p.data = view
        self._flat_grad = torch.zeros_like(self._flat_param)
        for p, view in zip(params, _flat_views(self._flat_grad, params)):
            p.grad = view
        keys = self.STATE_KEYS if momentum > 0 else self.STATE_KEYS[:2]
        self._flat_state = {key: torch.zeros_like(self._flat_param) for key in keys}
        self._bind_state()

    def _bind_state(self) -> None:
        """Point every parameter's state at its views of the flat buffers, first copying in
        whatever state the parameter already has (a loaded checkpoint's), and derive what the
        step reads from the state and the group."""
        views = {key: _flat_views(flat, self._params) for key, flat in self._flat_state.items()}
        for i, p in enumerate(self._params):
            old = self.state.get(p, {})
            state = {"step": old.get("step", torch.zeros((), dtype=torch.float32)).float()}
            for key in self._flat_state:
                view = views[key][i]
                view.copy_(old[key]) if key in old else view.zero_()
                state[key] = view
            self.state[p] = state
        self._steps = [self.state[p]["step"] for p in self._params]
        # (on a GPU the root costs the same for every number, and the check would be a sync)
        self._sqrt_floor = (self._flat_param.device.type == "cpu"
                            and _sqrt_floor_vanishes(self.param_groups[0]["eps"]))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._bind_state()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient in place (gradients stay views of it; `set_to_none` is ignored)."""
        self._flat_grad.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        grad, param = self._flat_grad, self._flat_param
        square_avg, grad_avg = self._flat_state["square_avg"], self._flat_state["grad_avg"]
        torch._foreach_add_(self._steps, 1.0)
        # torch.optim.rmsprop._multi_tensor_rmsprop, centered, operation for operation
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        grad_avg.lerp_(grad, 1 - alpha)
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1)
        if self._sqrt_floor and float(avg.min()) >= 0:  # (a NaN or a negative: the plain path, as torch)
            avg.clamp_(min=SQRT_FLOOR)
        avg.sqrt_().add_(eps)
        if momentum > 0:
            buffer = self._flat_state["momentum_buffer"]
            buffer.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buffer, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)
