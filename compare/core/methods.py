"""The two kinds of method plug-in, with one interface the application uses for both.

- `TrainedMethod`: a network builder and a learner (`compare.core.learner`). The learner
  trains, checkpoints, resumes and evaluates; the method only says what network it deploys.
- `DerivedMethod`: builds a run from a finished run of `source_method` (a conversion).

Both answer the same questions, so nothing above this module asks which kind a method is:
    section_types()          the typed config sections its runs record (`--set` keys)
    preset_names             the names `--preset` takes; default_preset(family): None or a name
    default_sections(family, preset)   its sections under a preset (None: the family default)
    base_settings(...)       settings before `--set` overrides
    start(settings, ...)     make a finished run
    resume(run, ...)         continue a killed one
    deployed(run, device)    a finished run's deployed network and policy (`Deployed`)
    baseline                 the ANN method the table compares it with (scores and energy)
    source_method            the method whose run it starts from (None: trains from scratch)
    exports                  the `compare export` targets it takes, each with its exporter
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from compare.core.config import unknown_name_message
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.learner import Learner
from compare.core.protocols import check_protocol_family, get_protocol
from compare.core.runstore import Run
from compare.core.settings import Settings
from compare.core.training import Deployed, load_trained, resolve_device, resume_training_run, start_training_run

NetworkBuilder = Callable[[object, str, tuple[int, ...], int], nn.Module]  # (options, family, obs shape, actions)


@dataclass(frozen=True)
class ExportOptions:
    timesteps: int | None = None           # default: the exporter's (a convert run's reported T)
    eval_episodes: int | None = None       # default: the run's protocol
    calibration_frames: int | None = None  # runs that are converted on the way; default: the converter's


# (finished run, target, folder to write into, options, progress lines) -> export.json's record
Exporter = Callable[[Run, str, Path, ExportOptions, Callable[[str], None]], dict]


def exporter(method, target: str) -> Exporter:
    """The function a method declares for `target` in its `exports` ("module:function",
    imported on first use: an export target's libraries load only when it is used)."""
    module, attr = method.exports[target].split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class TrainedMethod:
    name: str
    description: str
    options_type: type                 # dataclass of the method's own settings (`--set` keys)
    learner: type[Learner]
    build_network: NetworkBuilder      # the network the method deploys (Q-network or actor)
    # Options a learner preset brings along (e.g. liu2022: T=64). The learner preset itself is
    # the learner's per-family default, the same for every method it trains: one learner per study.
    option_presets: dict[str, object] = field(default_factory=dict)
    options_key: str = "method_options"
    source_method: None = None
    exports: dict[str, str] = field(default_factory=dict)  # `compare export` target -> "module:function"

    @property
    def baseline(self) -> str:
        """The ANN method of its learner, named by the learner's key (dqn, ppo)."""
        return self.learner.key

    def section_types(self) -> dict[str, type]:
        return {self.learner.key: self.learner.config_type, self.options_key: self.options_type}

    @property
    def preset_names(self) -> list[str]:
        return list(self.learner.presets)

    def default_preset(self, family: str) -> str:
        return self.learner.family_presets[family]

    def default_sections(self, family: str, preset: str | None) -> dict[str, object]:
        preset = preset or self.default_preset(family)
        return {self.learner.key: self.learner.preset(preset),
                self.options_key: self.option_presets.get(preset, self.options_type())}

    def base_settings(self, game: str, seed: int, steps: int | None, protocol_name: str, preset: str | None,
                      device: str, source: Path | None) -> Settings:
        if source is not None:
            raise UsageError(f"--source is for methods that start from another run; {self.name} trains from scratch")
        spec = resolve_env(game)
        protocol = get_protocol(protocol_name)
        check_protocol_family(protocol_name, spec.family, spec.name)
        preset = preset or self.default_preset(spec.family)
        return Settings(self.name, spec.name, seed, steps if steps is not None else spec.budget(protocol),
                        resolve_device(device), preset, protocol, self.default_sections(spec.family, preset))

    def start(self, settings: Settings, results_root: Path, name: str | None = None, progress_factory=None) -> Run:
        return start_training_run(self, settings, results_root, name, progress_factory)

    def resume(self, run: Run, progress_factory=None) -> Run:
        return resume_training_run(self, run, progress_factory)

    def deployed(self, run: Run, device: str = "cpu") -> Deployed:
        return load_trained(self, run, device)


@dataclass(frozen=True)
class DerivedMethod:
    name: str
    description: str
    options_type: type
    source_method: str                 # the method of the finished run it starts from
    derive: Callable[..., Run]         # (settings, results root, name, echo) -> finished run; echo: progress lines
    load: Callable[[Run, str], Deployed]  # (finished run, device) -> its deployed network
    baseline: str                      # the ANN method its energy is compared with
    options_key: str = "method_options"
    presets: dict[str, object] = field(default_factory=dict)  # named options (`--preset`), e.g. a paper's
    exports: dict[str, str] = field(default_factory=dict)  # `compare export` target -> "module:function"

    def section_types(self) -> dict[str, type]:
        return {self.options_key: self.options_type}

    @property
    def preset_names(self) -> list[str]:
        return list(self.presets)

    def default_preset(self, family: str) -> None:
        return None

    def default_sections(self, family: str, preset: str | None) -> dict[str, object]:
        if preset is None:
            return {self.options_key: self.options_type()}
        if preset not in self.presets:
            raise UsageError(unknown_name_message(f"preset for {self.name}", preset, list(self.presets)))
        return {self.options_key: self.presets[preset]}

    def base_settings(self, game: str, seed: int, steps: int | None, protocol_name: str, preset: str | None,
                      device: str, source: Path | None) -> Settings:
        """Game, seed, budget and protocol come from the source run (read, never written)."""
        if source is None:
            raise UsageError(f"--method {self.name} needs --source RUN_DIR (a finished {self.source_method} run)")
        if device == "cuda":
            raise UsageError(f"--method {self.name} runs on the cpu (its conversion and chip simulation are CPU "
                             "code); --device cuda cannot be honoured: drop it or use --device cpu")
        run = Run.open(source)  # its config is a JSON object with a method
        method = run.config["method"]
        if method != self.source_method:
            raise UsageError(f"{source} is a {method!r} run; --method {self.name} needs a finished "
                             f"{self.source_method} run")
        if not run.finished:
            raise UsageError(f"{source} has not finished (no eval.json); --method {self.name} needs a "
                             f"finished {self.source_method} run")
        run.read_eval()  # a damaged source is refused before any work
        origin = Settings.from_dict(run.config, f"{source}/config.json")
        return Settings(self.name, origin.game, origin.seed, origin.total_steps, "cpu", preset, origin.protocol,
                        self.default_sections(resolve_env(origin.game).family, preset),
                        source=str(run.path.resolve()))

    def start(self, settings: Settings, results_root: Path, name: str | None = None, progress_factory=None) -> Run:
        """Derive the run; with a progress display asked for (`progress_factory`, None under
        --quiet), its steps as lines on stderr."""
        def echo(line: str) -> None:
            if progress_factory is not None:
                print(f"compare: {self.name}: {line}", file=sys.stderr, flush=True)

        return self.derive(settings, results_root, name, echo)

    def resume(self, run: Run, progress_factory=None) -> Run:
        raise UsageError(f"{run.path} is a {self.name!r} run; only training runs resume (start it again: "
                         f"the same command with --name {run.path.name} replaces it)")

    def deployed(self, run: Run, device: str = "cpu") -> Deployed:
        return self.load(run, device)
