"""The run store: one directory per run, every file written atomically.

    results/runs/<game>__<method>__seed<S>__<time>-<id>/
        config.json      fully resolved protocol, hyperparameters, versions, seed, git commit
        metrics.jsonl    training curve, one record per finished episode
        evals.jsonl      periodic evaluations during training
        eval.json        final evaluation (present only once the run has finished)
        checkpoint.pt    latest training state (networks, optimizer, counters, RNG states)
        replay.npz       the replay buffer at that checkpoint, when small enough to keep
        model.pt         the trained network's weights

JSON files are replaced with a rename, never rewritten in place; the .jsonl logs grow by one
whole line per `write` call, and a resume first cuts them back to the checkpoint's step.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from compare.core.errors import UsageError

CONFIG, METRICS, EVALS, EVAL, CHECKPOINT, REPLAY, WEIGHTS = (
    "config.json", "metrics.jsonl", "evals.jsonl", "eval.json", "checkpoint.pt", "replay.npz", "model.pt")


def _atomic_write(path: Path, write) -> None:
    """Write through `write(fileobj)` into a temp file beside `path`, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def append_jsonl(path: Path, record: dict) -> None:
    # One write() of one whole line on an O_APPEND descriptor: a kill leaves no half record.
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a foreign or damaged line; the rest of the log is still good
    return records


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in ("torch", "norse", "sinabs", "gymnasium", "ale-py", "numpy", "minatar"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the code that runs (with '-dirty' if it has local edits), if in a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict:
    """What config.json records besides the settings: versions, commit, time, command."""
    return {"versions": package_versions(), "python": platform.python_version(),
            "git_commit": git_commit(), "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["compare", *sys.argv[1:]])}


def ensure_writable_dir(path: Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {path}: {e.strerror or e}") from None
    return path


@dataclass
class Run:
    path: Path

    @classmethod
    def create(cls, results_root: Path, game_slug: str, method: str, seed: int, config: dict,
               name: str | None = None) -> "Run":
        """A new run directory, named `name` when given (sweeps), else game__method__seed__time-id."""
        runs = ensure_writable_dir(Path(results_root) / "runs")
        if name is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{game_slug}__{method}__seed{seed}__{stamp}-{secrets.token_hex(3)}"
        elif "/" in name or name.startswith(".") or not name.strip():
            raise UsageError(f"run name {name!r} must be a plain folder name")
        path = runs / name
        try:
            path.mkdir()
        except FileExistsError:
            raise UsageError(f"{path} already exists; resume it with --resume or choose another name") from None
        run = cls(path)
        write_json(path / CONFIG, config)
        return run

    @classmethod
    def open(cls, path: Path) -> "Run":
        path = Path(path)
        if not path.is_dir():
            raise UsageError(f"run directory {path} does not exist")
        if not (path / CONFIG).is_file():
            raise UsageError(f"{path} is not a run directory (no {CONFIG})")
        try:
            read_json(path / CONFIG)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"{path / CONFIG} is not valid JSON ({e})") from None
        return cls(path)

    @property
    def config(self) -> dict:
        return read_json(self.path / CONFIG)

    @property
    def finished(self) -> bool:
        return (self.path / EVAL).is_file()

    def log_metric(self, record: dict) -> None:
        append_jsonl(self.path / METRICS, record)

    def log_eval(self, record: dict) -> None:
        append_jsonl(self.path / EVALS, record)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / METRICS)

    def evals(self) -> list[dict]:
        return read_jsonl(self.path / EVALS)

    def truncate_logs(self, step: int) -> None:
        """Drop log records written after the checkpoint at `step` (they will be redone)."""
        for name in (METRICS, EVALS):
            kept = [r for r in read_jsonl(self.path / name) if r.get("step", 0) <= step]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            _atomic_write(self.path / name, lambda f: f.write(text.encode()))

    def save_checkpoint(self, payload: dict) -> None:
        _atomic_write(self.path / CHECKPOINT, lambda f: torch.save(payload, f))

    def load_checkpoint(self) -> dict | None:
        """The latest checkpoint, None if the run was killed before its first one. Loaded with
        `weights_only=True`: tensors, numbers and strings only, never code."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise UsageError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); "
                             "delete it to restart the run from scratch") from None

    def save_replay(self, state: dict, step: int) -> None:
        _atomic_write(self.path / REPLAY, lambda f: np.savez(f, step=np.int64(step), **state))

    def load_replay(self, step: int) -> dict | None:
        path = self.path / REPLAY
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            if int(data["step"]) != step:
                return None  # written for another checkpoint: do not mix the two
            return {key: data[key] for key in data.files if key != "step"}

    def save_weights(self, state_dict: dict) -> None:
        _atomic_write(self.path / WEIGHTS, lambda f: torch.save(state_dict, f))

    def load_weights(self, device: str = "cpu") -> dict:
        """The trained weights (model.pt), tensors only (`weights_only=True`)."""
        path = self.path / WEIGHTS
        if not path.is_file():
            raise UsageError(f"{self.path} has no trained weights ({WEIGHTS}); has the run finished?")
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise UsageError(f"{path} is truncated or corrupt ({type(e).__name__})") from None

    def write_eval(self, result: dict) -> None:
        write_json(self.path / EVAL, result)

    def read_eval(self) -> dict:
        return read_json(self.path / EVAL)


def list_runs(results_root: Path) -> list[Run]:
    runs = Path(results_root) / "runs"
    if not runs.is_dir():
        return []
    return [Run(p) for p in sorted(runs.iterdir()) if (p / CONFIG).is_file()]
