"""The one settings resolver: a command line (or a sweep cell) to a run's `Settings`.

`compare run`, `compare sweep` (its `--set` routing) and conversions all come through here:
the method gives its settings before overrides (`base_settings`), and every `--set KEY=VALUE`
goes to the one config object that has a field of that name: the protocol, or one of the
method's sections (its learner's hyperparameters, its own options).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compare.core import config as cfgmod
from compare.core.errors import UsageError
from compare.core.protocols import protocol_fields
from compare.core.registry import get_method
from compare.core.settings import Settings, check_label


def setting_text(value) -> str:
    """A Python value as its `--set` text (True -> true, (256, 256) -> 256,256, 1e-05 -> 1e-05):
    what the API passes to the resolver and the table writes in a column's label."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(setting_text(v) for v in value)
    return str(value)


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def setting_owners(method_name: str) -> dict[str, str]:
    """`--set` key -> "protocol" or the method's section that has a field of that name."""
    owners = {key: "protocol" for key in protocol_fields()}
    for section, kind in get_method(method_name).section_types().items():
        owners.update({key: section for key in cfgmod.field_names(kind) if key not in owners})
    return owners


def resolve_settings(method_name: str, game: str, seed: int, steps: int | None, protocol_name: str,
                     preset: str | None, overrides: dict[str, str], device: str,
                     source: Path | None = None, label: str | None = None, threads: int | None = None,
                     wandb: dict | None = None) -> Settings:
    method = get_method(method_name)
    if label is not None:
        check_label(label)
    if preset is not None and preset not in method.preset_names:
        raise UsageError(cfgmod.unknown_name_message(f"preset for {method_name}", preset, method.preset_names)
                         if method.preset_names else f"--preset {preset}: {method_name} has no presets")
    owners = setting_owners(method_name)
    unknown = [key for key in overrides if key not in owners]
    if unknown:
        raise UsageError(cfgmod.unknown_name_message(f"setting for {method_name}", unknown[0], sorted(owners)))
    settings = method.base_settings(game, seed, steps, protocol_name, preset, device, source)
    per_owner: dict[str, dict[str, str]] = {}
    for key, value in overrides.items():
        per_owner.setdefault(owners[key], {})[key] = value
    protocol = cfgmod.apply_overrides(settings.protocol, per_owner.pop("protocol", {}))
    sections = {key: cfgmod.apply_overrides(obj, per_owner.get(key, {})) for key, obj in settings.sections.items()}
    return dataclasses.replace(settings, protocol=protocol, sections=sections, label=label,
                               threads=threads or settings.threads, wandb=wandb)
