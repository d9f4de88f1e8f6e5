"""The Python API: what the CLI does, callable from a notebook, on the same settings resolver and
run store. The `compare` commands are thin layers over these functions.

    from compare.app import api
    run = api.run(method="dsqn", game="CartPole-v1", steps=20_000, settings={"timesteps": 4})
    api.run(method="convert", source=api.run(method="dqn", steps=20_000).path)
    frame = api.table("results")          # one row per table cell, as `compare table` shows it

Bad input raises `compare.core.errors.UsageError` with the message the CLI prints. Each
function imports what it runs when called (as the CLI's commands do), so `import compare.app.api`
is cheap and training does not load the converters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compare.core.errors import UsageError
from compare.core.registry import DEFAULT_METHOD
from compare.core.runstore import Run
from compare.core.settings import Settings

DEFAULT_RESULTS = Path("results")


def run(method: str = DEFAULT_METHOD, game: str = "CartPole-v1", seed: int = 0, steps: int | None = None,
        protocol: str = "nature", preset: str | None = None, settings: dict | None = None,
        source: str | Path | None = None, label: str | None = None, device: str = "auto",
        threads: int | None = None, results: str | Path = DEFAULT_RESULTS, name: str | None = None,
        progress_factory: Callable | None = None, wandb: dict | None = None) -> Run:
    """Train (or, for a derived method such as convert, derive from `source`) and evaluate one
    run; `settings` are `--set` overrides (key -> value); `wandb` ({"project", "entity", "group"},
    any may be None) mirrors the curves to Weights & Biases. Returns the finished run."""
    resolved = resolve(method, game, seed, steps, protocol, preset, settings, source, label, device, threads,
                       wandb)
    return start(resolved, results, name, progress_factory)


def resolve(method: str = DEFAULT_METHOD, game: str = "CartPole-v1", seed: int = 0, steps: int | None = None,
            protocol: str = "nature", preset: str | None = None, settings: dict | None = None,
            source: str | Path | None = None, label: str | None = None, device: str = "auto",
            threads: int | None = None, wandb: dict | None = None) -> Settings:
    """The fully resolved settings `run` would use (nothing is written)."""
    from compare.app.resolve import resolve_settings, setting_text

    overrides = {str(key): setting_text(value) for key, value in (settings or {}).items()}
    return resolve_settings(method, game, seed, steps, protocol, preset, overrides, device,
                            None if source is None else Path(source), label, threads, wandb)


def start(settings: Settings, results: str | Path = DEFAULT_RESULTS, name: str | None = None,
          progress_factory: Callable | None = None) -> Run:
    """Make the run of resolved `settings` (from `resolve`)."""
    from compare.core.registry import get_method

    return get_method(settings.method).start(settings, Path(results), name=name, progress_factory=progress_factory)


def resume(run_dir: str | Path, progress_factory: Callable | None = None) -> Run:
    """Continue a killed training run from its last checkpoint."""
    from compare.core.training import resume_run

    return resume_run(Path(run_dir), progress_factory=progress_factory)


def evaluate(run_dir: str | Path, episodes: int | None = None, seed: int | None = None,
             device: str = "auto") -> dict:
    """Evaluate a finished run's deployed network again under its protocol (the run is unchanged)."""
    from compare.core.training import evaluate_saved_run

    return evaluate_saved_run(Path(run_dir), episodes, seed, device)


def attack(run_dir: str | Path, eps: list[float], episodes: int | None = None, seed: int | None = None) -> dict:
    """FGSM scores at each eps, merged into the run's robustness.json."""
    from compare.app.robustness import run_fgsm

    return run_fgsm(Path(run_dir), list(eps), episodes, seed)


def export(run_dir: str | Path, target: str, out: str | Path, timesteps: int | None = None,
           eval_episodes: int | None = None, calibration_frames: int | None = None,
           echo: Callable[[str], None] = lambda line: None) -> dict:
    """Export a run for a chip (speck2f, speck2e, dynapcnn) or as a NIR graph; its export.json."""
    from compare.app.export import ExportOptions, export_run

    return export_run(Path(run_dir), target, Path(out), ExportOptions(timesteps, eval_episodes, calibration_frames),
                      echo=echo)


TABLE_FIELDS = ("iqm", "iqm_ci", "p_improve_over_baseline", "p_improve_ci", "timesteps", "mean_firing_rate",
                "conformance", "fraction_of_source_ann")


def table(results: str | Path = DEFAULT_RESULTS, games: list[str] | None = None, methods: list[str] | None = None,
          score: str = "final", energy: str = "per-step", normalize: str = "auto", timesteps: str | int = "selected",
          reference_scores: str | Path | None = None, energy_model: str = "default"):
    """`compare table` as a pandas DataFrame: one row per group, game and column (method variant)
    with the cell (mean, se = standard error over seeds with ddof 1, sd, seeds), the column's
    aggregates (energy per model: `energy_uj_<model>`, `energy_ratio_to_ann_<model>`; the crossover
    firing rate against the group's int8 ANN, `crossover_rate`) and its verdict line (None for the
    reference column); `frame.attrs["skipped"]`
    lists the runs left out and why. `timesteps`: "selected" (conversions: T chosen on validation
    episodes), "best-test" (optimistic) or a T."""
    import pandas as pd

    from compare.app.table import build_tables, parse_operating_point, read_runs
    from compare.core.scores import read_references

    point = timesteps if isinstance(timesteps, int) else parse_operating_point(str(timesteps))
    references = read_references(Path(reference_scores)) if reference_scores else None
    records, skipped = read_runs(Path(results), games, methods, point)
    if not records:
        raise UsageError(f"no usable finished runs under {results}/runs")
    rows = []
    for t in build_tables(records, normalize, score, energy, references=references, energy_model=energy_model):
        for game in t["games"]:
            for column in t["columns"]:
                c, a = t["cells"][game][column], t["aggregates"][column]
                rows.append({"group": t["group"], "conventions": t["conventions"], "unit": t["unit"], "game": game,
                             "column": column, "method": t["column_methods"][column],
                             **{k: None if c is None else c[k] for k in ("mean", "se", "sd")},
                             "seeds": 0 if c is None else c["seeds"], **{k: a.get(k) for k in TABLE_FIELDS},
                             **{f"{k}_{model}": a.get(k, {}).get(model) for model in t["energy_models"]
                                for k in ("energy_uj", "energy_ratio_to_ann")},
                             "crossover_rate": a.get("crossover", {}).get("rate", {}).get(game),
                             "verdict": t["verdicts"].get(column)})
    frame = pd.DataFrame(rows)
    frame.attrs["skipped"] = skipped
    return frame
