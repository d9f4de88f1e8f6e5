"""Sweeps over games x methods x seeds (`compare sweep`), on an existing engine.

Each cell is one ordinary `compare run` (a subprocess `python -m compare run ...`), writing an
ordinary run into the run store under a name fixed by the sweep and the cell:
`<game>__<method>__seed<S>__sweep-<id>`, where <id> hashes the sweep's definition. Rerunning
the same sweep therefore finds its cells again: a finished cell is skipped, an interrupted
training cell is resumed (`compare run --resume`), a failed or interrupted conversion is redone.

Cells run in two stages: training cells, then cells of derived methods (`convert`), each given
the cell of its source method (`dqn`) with the same game and seed as `--source` (only when that
cell finished). Within a stage the launcher runs the cells in parallel: `local` (K worker processes here), `ray` (Ray tasks on a running cluster
or a local one), `slurm` (one submitit job array).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import queue
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

from compare.app.resolve import parse_overrides, resolve_settings, setting_owners
from compare.core.config import unknown_name_message
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.protocols import get_protocol
from compare.core.registry import get_method
from compare.core.runstore import BUSY_MARK, ensure_writable_dir
from compare.core.seeding import MAX_SEED

LAUNCHERS = ("local", "ray", "slurm")
MAX_SWEEP_SEEDS = 10_000  # seeds one sweep may list (a range is checked before it is built)
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
EXTRAS = {"ray": ("ray", "pip install -e '.[ray]'"), "slurm": ("submitit", "pip install -e '.[slurm]'")}


@dataclass(frozen=True)
class Cell:
    game: str
    method: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.game} {self.method} seed {self.seed}"

    @property
    def source(self) -> Cell | None:
        """The cell whose finished run this cell starts from (derived methods), else None."""
        method = get_method(self.method).source_method
        return None if method is None else Cell(self.game, method, self.seed)


DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SweepSpec:
    games: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int | None = None
    protocol: str = "nature"
    presets: tuple[str, ...] = ()                 # --preset names, each given to every cell whose method has it
    overrides: tuple[tuple[str, str], ...] = ()   # --set pairs, given to every cell that has the key
    launcher: str = "local"
    workers: int = 1
    results: str = "results"
    ray_address: str | None = None                # None: start a local Ray instance
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    slurm_cluster: str = "slurm"                  # "local": submitit's local executor
    slurm_time_min: int = 24 * 60                 # each Slurm job's time limit (a cell past it resumes)
    track: str = "tensorboard"                    # wandb: every training cell also logs to W&B, grouped
    device: str = "auto"                          # every training cell's --device (cuda: never the CPU)

    @property
    def sweep_id(self) -> str:
        """Hash of what defines the runs (not how they are launched)."""
        what = {"games": self.games, "methods": self.methods, "seeds": self.seeds, "steps": self.steps,
                "protocol": self.protocol, "overrides": self.overrides}
        if self.presets:  # (absent from older sweeps' ids, so their cells still resume)
            what["presets"] = self.presets
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]

    def cells(self) -> list[Cell]:
        """Training cells first, then derived ones (each after its source cell)."""
        cells = [Cell(g, m, s) for m in self.methods for g in self.games for s in self.seeds]
        return [c for c in cells if c.source is None] + [c for c in cells if c.source is not None]

    def run_name(self, cell: Cell) -> str:
        return f"{resolve_env(cell.game).slug}__{cell.method}__seed{cell.seed}__sweep-{self.sweep_id}"

    def run_dir(self, cell: Cell) -> Path:
        return Path(self.results) / "runs" / self.run_name(cell)

    @property
    def threads(self) -> int:
        """torch (and OpenMP/MKL) threads of each cell: its share of the CPUs, so that cells side
        by side do not spin against each other."""
        return max(1, int(self.cpus_per_run))


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-4' or '0,2,5' (or a mix: '0-2,7')."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                if hi < lo:
                    raise ValueError
                if hi > MAX_SEED or hi - lo >= MAX_SWEEP_SEEDS:  # checked before the list is built
                    raise UsageError(f"--seeds {text!r}: at most {MAX_SWEEP_SEEDS:,} seeds from 0 to {MAX_SEED}")
                seeds += range(lo, hi + 1)
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise UsageError(f"--seeds {text!r} is not a seed range; use e.g. 0-4 or 0,2,5") from None
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise UsageError(f"--seeds {text!r} must name seeds from 0 to {MAX_SEED}, e.g. 0-4")
    return tuple(dict.fromkeys(seeds))


def _list(value) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(v).strip() for v in items if str(v).strip())


def _number(name: str, value, kind: type, minimum: float):
    """`value` (from the command line or TOML) as an int or float of at least `minimum`."""
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and float(value) != number) or not math.isfinite(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{name}={value!r} must be {'an integer' if kind is int else 'a number'}") from None
    if number < minimum:
        raise UsageError(f"{name}={value!r} must be at least {minimum:g}")
    return number


def _text(name: str, value) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{name}={value!r} must be a string")
    return value


def make_spec(games, methods, seeds, steps=None, protocol="nature", presets=(), overrides=(), launcher="local",
              workers=1, results="results", ray_address=None, cpus_per_run=1.0, gpus_per_run=0.0,
              slurm_cluster="slurm", slurm_time_min=24 * 60, track="tensorboard", device="auto") -> SweepSpec:
    """A checked sweep: every name and every cell's settings known good before anything starts."""
    games_, methods_ = _list(games), _list(methods)
    if not games_ or not methods_:
        raise UsageError("a sweep needs at least one game and one method")
    games_ = tuple(resolve_env(g).name for g in games_)
    for kind, names in (("game", games_), ("method", methods_)):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"the sweep lists the {kind} {twice[0]} more than once (names that mean the same "
                             f"{kind} count as one); give each once")
    for m in methods_:
        source = get_method(m).source_method
        if source is not None and source not in methods_:
            raise UsageError(f"{m} cells start from the {source} cell of their game and seed: add {source} "
                             "to the methods")
    protocol = _text("protocol", protocol)
    get_protocol(protocol)
    if launcher not in LAUNCHERS:
        raise UsageError(f"unknown launcher {launcher!r}; allowed: {', '.join(LAUNCHERS)}")
    pairs = override_pairs(overrides)
    spec = SweepSpec(games_, methods_, parse_seeds(seeds), None if steps is None else _number("steps", steps, int, 1),
                     protocol, _list(presets), tuple(sorted(pairs.items())), launcher,
                     _number("workers", workers, int, 1),
                     _text("results", str(results)), ray_address, _number("cpus_per_run", cpus_per_run, float, 0),
                     _number("gpus_per_run", gpus_per_run, float, 0), slurm_cluster,
                     _number("slurm_time_min", slurm_time_min, int, 1), _text("track", track), _text("device", device))
    if spec.track not in ("tensorboard", "wandb"):
        raise UsageError(f"track={spec.track!r}: allowed: tensorboard, wandb")
    if spec.device not in DEVICES:
        raise UsageError(f"device={spec.device!r}: allowed: {', '.join(DEVICES)}")
    if spec.launcher == "slurm" and spec.gpus_per_run != int(spec.gpus_per_run):
        raise UsageError(f"gpus_per_run={spec.gpus_per_run:g}: Slurm gives each cell whole GPUs; use an integer "
                         "(a fraction would round down, and a cell with --device auto would run on the CPU)")
    for key, _ in spec.overrides:
        if not any(key in accepted_keys(m) for m in methods_):
            raise UsageError(f"--set {key}: no method of this sweep has a setting of that name")
    for name in spec.presets:
        if not any(name in get_method(m).preset_names for m in methods_):
            raise UsageError(f"--preset {name}: no method of this sweep has a preset of that name")
    for m in methods_:  # every value parses and passes its checks, for every kind of cell
        preset = cell_preset(spec, m)
        if get_method(m).source_method is None:
            resolve_settings(m, games_[0], 0, spec.steps, protocol, preset, cell_overrides(spec, m), "cpu")
    return spec


def override_pairs(overrides) -> dict[str, str]:
    """Settings as KEY -> VALUE text, from a TOML `[set]` table or `--set KEY=VALUE` pairs."""
    if isinstance(overrides, dict):
        return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in overrides.items()}
    if isinstance(overrides, (list, tuple)):
        return parse_overrides(tuple(str(o) for o in overrides))
    raise UsageError(f"set={overrides!r} must be a table of KEY = VALUE settings")


def cell_preset(spec: SweepSpec, method: str) -> str | None:
    """The sweep's preset that a cell of `method` takes (None: its learner's family default,
    the same for every method of that learner: one learner per study)."""
    names = [name for name in spec.presets if name in get_method(method).preset_names]
    if len(names) > 1:
        raise UsageError(f"--preset {','.join(names)}: {method} has more than one of these presets; give one")
    return names[0] if names else None


def cell_overrides(spec: SweepSpec, method: str) -> dict[str, str]:
    """The sweep's `--set` pairs that a cell of `method` takes."""
    keys = accepted_keys(method)
    return {key: value for key, value in spec.overrides if key in keys}


def from_toml(path: Path, **cli) -> SweepSpec:
    """The same sweep read from a TOML file; options given on the command line win."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"sweep file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"sweep file {path} is a directory; give a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid TOML ({e})") from None
    allowed = {f.name for f in dataclasses.fields(SweepSpec)} - {"overrides"} | {"set"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{path}: " + unknown_name_message("key", unknown[0], sorted(allowed)))
    for key in ("games", "methods", "seeds"):
        if key not in data and cli.get(key) is None:
            raise UsageError(f"{path}: missing key {key!r}")
    merged = {**{k: v for k, v in data.items() if k != "set"}, **{k: v for k, v in cli.items() if v is not None}}
    # the file's [set] table and --set merge, key by key, the command line winning
    merged["overrides"] = {**override_pairs(data.get("set", {})), **override_pairs(cli.get("overrides") or ())}
    return make_spec(**merged)


def accepted_keys(method: str) -> set[str]:
    """`--set` keys a cell of this method takes: the settings resolver's own routing."""
    return set(setting_owners(method))


def cell_command(spec: SweepSpec, cell: Cell) -> list[str]:
    """The `compare run` arguments of a cell: a new run, or the resume of an interrupted one."""
    run_dir = spec.run_dir(cell)
    if (run_dir / "config.json").is_file() and cell.source is None:
        return ["run", "--resume", str(run_dir), "--quiet"]
    args = ["run", "--method", cell.method, "--out", spec.results, "--name", spec.run_name(cell), "--quiet",
            "--threads", str(spec.threads)]
    if cell.source is not None:  # game, seed, protocol and budget: the source cell's
        args += ["--source", str(spec.run_dir(cell.source))]
    else:  # (a derived cell runs where its method does: a conversion on the CPU)
        args += ["--game", cell.game, "--seed", str(cell.seed), "--protocol", spec.protocol, "--device", spec.device]
        if spec.steps is not None:
            args += ["--steps", str(spec.steps)]
    preset = cell_preset(spec, cell.method)
    if preset is not None:
        args += ["--preset", preset]
    if spec.track == "wandb":  # a study's runs appear together in W&B
        args += ["--track", "wandb", "--wandb-group", f"sweep-{spec.sweep_id}"]
    for key, value in cell_overrides(spec, cell.method).items():
        args += ["--set", f"{key}={value}"]
    return args


def _die_with_parent() -> None:
    """Runs in the cell's process before it starts: Linux sends it SIGTERM when the thread that
    started it ends (PR_SET_PDEATHSIG), so a killed sweep never leaves its cells running."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_cell(args: list[str], threads: int, gpu: str | None = None) -> tuple[int, str]:
    """One cell as a subprocess (in whichever worker the launcher chose), its thread pools sized
    to `threads` and, given `gpu`, that GPU the only one it sees: exit code, last error line."""
    env = {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES},
           **({} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu})}
    proc = subprocess.run([sys.executable, "-m", "compare", *args], capture_output=True, text=True, env=env,
                          preexec_fn=_die_with_parent if _LIBC is not None else None)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, (lines[-1] if lines and proc.returncode else "")


def estimated_steps(spec: SweepSpec, cell: Cell) -> int:
    if cell.source is not None:
        return 0
    return spec.steps or resolve_env(cell.game).budget(get_protocol(spec.protocol))


def dry_run(spec: SweepSpec, echo: Callable[[str], None]) -> None:
    cells = spec.cells()
    echo(f"sweep {spec.sweep_id}: {len(cells)} cells, launcher {spec.launcher} ({spec.workers} workers), "
         f"results {spec.results}")
    for family in dict.fromkeys(resolve_env(g).family for g in spec.games):
        presets = [f"{m} {cell_preset(spec, m) or get_method(m).default_preset(family) or 'default'}"
                   for m in spec.methods]
        echo(f"presets ({family}): " + ", ".join(presets))
    statuses = []
    for i, cell in enumerate(cells, 1):
        after = f"  after: {cell.source.label}" if cell.source is not None else ""
        status = "finished" if (spec.run_dir(cell) / "eval.json").is_file() else (
            "interrupted" if spec.run_dir(cell).is_dir() else "new")
        statuses.append(status)
        echo(f"{i:>4}. {cell.label:<40} {estimated_steps(spec, cell):>12,} agent steps  [{status}]{after}")
    total = sum(estimated_steps(spec, c) for c in cells)
    left = sum(estimated_steps(spec, c) for c, status in zip(cells, statuses) if status != "finished")
    bound = "at most " if "interrupted" in statuses else ""  # an interrupted cell resumes from its checkpoint
    echo(f"total: {total:,} agent steps of training (derived cells such as conversions: calibration and "
         f"evaluation only); still to run: {bound}{left:,} ({statuses.count('finished')} of {len(cells)} cells "
         f"finished, {statuses.count('interrupted')} interrupted; finished cells are skipped: to make them "
         "again, give an empty --results)")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (none without CUDA)."""
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in listed.split(",") if name.strip()] if listed else [str(i) for i in range(count)]
    return names[:count]


def gpu_slots(workers: int, gpus: list[str]) -> list[str | None]:
    """The GPU of each of `workers` local worker slots: round robin over `gpus` (None: no GPU,
    the cell's environment is left as it is)."""
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


def _launch(spec: SweepSpec, commands: list[list[str]], on_done: Callable[[int, tuple[int, str]], None]) -> None:
    """Run every command through the sweep's launcher; call `on_done(index, result)` as each ends."""
    if spec.launcher == "local":
        # Threads only wait: each cell is its own `compare run` process, on a GPU of its own
        # where there are enough (workers share them round robin where there are fewer).
        slots: queue.Queue = queue.Queue()
        for gpu in gpu_slots(spec.workers, visible_gpus()):
            slots.put(gpu)

        def on_a_free_gpu(args: list[str]) -> tuple[int, str]:
            gpu = slots.get()
            try:
                return run_cell(args, spec.threads, gpu)
            finally:
                slots.put(gpu)

        with ThreadPoolExecutor(max_workers=spec.workers) as pool:
            futures = {pool.submit(on_a_free_gpu, args): i for i, args in enumerate(commands)}
            for future in as_completed(futures):
                on_done(futures[future], future.result())
    elif spec.launcher == "ray":
        import ray

        if not ray.is_initialized():
            # Ray starts its workers at niceness 15, so beside any other work on the machine a
            # cell starves (measured: 3 s of CPU in 8 minutes beside two training runs). The
            # local launcher's cells run at normal priority; so do a local Ray instance's: the
            # instance reads the setting from the environment it starts in, and only it.
            normal_priority = not spec.ray_address and "RAY_worker_niceness" not in os.environ
            if normal_priority:
                os.environ["RAY_worker_niceness"] = "0"
            try:
                ray.init(address=spec.ray_address, include_dashboard=False, log_to_driver=False,
                         **({} if spec.ray_address else {"num_cpus": max(spec.workers * spec.cpus_per_run, 1)}))
            finally:
                if normal_priority:
                    del os.environ["RAY_worker_niceness"]
        remote = ray.remote(num_cpus=spec.cpus_per_run, num_gpus=spec.gpus_per_run)(run_cell)
        pending = {remote.remote(args, spec.threads): i for i, args in enumerate(commands)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            on_done(pending.pop(done[0]), ray.get(done[0]))
    else:
        import submitit

        folder = Path(spec.results) / "sweeps" / f"{spec.sweep_id}-submitit"
        executor = submitit.AutoExecutor(folder=folder, cluster=None if spec.slurm_cluster == "slurm" else "local")
        executor.update_parameters(slurm_array_parallelism=spec.workers, cpus_per_task=max(1, int(spec.cpus_per_run)),
                                   gpus_per_node=int(spec.gpus_per_run), timeout_min=spec.slurm_time_min)
        jobs = executor.map_array(run_cell, commands, [spec.threads] * len(commands))  # one job array
        for i, job in enumerate(jobs):
            try:
                on_done(i, job.result())
            except Exception as e:  # the job itself failed (killed, preempted)
                on_done(i, (1, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"))


def check_launcher(launcher: str) -> None:
    if launcher in EXTRAS:
        module, install = EXTRAS[launcher]
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"the {launcher} launcher needs {module}; install it with: {install}")


def run_sweep(spec: SweepSpec, echo: Callable[[str], None]) -> dict[str, list]:
    """Run every cell not finished yet; returns done / skipped / failed cells, and those another
    process is writing (`elsewhere`: a sweep rerun while the first still runs; not failures)."""
    check_launcher(spec.launcher)
    if spec.device == "cuda" and spec.launcher == "local" and not visible_gpus():
        raise UsageError("device=cuda: this machine has no CUDA device for the local launcher's cells "
                         "(device=auto would run them on the CPU)")
    ensure_writable_dir(Path(spec.results))
    cells = spec.cells()
    summary: dict[str, list] = {"done": [], "skipped": [], "failed": [], "elsewhere": []}
    progress = {"n": 0}

    def finished(cell: Cell) -> bool:
        return (spec.run_dir(cell) / "eval.json").is_file()

    def report(cell: Cell, status: str) -> None:
        progress["n"] += 1
        echo(f"[{progress['n']}/{len(cells)}] {cell.label}: {status}")

    def score(cell: Cell) -> str:
        """A finished cell's final score, as its progress line shows it."""
        try:
            result = json.loads((spec.run_dir(cell) / "eval.json").read_text())
            return f" (final evaluation: mean return {float(result['mean_return']):.2f} over {result['episodes']} episodes)"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def stage(batch: list[Cell]) -> None:
        todo = []
        for cell in batch:
            if finished(cell):
                summary["skipped"].append(cell)
                report(cell, "finished earlier, skipped" + score(cell))
            elif cell.source is not None and not finished(cell.source):
                summary["failed"].append((cell, f"its {cell.source.method} cell did not finish"))
                report(cell, f"not run (its {cell.source.method} cell did not finish)")
            else:
                todo.append(cell)

        def on_done(i: int, result: tuple[int, str]) -> None:
            cell, (code, error) = todo[i], result
            if code == 0 and finished(cell):
                summary["done"].append(cell)
                report(cell, "done" + score(cell))
            elif code == 2 and BUSY_MARK in error:
                summary["elsewhere"].append(cell)
                report(cell, f"running elsewhere ({error.split(': ', 1)[-1]})")
            else:
                summary["failed"].append((cell, error or f"exit code {code}"))
                report(cell, f"FAILED: {error or f'exit code {code}'}")

        if todo:
            _launch(spec, [cell_command(spec, c) for c in todo], on_done)

    stage([c for c in cells if c.source is None])
    stage([c for c in cells if c.source is not None])
    return summary
