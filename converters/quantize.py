"""Post-training quantization of a trained DQN: the integer ANN a spiking network must beat.

    activation_scales(ann, calibration)  ->  one scale per synaptic layer's input
    QuantizedQNetwork(ann, scales, ...)  ->  weights and activations on the integer grid
    run_quantization(settings, ...)      ->  a `quantize` run: calibration, one evaluation

Weights: symmetric, per output channel, `weight_bits` wide. Inputs of every synaptic layer:
per tensor, `activation_bits` wide, unsigned for ReLU outputs and non-negative observations
(zero point 0), symmetric otherwise, the range set by the `percentile` of the values seen on
the calibration frames (the same frames the conversion calibrates on: the ANN playing in its
own environment, `converters.convert.calibration_observations`, same seed stream). A binary
observation (MinAtar's) is exact at any width and is left as it is. Biases and the output stay
in float (an integer kernel keeps biases in int32 at the product scale; the difference is below
float32 rounding here); then each bias is corrected for the mean shift rounding causes
(`bias_shifts`, on the calibration frames). With `activation_bits` = ceil(log2(T + 1)) this is Yan et al.'s
bit-matched ANN for an SNN of T steps (arXiv 2409.08290): equal information per activation.

Quantization library: none. torch.ao.quantization's eager flow is deprecated in torch 2.14 in
favour of torchao, whose post-training flows target large models' Linear layers (int8 weights
and dynamic int8 activations on its own kernels) and offer no 2-6 bit static activations for
convolutions; both rest on torch's `fake_quantize_per_*_affine` operators, used here directly.
The layers compute in float32 on the grid values (fake quantization): the rounding an integer
kernel applies to weights and activations, with float32 accumulation instead of int32 (sums
that differ at the level of float32 rounding).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compare.core.accounting import CostMeter, QuantizedNetwork
from compare.core.dqn import DQNLearner
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.evaluation import evaluate_policy
from compare.core.methods import DerivedMethod
from compare.core.networks import scale_input
from compare.core.provenance import provenance
from compare.core.runstore import Run, ensure_writable_dir
from compare.core.seeding import stream_seed
from compare.core.settings import Settings, use_compute_settings
from compare.core.spiking import SYNAPSES
from compare.core.training import Deployed, eval_record, load_deployed
from converters.convert import (
    REPORTED_CONFORMANCE,
    ConformanceMeter,
    ConvertOptions,
    calibration_observations,
    split_ann,
)

BITS = (2, 16)
BIAS_CORRECTION_FRAMES = 4096  # of the calibration frames, for the bias shifts (a mean per channel)


@dataclass(frozen=True)
class QuantizeOptions:
    weight_bits: int = 8
    activation_bits: int = 8             # ceil(log2(T + 1)): bit-matched to an SNN of T steps
    percentile: float = 100.0            # of each layer input's magnitudes on the calibration frames
    calibration_frames: int = ConvertOptions.calibration_frames
    calibration_epsilon: float = ConvertOptions.calibration_epsilon
    bias_correction: bool = True         # empirical bias correction on the calibration frames
    gap: float = ConvertOptions.gap      # ANN Q-gap above which a state counts as decisive

    def __post_init__(self):
        for name in ("weight_bits", "activation_bits"):
            bits = getattr(self, name)
            if not (isinstance(bits, int) and BITS[0] <= bits <= BITS[1]):
                raise UsageError(f"{name}={bits} must be an integer in [{BITS[0]}, {BITS[1]}]")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"percentile={self.percentile} must lie in (0, 100]")
        if self.calibration_frames <= 0:
            raise UsageError(f"calibration_frames={self.calibration_frames} must be a positive integer")


@dataclass(frozen=True)
class Grid:
    """One tensor's integer grid: value = scale x q, q in [low, high]."""
    scale: float
    low: int
    high: int


def input_grid(values: torch.Tensor, bits: int, percentile: float) -> Grid | None:
    """The grid of one layer's inputs from their calibration values; None for binary inputs
    (exact at any width)."""
    if bool(((values == 0) | (values == 1)).all()):
        return None
    signed = bool((values < 0).any())
    magnitude = values.abs().flatten()
    top = float(magnitude.max() if percentile >= 100 else torch.quantile(magnitude[:2**24].double(), percentile / 100))
    high = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    return Grid(max(top, 1e-12) / high, -high if signed else 0, high)


def layer_inputs(ann: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every synaptic layer of `ann` on `x`, in order."""
    inputs = []
    with torch.no_grad():
        for layer in ann:
            if isinstance(layer, SYNAPSES):
                inputs.append(x.flatten(1) if isinstance(layer, nn.Linear) else x)
            x = layer(x)
    return inputs


def synaptic_outputs(ann: nn.Sequential, x: torch.Tensor):
    """The output of every synaptic layer of `ann` on `x`, in order, one pass (lazily: one
    activation held at a time)."""
    with torch.no_grad():
        for layer in ann:
            x = layer(x)
            if isinstance(layer, SYNAPSES):
                yield x


class ActivationQuantizer(nn.Module):
    def __init__(self, grid: Grid):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.grid.scale, 0, self.grid.low, self.grid.high)


def quantized_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel rounding of a weight to `bits`."""
    high = 2 ** (bits - 1) - 1
    scale = (weight.abs().flatten(1).amax(dim=1) / high).clamp(min=1e-12)
    return torch.fake_quantize_per_channel_affine(weight, scale, torch.zeros_like(scale, dtype=torch.int32), 0,
                                                  -high, high)


class QuantizedQNetwork(QuantizedNetwork):
    """The DQN's layers with quantized weights, each synaptic layer's input rounded to its grid."""

    def __init__(self, ann: nn.Sequential, grids: list[Grid | None], input_divisor: float | None,
                 weight_bits: int, activation_bits: int):
        super().__init__()
        self.weight_bits, self.activation_bits, self.input_divisor = weight_bits, activation_bits, input_divisor
        layers, grids = [], list(grids)
        for layer in copy.deepcopy(ann):
            if isinstance(layer, SYNAPSES):
                grid = grids.pop(0)
                if grid is not None:
                    layers.append(ActivationQuantizer(grid))
                with torch.no_grad():
                    layer.weight.copy_(quantized_weight(layer.weight, weight_bits))
            layers.append(layer)
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(scale_input(obs, self.input_divisor))


def calibrated(ann_q: nn.Module, spec, protocol, options: QuantizeOptions,
               seed: int) -> tuple[list[Grid | None], list[list[float] | None]]:
    """Every synaptic layer's input grid and bias shift, from the calibration frames."""
    ann, divisor = split_ann(ann_q)
    observations = scale_input(calibration_observations(ann_q, spec, protocol, options.calibration_frames,
                                                        options.calibration_epsilon, seed), divisor)
    grids = [input_grid(values, options.activation_bits, options.percentile) for values in layer_inputs(ann, observations)]
    shifts = (bias_shifts(ann, QuantizedQNetwork(ann, grids, None, options.weight_bits, options.activation_bits),
                          observations[:BIAS_CORRECTION_FRAMES])
              if options.bias_correction else [None] * len(grids))
    return grids, shifts


def bias_shifts(ann: nn.Sequential, quantized: QuantizedQNetwork, x: torch.Tensor) -> list[list[float] | None]:
    """Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization"; on by default in
    Sony's Model Compression Toolkit): layer by layer from the input, each synaptic layer's bias
    is shifted by the mean difference, per output channel, between the float layer's outputs and
    the quantized one's on `x`, measured after the layers before it are corrected. Rounding
    weights shifts a layer's mean output, and the shift changes which of two near-equal Q-values
    is larger (docs/methods/quantize.md). `quantized` is corrected in place."""
    quantized_layers = [m for m in quantized.net if isinstance(m, SYNAPSES)]
    shifts: list[list[float] | None] = []
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for float_output, layer in zip(synaptic_outputs(ann, x), quantized_layers, strict=True):
            if layer.bias is None:
                shifts.append(None)
                continue
            hook = layer.register_forward_hook(lambda m, a, o: seen.__setitem__("quantized", o))
            quantized(x)
            hook.remove()
            difference = float_output - seen["quantized"]
            shift = difference.mean(dim=[d for d in range(difference.dim()) if d != 1])
            layer.bias.add_(shift)
            shifts.append(shift.tolist())
    return shifts


def quantized_network(ann_q: nn.Module, grids: list[Grid | None], shifts: list[list[float] | None],
                      options: QuantizeOptions) -> QuantizedQNetwork:
    ann, divisor = split_ann(ann_q)
    network = QuantizedQNetwork(ann, grids, divisor, options.weight_bits, options.activation_bits).eval()
    with torch.no_grad():
        for layer, shift in zip((m for m in network.net if isinstance(m, SYNAPSES)), shifts, strict=True):
            if shift is not None:
                layer.bias.add_(torch.tensor(shift, dtype=layer.bias.dtype))
    return network


def recorded_calibration(run: Run) -> tuple[list[Grid | None], list[list[float] | None]]:
    try:
        grids = [None if g is None else Grid(float(g["scale"]), int(g["low"]), int(g["high"]))
                 for g in run.config["activation_grids"]]
        shifts = [None if b is None else [float(v) for v in b] for b in run.config["bias_shifts"]]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{run.path}/config.json has no valid activation_grids and bias_shifts") from None
    if len(shifts) != len(grids):
        raise UsageError(f"{run.path}/config.json: activation_grids and bias_shifts differ in length")
    return grids, shifts


def load_quantized_run(run: Run, device: str = "cpu") -> Deployed:
    """A finished quantize run's network, rebuilt from its source's weights and the grids it
    recorded; FGSM attacks it through its source ANN (rounding has no useful input gradient)."""
    settings = Settings.from_dict(run.config, f"{run.path}/config.json")
    if settings.method != "quantize" or not run.finished:
        raise UsageError(f"{run.path} is not a finished quantize run")
    use_compute_settings(settings)
    source = load_deployed(Path(settings.source), "cpu", methods=("dqn",))
    network = quantized_network(source.network, *recorded_calibration(run), settings.options)
    return Deployed(settings, source.spec, network, DQNLearner, torch.device("cpu"),
                    attack_network=source.network, attack="transfer from the source ANN")


def run_quantization(settings: Settings, results_root: Path, name: str | None = None,
                     echo: Callable[[str], None] = lambda line: None) -> Run:
    """Quantize the finished dqn run `settings.source` into a new `quantize` run (the source is
    only read) and evaluate it on the source's final-evaluation episodes; `echo` gets a line per step."""
    source = load_deployed(Path(settings.source), "cpu", methods=("dqn",))
    ann_q, spec, options, protocol = source.network, source.spec, settings.options, settings.protocol
    ensure_writable_dir(results_root)
    echo(f"calibrating on {options.calibration_frames:,} frames of the source ANN playing")
    grids, shifts = calibrated(ann_q, spec, protocol, options, settings.seed)
    network = quantized_network(ann_q, grids, shifts, options)
    config = {**settings.to_dict(), "source_settings": source.settings.to_dict(),
              "activation_grids": [None if g is None else vars(g) for g in grids], "bias_shifts": shifts,
              **provenance()}
    with Run.create(results_root, spec.slug, "quantize", settings.seed, config, name=name,
                    restart_unfinished=True) as run:
        conformance = ConformanceMeter(ann_q, network, options.gap)
        echo(f"evaluating on the source's {protocol.eval_episodes} final-evaluation episodes")
        with CostMeter(network) as cost:
            result = evaluate_policy(conformance.act, resolve_env(settings.game), protocol, protocol.eval_episodes,
                                     seed=stream_seed(settings.seed, "final_eval"))
        record = eval_record(settings, spec, result, cost.summary())
        agreement = conformance.summary()
        record.update({"source": settings.source, "ann_mean_return": Run(Path(settings.source)).read_eval()["mean_return"],
                       **{key: agreement[key] for key in REPORTED_CONFORMANCE}})
        run.write_eval(record)
    return run


QUANTIZE = DerivedMethod(
    name="quantize",
    description="trained DQN -> integer ANN, post-training (int8; bit-matched to an SNN's T with activation_bits)",
    options_type=QuantizeOptions,
    source_method="dqn",
    derive=run_quantization,
    load=load_quantized_run,
    baseline="dqn",
    options_key="quantize",
)
