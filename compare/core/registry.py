"""The method registry: a method is one module and one line here.

Each entry names the module attribute that holds the method's plug-in object (a
`compare.core.methods.TrainedMethod` or `DerivedMethod`). Modules are imported on first use:
this is the one place the core refers to the layer above it, by name only, so that a command
never loads a library (sinabs, norse) that its method does not need.
"""

from __future__ import annotations

import importlib

from compare.core.config import unknown_name_message
from compare.core.errors import UsageError

REGISTRY: dict[str, str] = {
    "dqn": "compare.baselines:DQN",
    "dsqn": "direct.dsqn:DSQN",
    "convert": "converters.convert:CONVERT",
    "ppo": "compare.baselines:PPO",
    "hybrid": "direct.hybrid:HYBRID",
}


def get_method(name: str):
    """The registered method `name` (a TrainedMethod or DerivedMethod)."""
    if name not in REGISTRY:
        raise UsageError(unknown_name_message("method", str(name), list(REGISTRY)))
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)
