"""ANN DQN -> SNN conversion with Sinabs (Rueckauer et al. 2017; Tan, Patel, Kozma 2021).

    normalize_ann(ann, calibration)  ->  weights rescaled layer by layer (a pure function)
    build_snn(normalized, T, ...)    ->  Sinabs IAF network (reset by subtraction)
    run_conversion(source_run, ...)  ->  a `convert` run: calibration, one evaluation per T

Normalization is this module's own, not `sinabs.utils.normalize_weights`: that function divides
both W_l and b_l by lambda_l without the lambda_(l-1) factor on W, which changes the function
of a network with biases (on CartPole the normalized ANN agreed with the original on only 60% of
states). Here lambda_l is the p-th percentile of layer l's positive activations on the
calibration frames (p = 100: the maximum), and
    W_l <- W_l * lambda_(l-1) / lambda_l,   b_l <- b_l / lambda_l,
so every hidden activation is divided by its lambda_l and the rates of IF neurons (threshold 1)
approximate them. With the `membrane` readout the output layer keeps the ANN's scale
(W_L <- W_L * lambda_(L-1)), and the normalized network computes exactly the ANN's Q-values.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import sinabs
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn

from compare.core.accounting import CostMeter
from compare.core.dqn import DQNLearner
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.evaluation import (
    EvalResult,
    evaluate_policy,
    greedy_q_policy,
    select_operating_point,
    visited_observations,
)
from compare.core.methods import DerivedMethod
from compare.core.networks import scale_input
from compare.core.provenance import provenance
from compare.core.runstore import Run, ensure_writable_dir
from compare.core.seeding import stream_seed
from compare.core.settings import Settings, use_compute_settings
from compare.core.spiking import (
    IAF_OPS,
    STATIC,
    SYNAPSES,
    CostRoles,
    NeuronOps,
    SpikingNetwork,
    sequential_feeds,
    stack_roles,
)
from compare.core.training import Deployed, eval_record, load_deployed
from converters.hardware import CHIP_TARGETS

Readout = Literal["membrane", "rate", "robust"]
# sinabs' LIF: v <- alpha v + x (one multiply, one add), then the threshold comparison
SINABS_LIF_OPS = NeuronOps(adds=2, mults=1)
MAX_SAMPLES = 2_000_000  # activation values kept per layer for a percentile (a random subsample)


@dataclass(frozen=True)
class ConvertOptions:
    timesteps: tuple[int, ...] = (8, 16, 32, 64, 128)
    percentile: float = 99.9           # 100: max-norm
    readout: Readout = "membrane"
    calibration_frames: int = 15_000   # observations from the ANN playing at calibration_epsilon
    calibration_epsilon: float = 0.05
    gap: float = 0.25                  # ANN Q-gap above which a state counts as decisive
    neuron: Literal["iaf", "lif"] = "iaf"  # lif: leaky (Sinabs LIF), off-chip only
    tau_mem: float = 20.0              # lif only, in time steps
    initial_membrane: float = 0.5      # membrane at the start of each decision, x threshold
    normalization: Literal["layer", "channel"] = "layer"  # channel: one lambda per channel/unit
    validation_episodes: int = 30      # per T, from their own seed stream: they choose the reported T

    def __post_init__(self):
        if not self.timesteps or any(t <= 0 for t in self.timesteps):
            raise UsageError(f"timesteps={','.join(map(str, self.timesteps))} must be positive integers")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"percentile={self.percentile} must lie in (0, 100]")
        if self.calibration_frames <= 0:
            raise UsageError(f"calibration_frames={self.calibration_frames} must be a positive integer")
        if self.tau_mem <= 0:
            raise UsageError(f"tau_mem={self.tau_mem} must be positive")
        if self.validation_episodes <= 0:
            raise UsageError(f"validation_episodes={self.validation_episodes} must be a positive integer")


def split_ann(q_network: nn.Module) -> tuple[nn.Sequential, float | None]:
    """The ANN's layer stack and the divisor it applies to its input (255 for pixels)."""
    return q_network.net, getattr(q_network, "input_divisor", None)


def layer_scales(ann: nn.Sequential, inputs: torch.Tensor, percentile: float,
                 per_channel: bool = False, batch_size: int = 512, seed: int = 0) -> list[torch.Tensor]:
    """lambda_l for every parameter layer: the percentile of its positive outputs (after the
    ReLU that follows it; the last layer's raw outputs) over all calibration inputs. One value
    per layer (shape (1,)), or with `per_channel` one per output channel or unit."""
    rng = np.random.default_rng(seed)
    param_idx = [i for i, m in enumerate(ann) if isinstance(m, SYNAPSES)]
    # Where to read each layer's activation: its ReLU if one follows, else its own output.
    taps = [i + 1 if i + 1 < len(ann) and isinstance(ann[i + 1], nn.ReLU) else i for i in param_idx]
    rows: list[list[np.ndarray]] = [[] for _ in taps]     # (positions, channels) samples
    maxima: list[np.ndarray | None] = [None for _ in taps]
    batches = max(1, -(-len(inputs) // batch_size))
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size]
            for i, layer in enumerate(ann):
                x = layer(x)
                if i in taps:
                    k = taps.index(i)
                    act = (x.movedim(1, -1) if x.dim() > 2 else x).reshape(-1, x.shape[1]).numpy()
                    batch_max = act.max(axis=0)
                    maxima[k] = batch_max if maxima[k] is None else np.maximum(maxima[k], batch_max)
                    budget = max(1, MAX_SAMPLES // act.shape[1] // batches)
                    if len(act) > budget:
                        act = act[rng.choice(len(act), budget, replace=False)]
                    rows[k].append(act)
    scales = []
    for k in range(len(taps)):
        sample = np.concatenate(rows[k])
        columns = [sample[:, c] for c in range(sample.shape[1])] if per_channel else [sample.ravel()]
        maxes = maxima[k] if per_channel else np.array([maxima[k].max()])
        values = []
        for column, top in zip(columns, maxes):
            positive = column[column > 0]
            if positive.size == 0:
                values.append(1.0)  # never active on the calibration set: leave it alone
            else:
                values.append(float(top) if percentile >= 100 else float(np.percentile(positive, percentile)))
        scales.append(torch.tensor(values, dtype=torch.float32))
    return scales


def normalize_ann(ann: nn.Sequential, scales: list[torch.Tensor], keep_output_scale: bool) -> nn.Sequential:
    """A copy of `ann` with W_l <- W_l lambda_(l-1)/lambda_l and b_l <- b_l/lambda_l (per
    output channel when the scales are). With `keep_output_scale` the last layer stays in Q
    units (W_L <- W_L lambda_(L-1))."""
    out = copy.deepcopy(ann)
    layers = [m for m in out if isinstance(m, SYNAPSES)]
    previous = torch.ones(1)
    with torch.no_grad():
        for n, (layer, scale) in enumerate(zip(layers, scales)):
            if n == len(layers) - 1 and keep_output_scale:
                scale = torch.ones(1)
            fan_in = layer.weight.shape[1]
            # After a Flatten, each input channel's scale covers its H x W positions.
            prev_in = previous.repeat_interleave(fan_in // previous.numel()) if previous.numel() > 1 else previous
            extra = (1,) * (layer.weight.dim() - 2)
            layer.weight.mul_(prev_in.view(1, -1, *extra) / scale.view(-1, 1, *extra))
            if layer.bias is not None:
                layer.bias.div_(scale)
            previous = scale
    return out


def spiking_model(normalized: nn.Sequential, options: ConvertOptions, timesteps: int) -> nn.Sequential:
    """Sinabs' conversion of a normalized ANN: each ReLU becomes an IAF (or LIF) layer, threshold
    1, reset by subtraction, no membrane floor; `(B*T, ...)` in, `(B*T, ...)` out."""
    layer_class = sl.IAFSqueeze if options.neuron == "iaf" else sl.LIFSqueeze
    extra = {} if options.neuron == "iaf" else {"tau_mem": options.tau_mem}
    return sinabs.from_model(
        normalized, num_timesteps=timesteps, spike_threshold=1.0, spike_fn=sa.SingleSpike, min_v_mem=None,
        reset_fn=sa.MembraneSubtract(), add_spiking_output=options.readout != "membrane",
        spike_layer_class=layer_class, kwargs_backend=extra).spiking_model


class ConvertedSNN(SpikingNetwork):
    """Sinabs spiking network run for T steps per decision.

    The analog observation is injected at every step; since it is static, the first layer's
    current is computed once and repeated. Readouts: `membrane` integrates the last layer's
    output without spiking (Q = its mean over T); `rate` counts an output IF layer's spikes;
    `robust` adds that layer's final membrane to the count (Tan et al. 2021).
    """

    def __init__(self, normalized: nn.Sequential, options: ConvertOptions, timesteps: int,
                 input_divisor: float | None, output_scale: torch.Tensor | float):
        super().__init__()
        self.timesteps = timesteps
        self.readout = options.readout
        self.neuron = options.neuron
        self.input_divisor = input_divisor
        self.output_scale = output_scale
        self.initial_membrane = options.initial_membrane
        self.first = normalized[0]
        self.rest = spiking_model(nn.Sequential(*list(normalized)[1:]), options, timesteps)
        self.spiking_layers = [m for m in self.rest.modules() if isinstance(m, sl.StatefulLayer)]
        self._state_shapes: list[torch.Size] | None = None
        # A copy of the ANN, out of the module tree (and so out of cost hooks), gives the
        # state shapes; `self.first` is the same module as normalized[0].
        self._ann = (copy.deepcopy(normalized),)

    def cost_roles(self) -> CostRoles:
        """The observation's layer is static; every later one is fed spikes (also the last: its
        membrane or spiking readout integrates spikes)."""
        synapses = [self.first, *(m for m in self.rest.modules() if isinstance(m, SYNAPSES))]
        return CostRoles(self.timesteps, stack_roles(synapses, STATIC),
                         tuple((m, IAF_OPS if self.neuron == "iaf" else SINABS_LIF_OPS) for m in self.spiking_layers),
                         feeds=sequential_feeds(list(self.rest.modules())[1:], self.spiking_layers))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        T = self.timesteps
        current = self.first(scale_input(obs, self.input_divisor))
        batch = current.shape[0]
        steps = current.unsqueeze(1).expand(batch, T, *current.shape[1:]).reshape(batch * T, *current.shape[1:])
        self._start_membranes(obs, batch)
        out = self.rest(steps).reshape(batch, T, -1)
        if self.readout == "membrane":
            return out.mean(dim=1)
        counts = out.sum(dim=1)
        if self.readout == "robust":
            counts = counts + self.spiking_layers[-1].v_mem.reshape(batch, -1)
        return counts / T * self.output_scale

    def _start_membranes(self, obs: torch.Tensor, batch: int) -> None:
        """Every decision starts from fresh states with each membrane at initial_membrane x
        threshold (the best single trick measured on CartPole: 74% -> 100% of the ANN's
        return at T=32)."""
        if self._state_shapes is None:  # each spiking layer's state: the ANN's ReLU outputs
            shapes, x = [], scale_input(obs[:1], self.input_divisor)
            with torch.no_grad():
                for layer in self._ann[0]:
                    x = layer(x)
                    if isinstance(layer, nn.ReLU):
                        shapes.append(x.shape[1:])
            if self.readout != "membrane":
                shapes.append(x.shape[1:])  # the spiking output layer
            self._state_shapes = shapes
        for layer, shape in zip(self.spiking_layers, self._state_shapes, strict=True):
            layer.init_state_with_shape((batch, *shape))
            layer.v_mem.fill_(self.initial_membrane * float(layer.spike_threshold))


def calibration_observations(ann_q: nn.Module, spec, protocol, frames: int, epsilon: float,
                             seed: int) -> torch.Tensor:
    """Observations visited by the ANN playing at `epsilon` in the run's own environment."""
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return ann_q(torch.as_tensor(obs)).argmax(dim=1).numpy()

    return torch.as_tensor(visited_observations(act, spec, protocol, frames, epsilon,
                                                lambda r: stream_seed(seed, "calibration", r)))


REPORTED_CONFORMANCE = ("conformance", "conformance_decisive", "mean_abs_q_error")  # in a derived run's eval.json


@dataclass
class ConformanceMeter:
    """Compares the SNN's choices with the ANN's on the very same states."""

    ann_q: nn.Module
    snn_q: nn.Module
    gap: float
    agree: list = dataclasses.field(default_factory=list)
    decisive: list = dataclasses.field(default_factory=list)
    q_error: list = dataclasses.field(default_factory=list)

    def act(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs)
        with torch.inference_mode():
            ann, snn = self.ann_q(x), self.snn_q(x)
        top2 = ann.topk(2, dim=1).values if ann.shape[1] > 1 else torch.cat([ann, ann], 1)
        self.agree.append((ann.argmax(1) == snn.argmax(1)).numpy())
        self.decisive.append((top2[:, 0] - top2[:, 1] >= self.gap).numpy())
        self.q_error.append((ann - snn).abs().mean(1).numpy())
        return snn.argmax(1).numpy()

    def summary(self) -> dict:
        agree, decisive = np.concatenate(self.agree), np.concatenate(self.decisive)
        return {"conformance": float(agree.mean()),
                "conformance_decisive": float(agree[decisive].mean()) if decisive.any() else None,
                "decisive_states": int(decisive.sum()), "states": int(agree.size),
                "mean_abs_q_error": float(np.concatenate(self.q_error).mean())}


def calibrate(ann_q: nn.Module, spec, protocol, options: ConvertOptions, seed: int) -> list[torch.Tensor]:
    """lambda_l of every layer, from observations of the ANN playing in its own environment."""
    ann, divisor = split_ann(ann_q)
    calibration = scale_input(calibration_observations(
        ann_q, spec, protocol, options.calibration_frames, options.calibration_epsilon, seed), divisor)
    return layer_scales(ann, calibration, options.percentile,
                        per_channel=options.normalization == "channel", seed=seed)


def load_converted(run: Run) -> tuple:
    """A finished convert run rebuilt: (its settings, the source's deployed ANN, options, layer
    scales, normalized ANN), from the source run's weights and the scales it recorded."""
    settings = Settings.from_dict(run.config, f"{run.path}/config.json")
    if settings.method != "convert" or not run.finished:
        raise UsageError(f"{run.path} is not a finished convert run")
    use_compute_settings(settings)
    source = load_deployed(Path(settings.source), "cpu", methods=("dqn",))
    try:
        scales = [torch.tensor(scale, dtype=torch.float32) for scale in run.config["layer_scales"]]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{run.path}/config.json has no valid layer_scales") from None
    options = settings.options
    normalized = normalize_ann(split_ann(source.network)[0], scales, keep_output_scale=options.readout == "membrane")
    return settings, source, options, scales, normalized


def converted_snn(normalized: nn.Sequential, options: ConvertOptions, timesteps: int, divisor: float | None,
                  scales: list[torch.Tensor]) -> ConvertedSNN:
    """The converted network at T = `timesteps`, in evaluation mode."""
    output_scale = 1.0 if options.readout == "membrane" else scales[-1]
    return ConvertedSNN(normalized, options, timesteps, divisor, output_scale).eval()


def reported_timesteps(record: dict) -> int:
    """The T a finished convert run reports (eval.json): chosen on validation episodes; runs made
    before that rule recorded the best T on their test episodes."""
    return int(record["selected_timesteps"] if "selected_timesteps" in record else record["best_timesteps"])


def load_converted_run(run: Run, device: str = "cpu") -> Deployed:
    """A finished convert run's SNN at its reported T; FGSM attacks it through its source ANN
    (the SNN has no useful input gradient)."""
    settings, source, options, scales, normalized = load_converted(run)
    timesteps = reported_timesteps(run.read_eval())
    snn = converted_snn(normalized, options, timesteps, split_ann(source.network)[1], scales)
    return Deployed(settings, source.spec, snn, DQNLearner, torch.device("cpu"),
                    attack_network=source.network, attack=f"transfer from the source ANN (SNN at T={timesteps})")


def run_conversion(settings: Settings, results_root: Path, name: str | None = None,
                   echo: Callable[[str], None] = lambda line: None) -> Run:
    """Convert the finished dqn run `settings.source` into a new `convert` run (the source is
    only read), under the source's protocol with the user's overrides; `echo` gets a line per step."""
    source = load_deployed(Path(settings.source), "cpu", methods=("dqn",))
    ann_q, spec, options, protocol = source.network, source.spec, settings.options, settings.protocol
    ensure_writable_dir(results_root)
    ann, divisor = split_ann(ann_q)
    echo(f"calibrating on {options.calibration_frames:,} frames of the source ANN playing")
    scales = calibrate(ann_q, spec, protocol, options, settings.seed)
    normalized = normalize_ann(ann, scales, keep_output_scale=options.readout == "membrane")
    # The source's settings make the conversion's identity in `compare table` (a conversion of
    # a different DQN is a different variant), even if the source run is later moved.
    config = {**settings.to_dict(), "source_settings": source.settings.to_dict(),
              "layer_scales": [scale.tolist() for scale in scales], **provenance()}
    with Run.create(results_root, spec.slug, "convert", settings.seed, config, name=name,
                    restart_unfinished=True) as run:
        _evaluate_conversion(run, settings, ann_q, normalized, divisor, scales, echo)
    return run


def _evaluate_conversion(run: Run, settings: Settings, ann_q: nn.Module, normalized: nn.Sequential,
                         divisor: float | None, scales: list[torch.Tensor], echo: Callable[[str], None]) -> None:
    """One evaluation per T (each logged as soon as it is done), then eval.json at the T chosen
    on validation episodes (`select_operating_point`); every T's test score stays in the sweep."""
    options, protocol, spec = settings.options, settings.protocol, resolve_env(settings.game)
    all_timesteps = sorted(set(options.timesteps))
    sweep = []
    for i, timesteps in enumerate(all_timesteps, 1):
        snn = converted_snn(normalized, options, timesteps, divisor, scales)
        entry: dict = {"timesteps": timesteps}
        if len(all_timesteps) > 1:  # a choice to make: on episodes of their own, not the reported ones
            validation = evaluate_policy(greedy_q_policy(snn, torch.device("cpu")), spec, protocol,
                                         options.validation_episodes, seed=stream_seed(settings.seed, "validation"))
            entry.update({"validation_mean_return": validation.summary()["mean_return"],
                          "validation_episode_returns": validation.episode_returns})
        conformance = ConformanceMeter(ann_q, snn, options.gap)
        with CostMeter(snn) as cost:
            # The source's final-evaluation episodes: SNN and ANN play the same games.
            result = evaluate_policy(conformance.act, spec, protocol, protocol.eval_episodes,
                                     seed=stream_seed(settings.seed, "final_eval"))
        entry.update({**result.summary(), **conformance.summary(), "neuro": cost.summary()})
        run.log_eval(entry)  # each T is kept as soon as it is done
        sweep.append(entry)
        validated = f"validation {entry['validation_mean_return']:.2f}, " if "validation_mean_return" in entry else ""
        echo(f"T={timesteps} ({i} of {len(all_timesteps)}): {validated}test {entry['mean_return']:.2f}, "
             f"conformance {entry['conformance']:.3f}")
    chosen, selection = select_operating_point(sweep)
    record = eval_record(settings, spec, EvalResult(chosen["episode_returns"], chosen["episode_lengths"]),
                         chosen["neuro"])
    record.update({"source": settings.source, "selected_timesteps": chosen["timesteps"], "selection": selection,
                   "ann_mean_return": Run(Path(settings.source)).read_eval()["mean_return"],
                   **{key: chosen[key] for key in REPORTED_CONFORMANCE},
                   "sweep": sweep})
    run.write_eval(record)


CONVERT = DerivedMethod(
    name="convert",
    description="ANN DQN -> SNN with Sinabs, swept over T (Rueckauer 2017, Tan 2021)",
    options_type=ConvertOptions,
    source_method="dqn",
    derive=run_conversion,
    load=load_converted_run,
    baseline="dqn",
    options_key="convert",
    exports={**{target: "converters.export:export_converted_to_chip" for target in CHIP_TARGETS},
             "nir": "converters.export:export_converted_nir"},
    presets={
        # Tan, Patel, Kozma 2021 (their code): IF neurons with subtractive reset from rest, layer-wise
        # 99.9th-percentile normalization, the robust firing-rate readout, T = 500.
        "tan2021": ConvertOptions(timesteps=(500,), readout="robust", percentile=99.9, normalization="layer",
                                  initial_membrane=0.0),
    },
)
