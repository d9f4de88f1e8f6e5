"""`compare export RUN_DIR --target speck2f|speck2e|dynapcnn|nir --out DIR`.

Everything is written into a temporary folder beside `--out` and renamed into place at the
end, so a failed export leaves nothing behind.

- Chip targets take a `convert` run (its SNN: normalization, percentile, T) or a `dqn` run
  (converted first with the default conversion settings). They check the chip's layer rules,
  place the layers on cores with sinabs' mapping, discretize with sinabs, and evaluate the float
  and the discretized chip SNN through the shared harness.
- `nir` takes a `convert` run (sinabs network) or a `dsqn` run (Norse-loadable graph).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import nir
import torch
from torch import nn

from compare.core.accounting import CostMeter
from compare.core.errors import UsageError
from compare.core.evaluation import evaluate_policy, greedy_q_policy
from compare.core.runstore import Run, ensure_writable_dir, provenance, write_json
from compare.core.seeding import stream_seed
from compare.core.training import load_deployed, observation_shape
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
    CHIP_TARGETS,
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
from direct.nir_export import dsqn_to_nir

TARGETS = (*CHIP_TARGETS, "nir")
DQN_EXPORT_TIMESTEPS = 32  # T when a dqn run is converted on the way to a chip


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    timesteps: int | None = None           # default: the convert run's best T (32 for a dqn run)
    eval_episodes: int | None = None       # default: the run's protocol
    calibration_frames: int | None = None  # dqn runs only; default: the converter's


def export_run(run_dir: Path, target: str, out: Path, options: ExportOptions,
               echo: Callable[[str], None] = print) -> dict:
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists and is not an empty folder; choose a new one")
    run = Run.open(run_dir)
    method = run.config.get("method")
    allowed = ("convert", "dsqn") if target == "nir" else ("convert", "dqn")
    if method not in allowed:
        raise UsageError(f"{run_dir} is a {method!r} run; --target {target} takes a finished "
                         f"{' or '.join(allowed)} run")
    if not run.finished:
        raise UsageError(f"{run_dir} has not finished (no eval.json); export a finished run")
    ensure_writable_dir(out.parent)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        if target == "nir":
            record = (_dsqn_to_nir(run, staging, options) if method == "dsqn"
                      else _converted_to_nir(run, staging, options))
        else:
            record = _to_chip(run, target, staging, options, echo)
        record = {"target": target, "source_run": str(run.path.resolve()), "source_method": method,
                  **record, **provenance()}
        write_json(staging / "export.json", record)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the export is not
        try:
            if out.exists():
                out.rmdir()  # empty (checked above): the rename takes its place
            os.replace(staging, out)
        except OSError as e:  # another export filled --out meanwhile
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise UsageError(f"--out {out} was filled by another export while this one ran; this one is "
                             "discarded (choose a new --out to keep both)") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record


def _to_chip(run, target: str, folder: Path, options: ExportOptions, echo) -> dict:
    if run.config["method"] == "convert":
        _, source, convert_options, scales, _ = load_converted(run)
        timesteps = options.timesteps or reported_timesteps(run.read_eval())
    else:
        source = load_deployed(run.path, "cpu", methods=("dqn",))
        overrides = {} if options.calibration_frames is None else {"calibration_frames": options.calibration_frames}
        convert_options, scales = ConvertOptions(**overrides), None
        timesteps = options.timesteps or DQN_EXPORT_TIMESTEPS
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


def _converted_to_nir(run, folder: Path, options: ExportOptions) -> dict:
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
    nir.write(folder / "model.nir", graph)
    return {"game": settings.game, "seed": settings.seed, "file": "model.nir", **meta,
            "output_scale": 1.0 if convert_options.readout == "membrane" else scales[-1].tolist(),
            "load": "sinabs.from_nir(nir.read(path), batch_size, num_timesteps), then on every IAF "
                    "layer spike_fn = SingleSpike and min_v_mem = None (NIR's IF: one spike per step, "
                    "no membrane floor; sinabs' reader defaults to MultiSpike and a floor at -threshold): "
                    "converters.nir_export.load_converted_nir does both"}


def _dsqn_to_nir(run, folder: Path, options: ExportOptions) -> dict:
    deployed = load_deployed(run.path, "cpu", methods=("dsqn",))
    settings, spec, net = deployed.settings, deployed.spec, deployed.network
    if options.timesteps is not None and options.timesteps != net.timesteps:
        raise UsageError(f"this DSQN was trained with T={net.timesteps}; --timesteps must match or be left out")
    graph = dsqn_to_nir(net, observation_shape(spec, settings.protocol)[0])
    meta = {"timesteps": net.timesteps, "dt_seconds": 1e-3,
            "neuron": "LIF without synaptic current: v <- v + dt/tau (v_leak - v + r x), tau in seconds",
            "reset": f"hard: v <- {net.opts.v_reset:g} after a spike",
            "input": (f"the observation divided by {net.input_divisor:g}" if net.input_divisor else
                      "the observation as the environment gives it") + ", the same at each of T steps",
            "readout": net.opts.readout,
            "decoding": (f"{net.opts.decoder} over T of the output membrane" if net.output is not None
                         else "mean over T of the output"),
            "initial_state": "zero membranes at the start of every decision"}
    graph.metadata = {**meta, "exporter": "compare"}
    nir.write(folder / "model.nir", graph)
    return {"game": settings.game, "seed": settings.seed, "file": "model.nir", **meta,
            "load": "direct.nir_export.load_dsqn_nir(nir.read(path)) (Norse modules; norse's from_nir "
                    "lacks the LI output node and flattens the batch axis)"}
