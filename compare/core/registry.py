"""The method registry: every method, built in or installed, is an entry point.

A method is a plug-in object (a `compare.core.methods.TrainedMethod` or `DerivedMethod`)
declared under the entry-point group `compare.methods` of an installed package, as
`name = "module:attribute"`. The built-in methods are declared the same way, in this
project's pyproject.toml, so a method from another package is used exactly like them: in
`compare run`, in every sweep cell (each its own process), `compare table`, `eval`, `export`
and the API. Modules are imported on first use: the core refers to the layer above by name
only, and a command never loads a library (sinabs, norse) that its method does not need.
"""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.metadata import entry_points

from compare.core.config import unknown_name_message
from compare.core.errors import UsageError

GROUP = "compare.methods"
# What `compare run` and the API train when no method is named: the ANN baseline of the
# Q-methods, the cheapest run that exercises the whole harness (`make demo`).
DEFAULT_METHOD = "dqn"


@functools.cache
def _declared(path: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for point in entry_points(group=GROUP):
        if found.get(point.name, point.value) != point.value:
            raise UsageError(f"method {point.name!r} is declared twice ({found[point.name]} and {point.value}); "
                             "uninstall one of the packages")
        found[point.name] = point.value
    return found


def registered() -> dict[str, str]:
    """Every installed method's name and `module:attribute`. Read again when the import path
    changes."""
    declared = _declared(tuple(sys.path))
    if not declared:
        raise UsageError(f"no methods are installed (entry-point group {GROUP!r}): install this project "
                         "(make install, or pip install -e .)")
    return declared


def get_method(name: str):
    """The registered method `name` (a TrainedMethod or DerivedMethod)."""
    declared = registered()
    if name not in declared:
        raise UsageError(unknown_name_message("method", str(name), list(declared)))
    module, attr = declared[name].split(":")
    return getattr(importlib.import_module(module), attr)
