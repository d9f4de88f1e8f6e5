"""`Settings`: everything that defines a run; `config.json` is its JSON form plus provenance.

A run's settings are the method, the environment, the seed and budget, the protocol, and one
typed config object per section the method declares (`method.section_types()`): a trained
method has its learner's hyperparameters (under "dqn" or "ppo") and its own options (under
"method_options"); a derived method has its options (e.g. under "convert") and its source run.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field

from compare.core import config as cfgmod
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.protocols import Protocol
from compare.core.registry import get_method


@dataclass
class Settings:
    method: str
    game: str
    seed: int
    total_steps: int
    device: str
    preset: str | None
    protocol: Protocol
    sections: dict[str, object] = field(default_factory=dict)  # section key -> config object
    source: str | None = None   # derived methods: the run they start from
    label: str | None = None    # the user's name for this variant (`--label`), shown by `compare table`
    threads: int | None = None  # torch intra-op threads (`--threads`); None: default_threads(family)
    wandb: dict | None = None   # `--track wandb`: project, entity, group (None: TensorBoard files only)

    def __post_init__(self):
        if self.threads is None:
            self.threads = default_threads(resolve_env(self.game).family)
        if self.threads < 1:
            raise UsageError(f"threads={self.threads} must be a positive integer")

    @property
    def options(self):
        """The method's own options (`--set` keys such as timesteps or mlp_hidden)."""
        return self.sections[get_method(self.method).options_key]

    @property
    def learner(self):
        """The learner's hyperparameters (trained methods)."""
        return self.sections[get_method(self.method).learner.key]

    def to_dict(self) -> dict:
        data = {"method": self.method, "game": self.game, "seed": self.seed,
                "total_steps": self.total_steps, "device": self.device, "threads": self.threads}
        if self.preset is not None:
            data["preset"] = self.preset
        if self.source is not None:
            data["source"] = self.source
        if self.label is not None:
            data["label"] = self.label
        if self.wandb is not None:
            data["wandb"] = self.wandb
        data["protocol"] = dataclasses.asdict(self.protocol)
        return {**data, **{key: dataclasses.asdict(obj) for key, obj in self.sections.items()}}

    @classmethod
    def from_dict(cls, data: dict, where: str = "config.json") -> Settings:
        """Settings from a run's config.json; a file that is not one gets a UsageError."""
        if not isinstance(data, dict):
            raise UsageError(f"{where} is not a compare run config (not a JSON object)")
        method = get_method(data.get("method", "?"))
        try:
            return cls(method=data["method"], game=data["game"], seed=int(data["seed"]),
                       total_steps=int(data["total_steps"]), device=data["device"],
                       preset=data.get("preset"), protocol=cfgmod.from_dict(Protocol, data["protocol"]),
                       sections={key: cfgmod.from_dict(kind, data[key])
                                 for key, kind in method.section_types().items()},
                       source=data.get("source"), label=data.get("label"), threads=data.get("threads"),
                       wandb=data.get("wandb"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UsageError(f"{where} is not a compare run config ({type(e).__name__}: {e})") from None


def default_threads(family: str) -> int:
    """torch threads of a run that does not say: one for the small MinAtar and classic-control
    networks (more only adds synchronisation; measured in docs/sweeps.md, "Threads"), up to four for Atari's CNN."""
    return 1 if family in ("minatar", "classic") else max(1, min(4, os.cpu_count() or 1))


def use_compute_settings(settings: Settings) -> None:
    """Pin torch's intra-op threads to the run's setting and, on CUDA, cuDNN to deterministic
    kernels (without it cuDNN may pick its convolution algorithm by timing, and a seed would not
    give one result even on one GPU). Set before any work."""
    import torch  # here, not at the top: commands that only read the run store start without torch

    torch.set_num_threads(settings.threads)
    if settings.device.startswith("cuda"):
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.,:=+()-]{0,63}")


def check_label(label: str) -> str:
    """A variant label: 1-64 letters, digits, spaces and _.,:=+()- (no path characters)."""
    if not LABEL_PATTERN.fullmatch(label):
        raise UsageError(f"--label {label!r}: use 1-64 letters, digits, spaces and _.,:=+()- "
                         "starting with a letter or digit")
    return label
