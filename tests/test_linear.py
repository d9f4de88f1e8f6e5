"""Linear layers through oneDNN (compare.core.linear): the same products as torch's F.linear to
float rounding, forward and backward; chosen by machine and layer size, never by timing."""

import pytest
import torch
import torch.nn.functional as F

from compare.core import linear as kernels
from compare.core.linear import Linear, linear_kernel, onednn_available, uses_onednn
from compare.core.networks import build_ann

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch has no oneDNN linear operator")


def products(kernel: str, rows: int, bias: bool):
    torch.manual_seed(0)
    layer = Linear(1024, 128, bias=bias)
    x = torch.randn(rows, 1024, requires_grad=True)
    with linear_kernel(kernel):
        y = layer(x)
        (y * torch.linspace(-1, 1, 128)).sum().backward()
    return y.detach(), x.grad, layer.weight.grad, layer.bias.grad if bias else None


@needs_onednn
@pytest.mark.parametrize("rows", [1, 32, 256])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_gives_torchs_products_and_gradients_to_float_rounding(rows, bias):
    ours, blas = products("onednn", rows, bias), products("blas", rows, bias)
    for a, b in zip(ours, blas, strict=True):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))
    assert not torch.equal(ours[0], blas[0]) or rows == 1  # another kernel, not F.linear in disguise


@needs_onednn
def test_onednn_products_repeat_exactly():
    assert all(torch.equal(a, b) for a, b in zip(products("onednn", 32, True), products("onednn", 32, True)))


@needs_onednn
def test_the_kernel_is_chosen_by_layer_size_device_and_dtype():
    big, small = torch.zeros(128, 1024), torch.zeros(6, 128)
    x, y = torch.zeros(32, 1024), torch.zeros(32, 128)
    with linear_kernel("onednn"):
        assert uses_onednn(x, big) and not uses_onednn(y, small)
        assert not uses_onednn(x.double(), big.double())
        assert not uses_onednn(x[None], big)  # a batch of matrices: F.linear
    with linear_kernel("blas"):
        assert not uses_onednn(x, big)


@pytest.mark.parametrize("vendor, kernel", [("AuthenticAMD", "onednn"), ("GenuineIntel", "blas"), (None, "blas")])
def test_the_machine_rule_picks_onednn_on_amd_cpus_only(monkeypatch, vendor, kernel):
    monkeypatch.setattr(kernels, "_cpu_vendor", lambda: vendor)
    monkeypatch.setattr(kernels, "onednn_available", lambda: True)
    assert kernels.machine_linear_kernel() == kernel


def test_every_family_network_is_built_of_the_dispatching_layer():
    for family, shape in (("atari", (4, 84, 84)), ("minatar", (4, 10, 10)), ("classic", (4,))):
        layers = [m for m in build_ann(family, shape, 3).modules() if isinstance(m, torch.nn.Linear)]
        assert layers and all(type(m) is Linear for m in layers), family


def test_a_layer_loads_nn_linears_state_dict():
    plain, ours = torch.nn.Linear(300, 400), Linear(300, 400)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(5, 300)
    with linear_kernel("blas"):
        assert torch.equal(ours(x), F.linear(x, plain.weight, plain.bias))
