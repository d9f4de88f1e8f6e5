"""The run store: one directory per run, every file written atomically.

    results/runs/<game>__<method>__seed<S>__<time>-<id>/
        config.json      fully resolved protocol, hyperparameters, versions, seed, git commit
        metrics.jsonl    training curve, one record per finished episode
        evals.jsonl      periodic evaluations during training
        eval.json        final evaluation (present only once the run has finished)
        checkpoint.pt    latest training state (networks, optimizer, counters, RNG states)
        replay/          the replay buffer at that checkpoint, when small enough to keep: its
                         small arrays (state.s<step>.npz) and its frames in chunks, each chunk
                         file written when its frames changed (frames-e<env>-c<chunk>.s<step>.npy)
        model.pt         the trained network's weights

JSON files are replaced with a rename, never rewritten in place; the .jsonl logs grow by one
whole line per `write` call, and a resume first cuts them back to the checkpoint's step.
A process that writes a run holds an exclusive OS lock on its `.lock` file (released by the
OS when the process dies, so a killed run leaves no stale lock); a second writer is refused.
Files are created with the usual mode (0644 under a 022 umask). Nothing read back executes
code: torch files load with `weights_only=True`, numpy files without pickles.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import gzip
import io
import json
import math
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compare.core.energy import counts_problem
from compare.core.errors import UsageError

CONFIG, METRICS, EVALS, EVAL, CHECKPOINT, REPLAY, WEIGHTS, LOCK = (
    "config.json", "metrics.jsonl", "evals.jsonl", "eval.json", "checkpoint.pt", "replay", "model.pt",
    ".lock")
MARKER = ".compare-run"  # written first in every run directory: only such a folder is ever taken over
MAX_NAME = 200  # characters in a run name
MAX_NAME_BYTES = 240  # its UTF-8 bytes: file systems allow 255, and temp names add a few
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # out of space, quota or file-size limit
BUSY_MARK = "is being written by process"  # in the one-line error a second writer gets (sweeps read it)


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def out_of_space(path: Path, error: OSError) -> UsageError:
    return UsageError(f"cannot write {path}: {os.strerror(error.errno)}; the files written before are intact "
                      "(free space, then run the command again: a training run continues with --resume)")


def _atomic_write(path: Path, write) -> None:
    """Write through `write(fileobj)` into a temp file beside `path`, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes the file private; results are shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in FULL:
            raise out_of_space(path, e) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file(path: Path, write) -> None:
    """Any file a command writes, atomically (`write(fileobj)` fills it): a unique temporary
    name, so two writers of one path never collide, and a full disk is one line."""
    _atomic_write(path, write)


def write_serialized(path: Path, serialize) -> None:
    """A file a library writes (`serialize(fileobj)`: torch.save, nir.write), serialized in
    memory first and then written atomically, so that a full disk is one line: torch's zip
    writer reports it as a bare RuntimeError, and h5py (under nir.write) crashed the process."""
    buffer = io.BytesIO()
    serialize(buffer)
    _atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def _write_torch(path: Path, obj) -> None:
    import torch  # torch is imported where a run file is: reading the store (`compare table`, `list`) needs none

    write_serialized(path, lambda buffer: torch.save(obj, buffer))


def _read_torch(path: Path, device: str, what: str, remedy: str = ""):
    """A torch file loaded with `weights_only=True` (tensors, numbers and strings, never code);
    a damaged or foreign one is one line naming `what`."""
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise UsageError(f"{what} is truncated or corrupt, or holds more than tensors ({type(e).__name__}){remedy}") from None


def write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from `path`; anything else (truncated, not JSON, not an object) is a
    UsageError naming the file."""
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is unreadable or truncated ({type(e).__name__}); it is not a {what}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds a JSON {type(data).__name__}, not a {what}")
    return data


def append_jsonl(path: Path, record: dict) -> None:
    """One write() of one whole line on an O_APPEND descriptor: a kill leaves no half record,
    and a short write (a full disk) is cut back off and reported, never taken as success."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
        except OSError as e:
            if e.errno in FULL:
                raise out_of_space(path, e) from None
            raise
        if written != len(line):
            os.ftruncate(fd, size)
            raise out_of_space(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    """The log's records: JSON objects with an integer `step`, one per line (any other line is
    foreign or damaged and skipped). A log committed compressed (`metrics.jsonl.gz`, as a
    study's results keep it) is read when the plain file is absent. Only a regular file is
    read: a FIFO of that name would block."""
    path, packed = Path(path), Path(f"{path}.gz")
    if path.is_file():
        text = path.read_text()
    elif packed.is_file():
        try:
            text = gzip.decompress(packed.read_bytes()).decode()
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise UsageError(f"{packed} is damaged ({type(e).__name__}); restore it or delete it") from None
    else:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a foreign or damaged line; the rest of the log is still good
        if isinstance(record, dict) and isinstance(record.get("step"), int) and not isinstance(record["step"], bool):
            records.append(record)
    return records


def ensure_writable_dir(path: Path) -> Path:
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UsageError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; create that "
                         "folder or give another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {path}: {e.strerror or e}") from None
    return path


def is_number(value) -> bool:
    """A finite int or float read from JSON (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def config_problem(config) -> str | None:
    """Why a config.json cannot be a run's (wrong or missing types), or None."""
    if not isinstance(config, dict):
        return f"holds a JSON {type(config).__name__}, not an object"
    for key, kind in (("method", str), ("game", str), ("seed", int), ("total_steps", int), ("protocol", dict)):
        value = config.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key} is {json.dumps(value)[:40]}, not a {kind.__name__}" if key in config else f"no {key}"
    if config["seed"] < 0 or config["total_steps"] < 1:
        return f"seed {config['seed']} or total_steps {config['total_steps']} out of range"
    return None


def eval_problem(result) -> str | None:
    """Why an eval.json cannot be tabulated (wrong or missing types), or None."""
    if not isinstance(result, dict):
        return f"holds a JSON {type(result).__name__}, not an object"
    if not is_number(result.get("mean_return")):
        return f"mean_return is {json.dumps(result.get('mean_return'))[:40]}, not a finite number"
    neuro = result.get("neuro", {})
    if not isinstance(neuro, dict) or not isinstance(neuro.get("first_layer", {}), dict):
        return "neuro is not an object of costs"
    for convention in neuro.get("first_layer", {}).values():  # runs made before the energy models
        if not (isinstance(convention, dict) and is_number(convention.get("energy_per_decision_j"))):
            return "neuro.first_layer holds an entry without a numeric energy_per_decision_j"
    if "counts" in neuro and (problem := counts_problem(neuro["counts"])):
        return problem
    sweep = result.get("sweep")
    if sweep is not None and not (isinstance(sweep, list) and sweep and all(
            isinstance(e, dict) and isinstance(e.get("timesteps"), int) and is_number(e.get("mean_return"))
            for e in sweep)):
        return "sweep is not a list of entries with timesteps and mean_return"
    return None


ROBUSTNESS = "robustness.json"  # FGSM scores (compare/app/robustness.py), merged per eps


def stored_robustness(path: Path) -> dict:
    """A run's robustness.json ({} if absent); a damaged or foreign one is a UsageError, so that
    nothing is merged into it."""
    if not path.is_file():
        return {}
    try:
        stored = read_json(path)
    except (OSError, ValueError) as e:
        stored, problem = None, f"unreadable ({type(e).__name__})"
    else:
        problem = "not an object of attacks"
    results = stored.get("fgsm", {}).get("results", {}) if isinstance(stored, dict) and isinstance(
        stored.get("fgsm", {}), dict) else None
    if isinstance(results, dict) and all(_is_eps(eps) and isinstance(entry, dict) and is_number(entry.get("mean_return"))
                                         for eps, entry in results.items()):
        return stored
    raise UsageError(f"{path} is {problem}: each fgsm result needs a numeric eps and a mean_return; "
                     "move it away to record new scores")


def _is_eps(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@dataclass
class Run:
    path: Path
    _lock_fd: int | None = field(default=None, repr=False, compare=False)
    tracker: object | None = field(default=None, repr=False, compare=False)  # mirrors the logs (tracking.py)

    @classmethod
    def create(cls, results_root: Path, game_slug: str, method: str, seed: int, config: dict,
               name: str | None = None, restart_unfinished: bool = False) -> Run:
        """A new run directory, named `name` when given (sweeps), else game__method__seed__time-id,
        returned holding its writer lock (use it as `with Run.create(...) as run:`). A named directory that a kill
        left without config.json is taken over; with `restart_unfinished` (runs that restart
        rather than resume, such as conversions) so is an unfinished run of the same method."""
        runs = ensure_writable_dir(Path(results_root) / "runs")
        if name is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{game_slug}__{method}__seed{seed}__{stamp}-{secrets.token_hex(3)}"
        elif "/" in name or "\0" in name or name.startswith(".") or not name.strip():
            raise UsageError(f"run name {name!r} must be a plain folder name")
        elif len(name) > MAX_NAME or len(name.encode()) > MAX_NAME_BYTES:
            raise UsageError(f"run name of {len(name)} characters ({len(name.encode())} bytes) is too long; at most "
                             f"{MAX_NAME} characters and {MAX_NAME_BYTES} bytes")
        path = runs / name
        try:
            path.mkdir()
            (path / MARKER).touch()
            run = cls(path).acquire()
        except FileExistsError:
            run = cls._take_over(path, method, restart_unfinished)
        with run.released_on_error():
            write_json(path / CONFIG, config)
        return run

    @classmethod
    def _take_over(cls, path: Path, method: str, restart_unfinished: bool) -> Run:
        """Reuse a named directory that holds no run to continue: one a kill left before its
        config.json, or (with `restart_unfinished`) an unfinished run of `method`. Returned
        emptied and holding its lock. A folder this project did not make (no marker, no
        config.json, not empty) is refused untouched: it may be the user's own."""
        if not path.is_dir() or path.is_symlink():
            raise UsageError(f"{path} exists and is not a run directory; choose another name or remove it")
        ours = (path / MARKER).is_file() or (path / CONFIG).is_file()
        if not ours and any(child.name != LOCK for child in path.iterdir()):
            raise UsageError(f"{path} exists and was not made by compare (no {CONFIG}, no {MARKER}); its files "
                             "are left as they are: choose another name or move them")
        if (path / CONFIG).is_file():
            try:
                same = read_json(path / CONFIG).get("method") == method
            except (OSError, ValueError, AttributeError):
                same = False
            if not (restart_unfinished and same and not (path / EVAL).is_file()):
                raise UsageError(f"{path} already exists; resume it with --resume or choose another name")
        run = cls(path).acquire()  # refuses if another process writes it
        with run.released_on_error():
            for child in path.iterdir():
                if child.name not in (LOCK, MARKER) and child.is_file():
                    child.unlink()
            shutil.rmtree(path / REPLAY, ignore_errors=True)
            (path / MARKER).touch()
        return run

    @classmethod
    def open(cls, path: Path) -> Run:
        path = Path(path)
        if not path.is_dir():
            raise UsageError(f"run directory {path} does not exist")
        if not (path / CONFIG).is_file():
            raise UsageError(f"{path} is not a run directory (no {CONFIG}); if a kill left it, start the run "
                             f"again with --name {path.name}")
        problem = config_problem(read_json_object(path / CONFIG, "compare run config"))
        if problem:
            raise UsageError(f"{path / CONFIG} is not a compare run config ({problem})")
        return cls(path)

    # -- one writer ---------------------------------------------------------------------------
    def acquire(self) -> Run:
        """Take this run's writer lock, or fail with one line naming the process that holds
        it. Temporary files a killed write left behind are removed."""
        try:  # the lock is this run's own file: a link (to a file anywhere) is never followed
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, _file_mode())
        except OSError as e:
            lock = self.path / LOCK
            if lock.is_symlink() or lock.is_dir():
                kind = "a symbolic link" if lock.is_symlink() else "a directory"
                raise UsageError(f"{lock} is {kind}; a run's lock must be its own file: delete it and try "
                                 "again") from None
            raise UsageError(f"cannot write to {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UsageError(f"{self.path} {BUSY_MARK} {holder} (one writer per run); wait for it to end or "
                             "stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        for leftover in self.path.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        return self

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = None

    # `with run.acquire():` / `with Run.create(...) as run:` hold the lock for the block.
    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @contextmanager
    def released_on_error(self):
        """Drop the lock if the block fails; keep it if it succeeds."""
        try:
            yield
        except BaseException:
            self.release()
            raise

    @property
    def config(self) -> dict:
        return read_json(self.path / CONFIG)

    def record(self, **facts) -> None:
        """Add what a run resolved when it started (e.g. where its replay lives) to its
        config.json, atomically. A directory without one (a benchmark's scratch run) keeps none."""
        if (self.path / CONFIG).is_file():
            write_json(self.path / CONFIG, {**self.config, **facts})

    @property
    def finished(self) -> bool:
        return (self.path / EVAL).is_file()

    def log_metric(self, record: dict) -> None:
        append_jsonl(self.path / METRICS, record)
        if self.tracker is not None:
            self.tracker.metric(record)

    def log_eval(self, record: dict) -> None:
        append_jsonl(self.path / EVALS, record)
        if self.tracker is not None:
            self.tracker.evaluation(record)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / METRICS)

    def evals(self) -> list[dict]:
        return read_jsonl(self.path / EVALS)

    def truncate_logs(self, step: int) -> None:
        """Drop log records written after the checkpoint at `step` (they will be redone)."""
        for name in (METRICS, EVALS):
            kept = [r for r in read_jsonl(self.path / name) if r.get("step", 0) <= step]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            _atomic_write(self.path / name, lambda f, text=text: f.write(text.encode()))

    def save_checkpoint(self, payload: dict) -> None:
        _write_torch(self.path / CHECKPOINT, payload)
        if self.tracker is not None:  # what a resume keeps is on disk for TensorBoard too
            self.tracker.flush()

    def load_checkpoint(self) -> dict | None:
        """The latest checkpoint, None if the run was killed before its first one. Loaded with
        `weights_only=True`: tensors, numbers and strings only, never code."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        return _read_torch(path, "cpu", f"checkpoint {path}", "; delete it to restart the run from scratch")

    def save_replay(self, state: dict, chunks: dict[str, np.ndarray], files: dict[str, int],
                    step: int) -> dict[str, int]:
        """Save a replay at the checkpoint of `step`: `state` (small arrays) whole, and of its frame
        chunks only those in `chunks` (changed since the last save); the others stay in the files
        `files` names (chunk -> step of its file). Returns the chunk -> step map of this save.
        Nothing of the previous save is removed until `prune_replay`, after the checkpoint."""
        folder = self.path / REPLAY
        folder.mkdir(exist_ok=True)
        for name, frames in chunks.items():
            _atomic_write(folder / f"{name}.s{step}.npy", lambda f, a=frames: np.save(f, a, allow_pickle=False))
        files = {**files, **dict.fromkeys(chunks, step)}
        names = sorted(files)
        _atomic_write(folder / f"state.s{step}.npz",
                      lambda f: np.savez(f, chunk_names=np.array(names, dtype=str),
                                         chunk_steps=np.array([files[n] for n in names], dtype=np.int64), **state))
        return files

    def load_replay(self, step: int) -> tuple[dict, dict[str, np.ndarray], dict[str, int]] | None:
        """The replay saved with the checkpoint of `step`: its small arrays, its frame chunks and
        their chunk -> step map; None if none was saved for that step."""
        path = self.path / REPLAY / f"state.s{step}.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {key: data[key] for key in data.files}
            files = dict(zip(state.pop("chunk_names").tolist(), state.pop("chunk_steps").tolist(), strict=True))
            chunks = {}
            for name, saved in files.items():
                path = self.path / REPLAY / f"{name}.s{saved}.npy"
                chunks[name] = np.load(path, allow_pickle=False)
        except Exception as e:  # zipfile, numpy and OS errors of a damaged or missing file
            raise UsageError(f"{path} is truncated or corrupt ({type(e).__name__}); delete {self.path / REPLAY} "
                             "to resume without it (the replay then refills before updates resume)") from None
        return state, chunks, files

    def prune_replay(self, step: int, files: dict[str, int]) -> None:
        """After the checkpoint of `step` is on disk: drop replay files no longer needed."""
        keep = {f"state.s{step}.npz", *(f"{name}.s{saved}.npy" for name, saved in files.items())}
        for child in (self.path / REPLAY).iterdir():
            if child.name not in keep and not child.name.startswith("."):
                child.unlink(missing_ok=True)

    def save_weights(self, state_dict: dict) -> None:
        _write_torch(self.path / WEIGHTS, state_dict)

    def load_weights(self, device: str = "cpu") -> dict:
        """The trained weights (model.pt), tensors only (`weights_only=True`)."""
        path = self.path / WEIGHTS
        if not path.is_file():
            raise UsageError(f"{self.path} has no trained weights ({WEIGHTS}); has the run finished?")
        return _read_torch(path, device, str(path))

    def write_eval(self, result: dict) -> None:
        write_json(self.path / EVAL, result)
        if self.tracker is not None:
            self.tracker.final(result)

    def read_eval(self) -> dict:
        result = read_json_object(self.path / EVAL, "run's final evaluation")
        if "mean_return" not in result:
            raise UsageError(f"{self.path / EVAL} is not a final evaluation (no mean_return)")
        return result


def list_runs(results_root: Path) -> list[Run]:
    runs = Path(results_root) / "runs"
    if not runs.is_dir():
        return []
    return [Run(p) for p in sorted(runs.iterdir()) if (p / CONFIG).is_file()]
