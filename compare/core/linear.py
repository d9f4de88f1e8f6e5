"""The linear layer every network here is built with: `nn.Linear`, whose product runs through
oneDNN instead of the BLAS on CPUs where the BLAS is slow.

torch's CPU `F.linear` calls MKL's sgemm, and MKL chooses its code by CPU vendor: on AMD CPUs
it takes its AVX2 path even where the CPU has AVX-512, while oneDNN (which torch also ships,
and already uses for every convolution) chooses by instruction set. On this project's AMD Zen 5
machine at one thread that made oneDNN 1.5-2.3x faster than MKL on every product of at least
4M multiply-adds, and slower on small ones, where its fixed cost of ~12 us per call dominates
(docs/performance.md, "Linear layers through oneDNN").

The kernel is chosen once per process, by machine (`LINEAR_KERNEL`: "onednn" on an x86-64 AMD
CPU with torch's oneDNN, "blas" otherwise), and per layer by its size alone (at least
`ONEDNN_MIN_WEIGHTS` weights), never by timing, so a run is reproducible on its machine. Both
kernels compute the same products in float32; their sums round in different orders, so a run
on an AMD CPU differs from one through MKL by float rounding (about 1e-7 relative per
product), as runs on two CPU models do. config.json records the kernel (`hardware`).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_MIN_WEIGHTS = 65_536  # below this a layer's products are too small for oneDNN to win
KERNELS = ("blas", "onednn")
ONEDNN_PRODUCT = getattr(torch.ops.mkldnn, "_linear_pointwise", None)  # x @ weight.T (+ bias)


def _cpu_vendor() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), None)
    except OSError:
        return None


def onednn_available() -> bool:
    """torch has oneDNN and its linear operator (x86-64 builds do)."""
    return (torch.backends.mkldnn.is_available() and ONEDNN_PRODUCT is not None
            and platform.machine() in ("x86_64", "AMD64"))


def machine_linear_kernel() -> str:
    """What this machine's linear layers use on the CPU: "onednn" on an AMD CPU where torch has
    oneDNN's linear operator, "blas" (torch's F.linear) otherwise."""
    return "onednn" if onednn_available() and _cpu_vendor() == "AuthenticAMD" else "blas"


LINEAR_KERNEL = machine_linear_kernel()


@contextlib.contextmanager
def linear_kernel(kernel: str) -> Iterator[None]:
    """Run the block's linear layers through `kernel` ("blas" or "onednn"; the benchmark and
    the tests compare the two)."""
    global LINEAR_KERNEL
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}; choose one of {KERNELS}")
    if kernel == "onednn" and not onednn_available():
        raise ValueError("this torch has no oneDNN linear operator")
    previous, LINEAR_KERNEL = LINEAR_KERNEL, kernel
    try:
        yield
    finally:
        LINEAR_KERNEL = previous


def onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias) by oneDNN; it takes strided operands, so transposes are views."""
    return ONEDNN_PRODUCT(x, weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """A linear layer's product and its two backward products, all by oneDNN (torch registers
    no derivative for its operator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = onednn_product(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
        grad_weight = onednn_product(grad.t(), x.t(), None) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (LINEAR_KERNEL == "onednn" and x.device.type == "cpu" and x.dim() == 2
            and x.dtype == weight.dtype == torch.float32 and weight.numel() >= ONEDNN_MIN_WEIGHTS)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through oneDNN where `uses_onednn` says so."""
    if uses_onednn(x, weight):
        return OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, state_dict and init) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def recorded_kernel() -> str:
    """What config.json's hardware records."""
    if LINEAR_KERNEL == "onednn":
        return f"onednn (float32 CPU layers of at least {ONEDNN_MIN_WEIGHTS:,} weights; blas below)"
    return "blas"
