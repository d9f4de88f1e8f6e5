"""Exporters of the conversion pipeline (`compare export`; the app writes and renames the folder).

- Chip targets (speck2f, speck2e, dynapcnn) take a `convert` run (its SNN: normalization,
  percentile, T) or a run of an ANN Q-network (converted first with the default conversion
  settings). They check the chip's layer rules, place the layers on cores with sinabs' mapping,
  discretize with sinabs, and evaluate the float and the discretized chip SNN through the
  shared harness.
- `nir` takes a `convert` run (sinabs network).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nir
import torch
from torch import nn

from compare.core.accounting import CostMeter
from compare.core.errors import UsageError
from compare.core.evaluation import evaluate_policy, greedy_q_policy
from compare.core.methods import ExportOptions
from compare.core.runstore import Run, write_json, write_serialized
from compare.core.seeding import stream_seed
from compare.core.training import Deployed, load_deployed, observation_shape
from converters.convert import (
    ConformanceMeter,
    ConvertOptions,
    calibrate,
    load_converted,
    normalize_ann,
    reported_timesteps,
    spiking_model,
    split_ann,
)
from converters.hardware import (
    ChipSNN,
    chip_layers,
    chip_model_weights,
    describe_chip_model,
    discretize_layers,
    map_to_cores,
    report_text,
    resource_report,
    spiking_layers,
    write_chip_config,
)
from converters.nir_export import converted_to_nir

ANN_EXPORT_TIMESTEPS = 32  # T when an ANN's run is converted on the way to a chip


def export_converted_to_chip(run: Run, target: str, folder: Path, options: ExportOptions, echo) -> dict:
    """A convert run's SNN (its normalization and percentile; T: the reported one unless given)."""
    _, source, convert_options, scales, _ = load_converted(run)
    return _to_chip(run, target, folder, options, echo, source, convert_options, scales,
                    options.timesteps or reported_timesteps(run.read_eval()))


def export_ann_to_chip(run: Run, target: str, folder: Path, options: ExportOptions, echo) -> dict:
    """An ANN Q-network's run, converted first with the default conversion settings."""
    source = load_deployed(run.path, "cpu")
    overrides = {} if options.calibration_frames is None else {"calibration_frames": options.calibration_frames}
    return _to_chip(run, target, folder, options, echo, source, ConvertOptions(**overrides), None,
                    options.timesteps or ANN_EXPORT_TIMESTEPS)


def _to_chip(run: Run, target: str, folder: Path, options: ExportOptions, echo, source: Deployed,
             convert_options: ConvertOptions, scales: list[torch.Tensor] | None, timesteps: int) -> dict:
    settings, spec, ann_q = source.settings, source.spec, source.network
    if convert_options.neuron != "iaf":
        raise UsageError(f"this conversion uses {convert_options.neuron} neurons; the chips run IAF "
                         "neurons only (no leak)")
    if spec.family not in ("atari", "minatar"):
        raise UsageError(f"{spec.name} gives vector observations; the chips take spike events from "
                         "pixel frames (Atari or MinAtar)")
    ann, divisor = split_ann(ann_q)
    shape = observation_shape(spec, settings.protocol)[0]
    # The rules and the core map first: a network that cannot map fails before any calibration.
    cores = map_to_cores(chip_layers(ann, shape), target)
    if scales is None:
        echo(f"calibrating on {convert_options.calibration_frames} frames (dqn run: converting first)")
        scales = calibrate(ann_q, spec, settings.protocol, convert_options, settings.seed)
    layers = chip_layers(normalize_ann(ann, scales, keep_output_scale=False), shape)
    report = resource_report(layers, cores, target)
    float_model = spiking_layers(layers, timesteps)
    chip_model, chip_scales = discretize_layers(float_model)
    float_snn = ChipSNN(float_model, timesteps, divisor, scales[-1]).eval()
    chip_snn = ChipSNN(chip_model, timesteps, divisor, scales[-1]).eval()

    episodes = options.eval_episodes or settings.protocol.eval_episodes
    seed = stream_seed(settings.seed, "export_eval")
    echo(f"evaluating the discretized and the float chip SNN at T={timesteps}, {episodes} episodes each")
    conformance = ConformanceMeter(float_snn, chip_snn, convert_options.gap)
    with CostMeter(chip_snn) as cost:
        discretized = evaluate_policy(conformance.act, spec, settings.protocol, episodes, seed)
    floating = evaluate_policy(greedy_q_policy(float_snn, torch.device("cpu")), spec, settings.protocol,
                               episodes, seed)
    weights = torch.cat([m.weight.detach().flatten() for m in chip_model if isinstance(m, nn.Conv2d)])

    torch.save(chip_model_weights(chip_model), folder / "model.pt")
    write_json(folder / "resources.json", report)
    (folder / "resources.txt").write_text(report_text(report))
    chip_config = write_chip_config(float_model, _chip_input_shape(shape), cores, target, folder)
    return {
        "game": settings.game, "seed": settings.seed, "timesteps": timesteps,
        "cores": {str(k): v for k, v in cores.items()},
        "chip_layers": describe_chip_model(chip_model),
        "input_encoding": f"frame / {divisor:g}, deterministic IF rate code: floor(T x) spikes per "
                          "pixel over T steps" if divisor else "binary frame, deterministic IF rate code",
        "readout": "output spike count / T x output_scale; argmax is the action",
        "output_scale": scales[-1].tolist(),
        "conversion": dataclasses.asdict(convert_options),
        "discretization": {"scales": chip_scales, "weight_min": float(weights.min()),
                           "weight_max": float(weights.max()),
                           "thresholds": [float(m.spike_threshold) for m in chip_model[1::2]]},
        "float_snn": floating.summary(),
        "discretized_snn": {**discretized.summary(), **conformance.summary(), "neuro": cost.summary()},
        "source_mean_return": run.read_eval()["mean_return"],
        "chip_config": chip_config,
    }


def _chip_input_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(shape) if len(shape) == 3 else (shape[0], 1, 1)


def export_converted_nir(run: Run, target: str, folder: Path, options: ExportOptions, echo) -> dict:
    """A convert run's SNN as sinabs' NIR graph (IAF conversions only)."""
    _, source, convert_options, scales, normalized = load_converted(run)
    settings, spec = source.settings, source.spec
    divisor = split_ann(source.network)[1]
    if convert_options.neuron != "iaf":
        raise UsageError("NIR export takes IAF conversions only (sinabs' NIR reader changes LIF input scaling)")
    timesteps = options.timesteps or reported_timesteps(run.read_eval())
    model = spiking_model(normalized, convert_options, timesteps).eval()
    graph = converted_to_nir(model, observation_shape(spec, settings.protocol)[0], timesteps)
    meta = {"timesteps": timesteps, "dt": "one time step per graph step (IF neurons have no time constant)",
            "neuron": "IF: v <- v + x; at most one spike per step; no membrane floor",
            "reset": "subtract: v <- v - threshold after a spike",
            "input": (f"the observation divided by {divisor:g}" if divisor else
                      "the observation as the environment gives it") + ", the same at each of T steps",
            "readout": convert_options.readout,
            "decoding": "mean over T of the output (membrane readout: Q-values; rate: spike rate x "
                        "output_scale)",
            "initial_membrane": f"0 in the graph; the converter starts each decision at "
                                f"{convert_options.initial_membrane} x threshold (set v_mem after loading)"}
    graph.metadata = {**meta, "exporter": "compare"}
    write_serialized(folder / "model.nir", lambda buffer: nir.write(buffer, graph))
    return {"game": settings.game, "seed": settings.seed, "file": "model.nir", **meta,
            "output_scale": 1.0 if convert_options.readout == "membrane" else scales[-1].tolist(),
            "load": "sinabs.from_nir(nir.read(path), batch_size, num_timesteps), then on every IAF "
                    "layer spike_fn = SingleSpike and min_v_mem = None (NIR's IF: one spike per step, "
                    "no membrane floor; sinabs' reader defaults to MultiSpike and a floor at -threshold): "
                    "converters.nir_export.load_converted_nir does both"}
