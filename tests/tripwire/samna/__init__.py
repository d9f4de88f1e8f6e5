"""Tripwire that stands in for samna during the tests (tests/conftest.py puts it first on the
path of this process and of every subprocess). Any import is logged, then fails at once: the
PyPI samna is an installer stub that reaches for the network when imported."""

import os
import traceback

_log = os.environ.get("COMPARE_SAMNA_LOG")
if _log:
    with open(_log, "a") as f:
        f.write("".join(traceback.format_stack()) + "\n")
raise ImportError("samna was imported (tests/tripwire): no code path may import it implicitly")
