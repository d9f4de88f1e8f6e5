"""`compare export RUN_DIR --target TARGET --out DIR`: a finished run for a chip or as a NIR graph.

Each method declares the targets it takes and the function that exports its runs to each
(`exports`, compare.core.methods): the conversion pipeline's chip targets (speck2f, speck2e,
dynapcnn) for `convert` runs and ANN Q-network runs, `nir` for `convert` and `dsqn` runs (see
converters/export.py and direct/nir_export.py). Here: the checks every target shares, and the
folder: everything is written into a temporary folder beside `--out` and renamed into place at
the end, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from compare.core.errors import UsageError
from compare.core.methods import ExportOptions, exporter
from compare.core.provenance import provenance
from compare.core.registry import get_method, registered
from compare.core.runstore import Run, ensure_writable_dir, write_json


def targets() -> dict[str, list[str]]:
    """Every export target of the installed methods, with the methods that take it."""
    found: dict[str, list[str]] = {}
    for name in registered():
        for target in get_method(name).exports:
            found.setdefault(target, []).append(name)
    return found


def export_run(run_dir: Path, target: str, out: Path, options: ExportOptions,
               echo: Callable[[str], None] = print) -> dict:
    takers = targets()
    if target not in takers:
        raise UsageError(f"unknown target {target!r}; allowed: {', '.join(takers)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists and is not an empty folder; choose a new one")
    run = Run.open(run_dir)
    method = run.config.get("method")
    if method not in takers[target]:
        raise UsageError(f"{run_dir} is a {method!r} run; --target {target} takes a finished "
                         f"{' or '.join(takers[target])} run")
    if not run.finished:
        raise UsageError(f"{run_dir} has not finished (no eval.json); export a finished run")
    ensure_writable_dir(out.parent)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        record = exporter(get_method(method), target)(run, target, staging, options, echo)
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
