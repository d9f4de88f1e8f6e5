"""Reading the run store back: the comparison table (`compare table`) and what the plots use.

Runs are pooled only when they share the whole protocol and the training budget; each such
group gets a table of its own. Within a group, a column is one *variant*: a method with one
resolved configuration (learner hyperparameters, method options, preset, label; for a
conversion, also its source's variant). Runs pool into a cell only when everything but the seed
is the same; a column is labelled by what differs from the method's defaults for the game's
family (`dsqn [timesteps=4]`) or by the user's `--label`. A repeat (same variant, game and seed)
keeps the run created last, and the skip is reported.

A cell is the mean +- standard error over seeds (sample SD with ddof = 1, over sqrt(n)) of a
run's score: its final evaluation (`final`) or the best of its periodic evaluations and the final
one (`best-eval`, Chen et al. 2022's reporting, an optimistic estimate), as a raw return or a
normalized score (compare.core.scores: human-normalized on Atari, published-DQN-normalized on
MinAtar and classic control). A derived run (a conversion) reports its sweep entry chosen on
validation episodes (compare.core.evaluation.select_operating_point); the best T on the test
episodes is shown only on request and labelled optimistic.

Aggregate rows per column: IQM with a 95% stratified-bootstrap interval (normalized scores only,
or a single game: raw returns of different games never pool) and the probability of improvement
over the ANN baseline the method declares (both from rliable, bootstrap seeded so that a table
regenerates byte for byte), T, mean firing rate, energy per decision under each energy model
shown (compare.core.energy, priced from the counts each eval.json records) and one first-layer
convention (`once` or `per_step`), its ratio to the ANN's, a spiking column's crossover firing
rate against the group's int8 ANN, and for derived methods conformance and the score as a
fraction of the source ANN's. Under each table, one verdict line per compared column: better,
worse, or no difference detected.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compare.app.resolve import setting_owners, setting_text
from compare.core.energy import FLOAT_BITS, MODELS, Estimate, crossover_rate, estimate
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.evaluation import best_on_test, select_operating_point
from compare.core.registry import get_method, registered
from compare.core.runstore import (
    ROBUSTNESS,
    config_problem,
    eval_problem,
    list_runs,
    read_json,
    read_jsonl,
    stored_robustness,
)
from compare.core.scores import (
    Reference,
    normalization_reference,
    normalized_score,
    published_minatar_curves,
    reference_scores,
    training_return_average,
)
from compare.core.settings import Settings

BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
FEW_SEEDS = 5  # below this many seeds per cell, a verdict line warns that its interval is unreliable
UNITS = {"raw": "raw return", "hns": "human-normalized score (Atari)",
         "normalized": "normalized score: (score - random) / (reference - random); Atari: human, "
                       "MinAtar and classic control: a published DQN (compare.core.scores)"}
OPERATING_POINTS = {"selected": "T chosen on validation episodes",
                    "best-test": "T chosen on the reported test episodes (optimistic)"}
CHOICE_TEXT = {"validation": "chosen on validation episodes", "only": "is the only one evaluated",
               "test": "chosen on the reported test episodes (optimistic)", "fixed": "fixed by --timesteps"}
LIVENESS = ("silent", "saturated")  # a cell's mark: runs whose final network has such a spiking layer
CELL_UNCERTAINTY = "cells: mean +- standard error over seeds (sample SD, ddof = 1, / sqrt(n))"
SCORE_KINDS = {"final": "final evaluation",
               "best-eval": "best of the periodic and final evaluations (optimistic; Chen et al. 2022's reporting)",
               "train-ma100": "mean return of the last 100 training episodes at the budget (Young & Tian 2019's "
                              "statistic; a training statistic: exploration on)"}
ENERGY_CONVENTIONS = {"per-step": ("per_step", "first layer charged at every time step"),
                      "once": ("once", "first layer charged once per decision")}
# `--energy-model default`: the memory-inclusive model beside the compute-only one
ENERGY_MODEL_CHOICES = {"default": ("memory", "compute"), **{name: (name,) for name in MODELS}}
INT8 = (8, 8)  # the quantized ANN a spiking column's crossover rate is computed against


def method_order(name: str) -> tuple:
    """Methods grouped by the ANN baseline they are compared with, each group led by the
    baseline itself, then the methods trained from scratch, then those derived from a run."""
    method = get_method(name)
    return method.baseline, method.name != method.baseline, method.source_method is not None, method.name


@dataclass(frozen=True)
class Variant:
    """What a column is: a method and everything about its runs' settings but the seed, as
    differences from the method's defaults for the game's environment family."""

    method: str
    preset: str | None                       # None: the family's default preset
    changes: tuple[tuple[str, str], ...]     # (setting, value) that differ from the preset's
    label: str | None = None                 # `compare run --label`
    source: Variant | None = None            # derived methods: the variant they were made from

    @property
    def is_default(self) -> bool:
        return not (self.preset or self.changes or self.label) and (self.source is None or self.source.is_default)

    def describe(self, with_changes: bool = False) -> str:
        parts = [self.label] if self.label else []
        if not self.label or with_changes:
            parts += ([self.preset] if self.preset else []) + [f"{k}={v}" for k, v in self.changes]
            if self.source is not None and not self.source.is_default:
                parts.append(f"from {self.source.describe()}")
        return self.method + (f" [{', '.join(parts)}]" if parts else "")


def variant_of(config: dict, where: str = "config.json") -> Variant:
    """The variant of a run from its config.json (UsageError if it is not a run config)."""
    settings = Settings.from_dict(config, where)
    method = get_method(settings.method)
    family = resolve_env(settings.game).family
    preset = None if settings.preset == method.default_preset(family) else settings.preset
    try:
        reference = method.default_sections(family, preset)
    except UsageError:  # a preset this version no longer has: compare with the default
        reference = method.default_sections(family, None)
    changes = []
    for key, obj in settings.sections.items():
        mine, base = dataclasses.asdict(obj), dataclasses.asdict(reference[key])
        changes += [(name, setting_text(value)) for name, value in mine.items() if base.get(name) != value]
    source = None
    if method.source_method is not None:
        origin = config.get("source_settings") or _source_config(config.get("source"))
        source = variant_of(origin, f"{where}: source") if isinstance(origin, dict) else None
    return Variant(settings.method, preset, tuple(sorted(changes)), settings.label, source)


def _source_config(path) -> dict | None:
    """A source run's config.json, for conversions made before configs recorded it."""
    try:
        return read_json(Path(path) / "config.json") if path else None
    except (OSError, ValueError, UsageError):
        return None


@dataclass
class RunRecord:
    path: Path
    method: str
    game: str
    seed: int
    protocol: dict
    budget: int
    config: dict
    result: dict      # eval.json, or for a conversion at a chosen T, its sweep entry merged in
    variant: Variant = field(default_factory=lambda: Variant("?", None, ()))
    column: str = ""  # the variant's column name in its table
    choice: str | None = None  # derived runs: how the reported sweep entry was chosen (CHOICE_TEXT)
    read_at: int | None = None  # train-ma100: the agent step its training statistic is read at (None: budget)

    @property
    def neuro(self) -> dict:
        return self.result.get("neuro") or {}

    @property
    def preset(self) -> str | None:
        return self.config.get("preset")

    def score(self, kind: str = "final") -> float:
        """The final evaluation's mean return, or (best-eval) the best of it and the periodic
        evaluations (trained runs; a derived run has only its final evaluation), or
        (train-ma100) the mean of the last 100 training-episode returns at the budget."""
        final = float(self.result["mean_return"])
        if kind == "train-ma100":
            value = training_return_average(read_jsonl(self.path / "metrics.jsonl"), self.read_at or self.budget)
            if value is None:
                raise UsageError(f"--score train-ma100: {self.path.name} has no training episodes (metrics.jsonl); "
                                 "it is a statistic of trained runs: leave derived methods out with --methods")
            return value
        if kind == "final" or get_method(self.method).source_method is not None:
            return final
        return max([final, *self.periodic_scores])

    @functools.cached_property
    def periodic_scores(self) -> list[float]:
        """Mean returns of the periodic evaluations (evals.jsonl), read once."""
        return [float(r["mean_return"]) for r in read_jsonl(self.path / "evals.jsonl")
                if isinstance(r, dict) and isinstance(r.get("mean_return"), (int, float))]

    def energy(self, model: str, convention: str = "per-step") -> Estimate | None:
        """Joules per decision under an energy model (compare.core.energy) and a first-layer
        convention (ENERGY_CONVENTIONS), from the counts in eval.json; None for a run recorded
        before the counts were (rerun it to cost it)."""
        counts = self.neuro.get("counts")
        return None if counts is None else estimate(counts, model, ENERGY_CONVENTIONS[convention][0])

    @property
    def integer_bits(self) -> tuple[int, int] | None:
        """(weight, activation) bits of a network that computes in integers, else None."""
        counts = self.neuro.get("counts") or {}
        bits = (counts.get("weight_bits", FLOAT_BITS), counts.get("activation_bits", FLOAT_BITS))
        return None if bits == (FLOAT_BITS, FLOAT_BITS) else bits


@dataclass
class Group:
    """Runs that may be compared: one protocol, one budget."""

    protocol: dict
    budget: int
    runs: list[RunRecord] = field(default_factory=list)
    label: str = ""
    notes: list[str] = field(default_factory=list)

    def cell_runs(self, game: str, column: str) -> list[RunRecord]:
        return sorted((r for r in self.runs if r.game == game and r.column == column), key=lambda r: r.seed)

    @property
    def games(self) -> list[str]:
        return sorted({r.game for r in self.runs})

    @property
    def columns(self) -> list[str]:
        """Method by method (`method_order`); a method's variants closest to its defaults first."""
        variants = {r.column: r.variant for r in self.runs}
        return sorted(variants, key=lambda c: (method_order(variants[c].method), not variants[c].is_default,
                                               len(variants[c].changes), c))

    def method_of(self, column: str) -> str:
        return next(r.method for r in self.runs if r.column == column)

    def variant_of(self, column: str) -> Variant:
        return next(r.variant for r in self.runs if r.column == column)

    def reference_column(self, method: str, variant: Variant) -> str | None:
        """The column of `method` (an ANN baseline) that `variant` is compared with: the run it
        was converted from; else the one trained with the same preset and shared settings
        (dsqn [lr=1e-05] -> dqn [lr=1e-05]); else `method`'s default variant; else its only one."""
        mine = {r.column: r.variant for r in self.runs if r.method == method}
        keys = set(setting_owners(method))
        shared = tuple(change for change in variant.changes if change[0] in keys)
        for match in (lambda v: v == variant.source,
                      lambda v: v.preset == variant.preset and not v.label and v.changes == shared,
                      lambda v: v.is_default):
            found = [column for column, v in mine.items() if match(v)]
            if found:
                return found[0]
        return next(iter(mine)) if len(mine) == 1 else None


def parse_operating_point(text: str) -> str | int:
    """`--timesteps`: selected, best-test, or a T (positive integer)."""
    if text in OPERATING_POINTS:
        return text
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise UsageError(f"--timesteps {text!r}: allowed: {', '.join(OPERATING_POINTS)} or a positive integer T")


def reported_entry(result: dict, operating_point: str | int, where: str) -> tuple[dict, str]:
    """The sweep entry a derived run's cell shows, and how it was chosen (CHOICE_TEXT key)."""
    sweep = result["sweep"]
    if isinstance(operating_point, int):
        entry = next((e for e in sweep if e["timesteps"] == operating_point), None)
        if entry is None:
            raise UsageError(f"--timesteps {operating_point}: {where} evaluated T = "
                             f"{', '.join(str(e['timesteps']) for e in sweep)} only; allowed: one of those, "
                             f"{', '.join(OPERATING_POINTS)}")
        return entry, "fixed"
    if operating_point == "best-test":
        return best_on_test(sweep), ("only" if len(sweep) == 1 else "test")
    return select_operating_point(sweep)


def read_runs(results: Path, games: list[str] | None = None, methods: list[str] | None = None,
              operating_point: str | int = "selected") -> tuple[list[RunRecord], list[str]]:
    """Finished runs under RESULTS/runs that pass the filters, and one line per skipped run.
    Derived runs report the sweep entry at `operating_point` (`parse_operating_point`)."""
    results = Path(results)
    if not (results / "runs").is_dir():
        raise UsageError(f"no run store at {results} (expected {results / 'runs'}); pass --results DIR")
    for name in methods or []:
        get_method(name)  # unknown names: one line listing the registered methods
    wanted_games = {resolve_env(g).name for g in games} if games else None
    skipped = []
    newest: dict[tuple, RunRecord] = {}
    for run in list_runs(results):
        try:
            config = run.config
        except (OSError, ValueError) as e:
            skipped.append(f"{run.path.name}: unreadable config.json ({type(e).__name__})")
            continue
        problem = config_problem(config)
        if problem:
            skipped.append(f"{run.path.name}: unreadable config.json ({problem})")
            continue
        method, game, seed = config["method"], config["game"], config["seed"]
        protocol, budget = config["protocol"], config["total_steps"]
        try:
            resolve_env(game)
        except UsageError as e:
            skipped.append(f"{run.path.name}: config.json game: {e}")
            continue
        if method not in registered():
            skipped.append(f"{run.path.name}: method {method!r} is not registered")
            continue
        if (methods and method not in methods) or (wanted_games and game not in wanted_games):
            continue
        if not run.finished:
            skipped.append(f"{run.path.name}: unfinished (no eval.json)")
            continue
        try:
            variant = variant_of(config, f"{run.path.name}/config.json")
        except UsageError as e:
            skipped.append(f"{run.path.name}: unreadable config.json ({e})")
            continue
        try:
            result = read_json(run.path / "eval.json")
        except (OSError, ValueError) as e:
            skipped.append(f"{run.path.name}: unreadable eval.json ({type(e).__name__})")
            continue
        problem = eval_problem(result)
        if problem:
            skipped.append(f"{run.path.name}: unreadable eval.json ({problem})")
            continue
        choice = None
        if "sweep" in result:
            entry, choice = reported_entry(result, operating_point, run.path.name)
            result = {**result, **entry}
        record = RunRecord(run.path, method, game, seed, protocol, budget, config, result, variant, choice=choice)
        key = (variant, game, seed, protocol_key(protocol), budget)
        kept = newest.get(key)
        if kept is not None:  # a repeat: keep the run created last
            older, record = sorted([kept, record], key=lambda r: (str(r.config.get("created", "")), r.path.name))
            skipped.append(f"{older.path.name}: repeated by {record.path.name} (same settings and seed; "
                           "kept the one created last)")
        newest[key] = record
    records = list(newest.values())
    _name_columns(records)
    return records, skipped


def _name_columns(records: list[RunRecord]) -> None:
    """Each variant's column name; labels that two variants share get their changes added."""
    variants = list(dict.fromkeys(r.variant for r in records))
    names = {v: v.describe() for v in variants}
    taken = defaultdict(list)
    for v in variants:
        taken[names[v]].append(v)
    for clash in (vs for vs in taken.values() if len(vs) > 1):
        for i, v in enumerate(clash):
            names[v] = v.describe(with_changes=True)
            if sum(names[v] == names[o] for o in clash) > 1:
                names[v] += f" #{i + 1}"
    for r in records:
        r.column = names[r.variant]


# Protocol fields that do not make a condition: the default Atari budget (`atari_budget_steps` sets
# `--steps` when none is given; the budget a run trained for is its own, compared separately), so
# runs recorded before a default changed still pool.
NOT_A_CONDITION = ("atari_budget_steps",)


def protocol_key(protocol: dict) -> str:
    """What makes two runs' protocols the same condition: every field but NOT_A_CONDITION."""
    return json.dumps({k: v for k, v in protocol.items() if k not in NOT_A_CONDITION}, sort_keys=True)


def group_runs(records: list[RunRecord]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for r in records:
        key = (protocol_key(r.protocol), r.budget)
        groups.setdefault(key, Group(r.protocol, r.budget)).runs.append(r)
    out = list(groups.values())
    for g in out:
        g.label = f"protocol {g.protocol.get('name', '?')}, budget {g.budget:,} agent steps"
        same_label = [o for o in out if o is not g and o.protocol.get("name") == g.protocol.get("name")
                      and o.budget == g.budget]
        if same_label:  # same name and budget, different fields: say which
            differ = sorted(k for o in same_label for k in g.protocol
                            if g.protocol.get(k) != o.protocol.get(k) and k not in NOT_A_CONDITION)
            g.label += " (" + ", ".join(f"{k}={g.protocol.get(k)}" for k in dict.fromkeys(differ)) + ")"
        g.notes = _preset_notes(g)
    return out


def _preset_notes(group: Group) -> list[str]:
    """One line per learner whose methods trained with different presets in this group."""
    by_learner: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in group.runs:
        method = get_method(r.method)
        if method.source_method is None and r.preset:
            by_learner[method.learner.key][r.preset].add(r.column)
    notes = []
    for learner, presets in sorted(by_learner.items()):
        if len(presets) > 1:
            notes.append(f"learner presets differ ({learner}): " + "; ".join(
                f"{p}: {', '.join(sorted(cols))}" for p, cols in sorted(presets.items())))
    return notes


def run_score(r: RunRecord, unit: str, kind: str = "final", references: dict[str, Reference] | None = None
              ) -> float | None:
    """A run's score in `unit`: raw, or normalized by its game's reference (None without one)."""
    raw = r.score(kind)
    if unit == "raw":
        return raw
    reference = (references or {}).get(r.game)
    return None if reference is None else normalized_score(reference, raw)


def score_matrix(group: Group, column: str, games: list[str], unit: str, kind: str,
                 references: dict[str, Reference] | None = None) -> np.ndarray | None:
    """(runs, games) scores for rliable; as many runs per game as the game with the fewest."""
    columns = []
    for game in games:
        values = [run_score(r, unit, kind, references) for r in group.cell_runs(game, column)]
        if not values or any(v is None for v in values):
            return None
        columns.append(values)
    n = min(len(c) for c in columns)
    return np.array([c[:n] for c in columns], dtype=np.float64).T


def group_references(games: list[str], unit: str, references: dict[str, Reference] | None = None
                     ) -> tuple[str, dict[str, Reference], list[str]]:
    """The unit a group's table uses, each game's normalization reference, and the games that
    have none. auto: hns when every game is Atari (and has human scores); otherwise normalized
    when the group has several games, all with a reference (so that they can pool), else raw.
    An explicit hns or normalized that some game cannot take is a UsageError."""
    refs = {g: normalization_reference(g, resolve_env(g).ale_id, references) for g in games}
    missing = [g for g, ref in refs.items() if ref is None]
    atari = all(resolve_env(g).family == "atari" for g in games)
    if unit == "auto":
        unit = "hns" if atari and not missing else "normalized" if not missing and len(games) > 1 else "raw"
    elif unit == "hns" and not atari:
        raise UsageError(f"--normalize hns: {next(g for g in games if resolve_env(g).family != 'atari')} is not an "
                         "Atari game (human scores exist for Atari only); allowed: auto, raw, normalized")
    elif unit != "raw" and missing:
        raise UsageError(f"--normalize {unit}: {missing[0]} has no reference score; allowed: raw, or a "
                         "--reference-scores file with a row for it")
    return unit, {g: ref for g, ref in refs.items() if ref is not None}, missing


@contextmanager
def reproducible_rliable(seed: int = BOOTSTRAP_SEED):
    """numpy's global RNG seeded for the block and restored afterwards: rliable 1.2 draws its
    bootstrap indices from it and ignores the random_state it is given. (rliable also passes a
    RandomState to arch, which warns that the keyword is deprecated: silenced here.)"""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            yield
    finally:
        np.random.set_state(state)


def bootstrap(scores: dict, statistic) -> tuple[dict, dict]:
    """rliable's stratified-bootstrap interval estimates, the same on every call."""
    from rliable import library as rly  # here: rliable takes seconds to import, and a refusal needs none

    with reproducible_rliable():
        return rly.get_interval_estimates(scores, statistic, reps=BOOTSTRAP_REPS,
                                          random_state=np.random.RandomState(BOOTSTRAP_SEED))


def aggregates(group: Group, column: str, unit: str, kind: str = "final", energy: str = "per-step",
               references: dict[str, Reference] | None = None,
               energy_models: tuple[str, ...] = ENERGY_MODEL_CHOICES["default"]) -> dict:
    """The aggregate rows of one column in one group."""
    from rliable import metrics

    games = [g for g in group.games if group.cell_runs(g, column)]
    runs = [r for r in group.runs if r.column == column]
    method, variant = group.method_of(column), group.variant_of(column)
    out: dict = {"games": len(games), "runs": len(runs)}
    # Raw returns pool into an IQM only within one game.
    matrix = score_matrix(group, column, games, unit, kind, references) if unit != "raw" or len(games) == 1 else None
    if matrix is not None:
        point, interval = bootstrap({column: matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]))
        out["iqm"] = float(point[column][0])
        out["iqm_ci"] = [float(interval[column][0][0]), float(interval[column][1][0])]
    ann_method = get_method(method).baseline  # the ANN the method declares it is compared with
    baseline = group.reference_column(ann_method, variant)
    if baseline is not None and method != ann_method:
        # P(X > Y) is computed per game and then averaged: scale-free, so raw returns are fine.
        common = [g for g in games if group.cell_runs(g, baseline)]
        x, y = (score_matrix(group, c, common, unit, kind, references) for c in (column, baseline))
        if common and x is not None and y is not None:
            n = min(len(x), len(y))
            point, interval = bootstrap({"pair": (x[:n], y[:n])},
                                        lambda a, b: np.array([metrics.probability_of_improvement(a, b)]))
            out["p_improve_over_baseline"] = float(point["pair"][0])
            out["p_improve_ci"] = [float(interval["pair"][0][0]), float(interval["pair"][1][0])]
            out["baseline_column"] = baseline
            out["seeds_compared"] = n
    timesteps = sorted({int(r.neuro.get("timesteps", 1)) for r in runs})
    if timesteps != [1]:
        out["timesteps"] = timesteps
    rates = [r.neuro["mean_firing_rate"] for r in runs if r.neuro.get("mean_firing_rate") is not None]
    if rates:
        out["mean_firing_rate"] = float(np.mean(rates))
    out.update(energy_aggregates(group, column, runs, games, baseline if method != ann_method else None,
                                 energy, energy_models))
    conformance = [r.result["conformance"] for r in runs if r.result.get("conformance") is not None]
    if conformance:
        out["conformance"] = float(np.mean(conformance))
    fractions = []
    for game in games:  # a derived run's score over its source ANN's, on the same episodes
        pairs = [(r.result["mean_return"], r.result["ann_mean_return"]) for r in group.cell_runs(game, column)
                 if isinstance(r.result.get("ann_mean_return"), (int, float))]
        if pairs and np.mean([a for _, a in pairs]) != 0:
            fractions.append(np.mean([m for m, _ in pairs]) / np.mean([a for _, a in pairs]))
    if fractions:
        out["fraction_of_source_ann"] = float(np.mean(fractions))
    return out


def energy_aggregates(group: Group, column: str, runs: list[RunRecord], games: list[str], baseline: str | None,
                      convention: str, models: tuple[str, ...]) -> dict:
    """Energy per decision (uJ) and its ratio to the baseline ANN's under each model, and for a
    spiking column the crossover: per game, the mean firing rate below which it would cost less
    than the int8 ANN of the group (under the memory model, or the first one shown)."""
    out: dict = {}

    def mean_estimate(cell_runs: list[RunRecord], model: str) -> Estimate | None:
        found = [e for e in (r.energy(model, convention) for r in cell_runs) if e is not None]
        return Estimate(float(np.mean([e.fixed for e in found])), float(np.mean([e.spiking for e in found]))) \
            if found else None

    for model in models:
        mean = mean_estimate(runs, model)
        if mean is None:
            continue
        out.setdefault("energy_uj", {})[model] = mean.total * 1e6
        ratios = []
        for game in games if baseline is not None else []:
            mine, theirs = (mean_estimate(group.cell_runs(game, c), model) for c in (column, baseline))
            if mine and theirs and theirs.total:
                ratios.append(mine.total / theirs.total)
        if ratios:
            out.setdefault("energy_ratio_to_ann", {})[model] = float(np.mean(ratios))
            out["ann"] = baseline
    int8 = next((c for c in group.columns if any(r.integer_bits == INT8 for r in group.runs if r.column == c)), None)
    if int8 is not None and any(r.neuro.get("mean_firing_rate") is not None for r in runs):
        model = "memory" if "memory" in models else models[0]
        rates, actual = {}, {}
        for game in games:
            snn, other = mean_estimate(group.cell_runs(game, column), model), mean_estimate(group.cell_runs(game, int8), model)
            fired = [r.neuro["mean_firing_rate"] for r in group.cell_runs(game, column)
                     if r.neuro.get("mean_firing_rate") is not None]
            if snn and other and fired:
                actual[game] = float(np.mean(fired))
                rates[game] = crossover_rate(snn, actual[game], other.total)
        if rates:
            out["crossover"] = {"model": model, "against": int8, "rate": rates, "firing_rate": actual}
    return out


def spread(values: list[float]) -> dict:
    """Mean, sample SD (ddof = 1) and standard error of the mean over seeds (None for one seed)."""
    n = len(values)
    sd = float(np.std(values, ddof=1)) if n > 1 else None
    return {"mean": float(np.mean(values)), "se": None if sd is None else sd / float(np.sqrt(n)), "sd": sd,
            "seeds": n}


def cell(group: Group, game: str, column: str, unit: str, kind: str = "final",
         references: dict[str, Reference] | None = None) -> dict | None:
    scored = [(r, run_score(r, unit, kind, references)) for r in group.cell_runs(game, column)]
    runs, values = [r for r, v in scored if v is not None], [v for _, v in scored if v is not None]
    if not runs:
        return None
    return {**spread(values), "values": values,
            **{f"{state}_runs": sum(bool(r.result.get(f"{state}_layers") or r.neuro.get(f"{state}_layers"))
                                    for r in runs) for state in LIVENESS}}


def robustness_cells(group: Group, game: str, column: str) -> dict[str, dict]:
    """eps -> mean +- s.e. over seeds of the FGSM score (runs that stored robustness.json)."""
    per_eps: dict[str, list[float]] = defaultdict(list)
    for r in group.cell_runs(game, column):
        try:
            stored = stored_robustness(r.path / ROBUSTNESS).get("fgsm", {}).get("results", {})
        except UsageError:  # a damaged file: this run has no robustness scores
            continue
        for eps, entry in stored.items():
            per_eps[eps].append(float(entry["mean_return"]))
    return {eps: spread(v) for eps, v in sorted(per_eps.items(), key=lambda kv: float(kv[0]))}


def verdict(column: str, a: dict) -> str | None:
    """One line: what the P(improvement) interval of `column` over its baseline column allows to say."""
    if "p_improve_ci" not in a:
        return None
    low, high = a["p_improve_ci"]
    n = a["seeds_compared"]
    reading = ("better than" if low > 0.5 else "worse than" if high < 0.5 else
               f"no difference detected at n = {n} from")
    line = (f"{column}: {reading} {a['baseline_column']} (P(improvement) {a['p_improve_over_baseline']:.2f} "
            f"[{low:.2f}, {high:.2f}], 95% stratified-bootstrap CI)")
    return line + (f"; only {n} seeds per cell: a bootstrap over so few runs understates its uncertainty"
                   if n < FEW_SEEDS else "")


def check_conventions(kind: str, energy: str, energy_model: str = "default") -> None:
    if kind not in SCORE_KINDS:
        raise UsageError(f"--score {kind!r}: allowed: {', '.join(SCORE_KINDS)}")
    if energy not in ENERGY_CONVENTIONS:
        raise UsageError(f"--energy {energy!r}: allowed: {', '.join(ENERGY_CONVENTIONS)}")
    if energy_model not in ENERGY_MODEL_CHOICES:
        raise UsageError(f"--energy-model {energy_model!r}: allowed: {', '.join(ENERGY_MODEL_CHOICES)}")


def conventions_line(kind: str, energy: str, unit: str = "raw", energy_model: str = "default") -> str:
    models = "; ".join(f"{m}: {MODELS[m]}" for m in ENERGY_MODEL_CHOICES[energy_model])
    return (f"{CELL_UNCERTAINTY}; unit: {UNITS[unit]}; score: {SCORE_KINDS[kind]}; energy models: {models}; "
            f"{ENERGY_CONVENTIONS[energy][1]} (binary inputs: accumulates)")


def _choice_notes(group: Group) -> list[str]:
    """How each derived column's reported entries were chosen; optimistic choices say so."""
    notes = []
    for column in group.columns:
        choices = sorted({r.choice for r in group.runs if r.column == column and r.choice is not None})
        if choices:
            notes.append(f"{column}: reported T {' / '.join(CHOICE_TEXT[c] for c in choices)}")
    return notes


def build_tables(records: list[RunRecord], unit: str = "auto", kind: str = "final", energy: str = "per-step",
                 reference: bool = False, robustness: bool = False,
                 references: dict[str, Reference] | None = None, at_step: int | None = None,
                 energy_model: str = "default") -> list[dict]:
    """Every group's table as plain data (what `--format json` prints). `references`: a
    normalization table replacing the shipped one for non-Atari games. `at_step`: read the
    training statistic (train-ma100) at that agent step instead of at the budget."""
    check_conventions(kind, energy, energy_model)
    models = ENERGY_MODEL_CHOICES[energy_model]
    if at_step is not None:
        if kind != "train-ma100":
            raise UsageError("--at-step reads a training statistic part-way: use it with --score train-ma100")
        short = sorted({r.budget for r in records if r.budget < at_step})
        if short:
            raise UsageError(f"--at-step {at_step:,} is past the budget of some runs ({short[0]:,} agent steps); "
                             "allowed: at most the smallest budget, or leave those runs out with --games/--methods")
        records = [dataclasses.replace(r, read_at=at_step) for r in records]  # the caller's stay as they are
    if unit not in ("auto", *UNITS):
        raise UsageError(f"--normalize {unit!r}: allowed: auto, {', '.join(UNITS)}")
    tables = []
    for group in group_runs(records):
        unit_, refs, missing = group_references(group.games, unit, references)
        notes = group.notes + _choice_notes(group)
        if unit_ == "raw" and len(group.games) > 1:
            why = f"no normalization reference for {', '.join(missing)}" if missing else "raw returns were asked for"
            notes.append(f"no IQM row: raw returns of different games do not pool ({why})")
        columns = group.columns
        if any(r.result.get(f"{state}_layers") or r.neuro.get(f"{state}_layers") for r in group.runs
               for state in LIVENESS):
            notes.append("[silent: k of n]: k runs whose final network has a spiking layer that never fired "
                         "(eval.json silent_layers): a dead network, not a weak method; [saturated: ...] likewise "
                         "for layers firing at nearly every step")
        aggs = {c: aggregates(group, c, unit_, kind, energy, refs, models) for c in columns}
        if any(r.neuro and "counts" not in r.neuro for r in group.runs):
            notes.append("runs recorded before the energy models (no neuro.counts in eval.json) have no energy: "
                         "rerun them to cost them")
        read_at = at_step or group.budget
        if at_step is not None:
            notes.append(f"training statistic read at {at_step:,} agent steps, not at the budget")
        table = {"group": group.label, "conventions": conventions_line(kind, energy, unit_, energy_model),
                 "notes": notes, "energy_models": list(models),
                 "read_at": read_at,
                 "protocol": group.protocol, "budget": group.budget, "unit": unit_, "score": kind,
                 "energy": energy, "columns": columns, "column_methods": {c: group.method_of(c) for c in columns},
                 "games": group.games,
                 "normalization": {g: dataclasses.asdict(ref) for g, ref in refs.items()} if unit_ != "raw" else {},
                 "cells": {g: {c: cell(group, g, c, unit_, kind, refs) for c in columns} for g in group.games},
                 "aggregates": aggs,
                 "verdicts": {c: line for c in columns if (line := verdict(c, aggs[c]))}}
        if reference:
            refs = reference_scores()
            table["reference"] = {g: refs.get(resolve_env(g).ale_id or "", None) for g in group.games}
            published = {g: next((value for frames, value, _ in published_minatar_curves().get(g, [])
                                  if frames == read_at), None) for g in group.games}
            if group.protocol.get("name") == "youngtian2019" and any(v is not None for v in published.values()):
                table["published_at_budget"] = published
        if robustness:
            table["robustness"] = {g: {c: robustness_cells(group, g, c) for c in columns} for g in group.games}
        tables.append(table)
    return tables


def _pm(c: dict, digits: int = 2) -> str:
    """mean +- s.e. (n=...); a single seed has no standard error. Cells with runs whose network
    has a silent or saturated spiking layer say how many."""
    se = "" if c["se"] is None else f" +- {c['se']:.{digits}f}"
    marks = "".join(f" [{state}: {c[f'{state}_runs']} of {c['seeds']}]" for state in LIVENESS
                    if c.get(f"{state}_runs"))
    return f"{c['mean']:.{digits}f}{se} (n={c['seeds']}){marks}"


def table_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one group's table, as strings; '-' marks what is missing."""
    methods, score = table["columns"], table["unit"]
    digits = 2 if score == "raw" else 3
    refs, published = table.get("reference"), table.get("published_at_budget")
    header = ["game", *methods] + (["random (published)", "human (published)", "Nature DQN 2015 (published)"]
                                   if refs is not None else []) + (
        [f"Young & Tian 2019 DQN at {table['read_at']:,} frames (published, training statistic)"] if published else [])
    rows = []
    for game in table["games"]:
        row = [game]
        for m in methods:
            c = table["cells"][game][m]
            row.append("-" if c is None else _pm(c, digits))
        if refs is not None:
            ref = refs.get(game) or {}
            row += ["-" if ref.get(k) is None else f"{ref[k]:g}" for k in ("random", "human", "nature_dqn_2015")]
        if published:
            row.append("-" if published.get(game) is None else f"{published[game]:g}")
        rows.append(row)
    label = {"hns": "HNS", "normalized": "normalized score", "raw": "score"}[score]

    def agg_row(name: str, render) -> list[str]:
        cells = []
        for m in methods:
            a = table["aggregates"][m]
            try:
                cells.append(render(a, m))
            except KeyError:
                cells.append("-")
        return [name, *cells] + (["", "", ""] if refs is not None else []) + ([""] if published else [])

    rows.append(agg_row(f"IQM {label} [95% CI]", lambda a, m: f"{a['iqm']:.{digits}f} "
                        f"[{a['iqm_ci'][0]:.{digits}f}, {a['iqm_ci'][1]:.{digits}f}]"))
    rows.append(agg_row("P(improvement over its ANN baseline) [95% CI]", lambda a, m:
                        f"{a['p_improve_over_baseline']:.2f} [{a['p_improve_ci'][0]:.2f}, {a['p_improve_ci'][1]:.2f}] "
                        f"(vs {a['baseline_column']})"))
    rows.append(agg_row("T", lambda a, m: ",".join(map(str, a["timesteps"]))))
    rows.append(agg_row("mean firing rate", lambda a, m: f"{a['mean_firing_rate']:.4f}"))
    for model in table["energy_models"]:
        rows.append(agg_row(f"energy per decision (uJ), {model}", lambda a, m, model=model: f"{a['energy_uj'][model]:.4g}"))
        rows.append(agg_row(f"energy ratio to the ANN, {model}", lambda a, m, model=model:
                            f"{a['energy_ratio_to_ann'][model]:.3g} (vs {a['ann']})"))
    crossover = next((a["crossover"] for a in table["aggregates"].values() if "crossover" in a), None)
    if crossover is not None:
        rows.append(agg_row(f"crossover firing rate vs {crossover['against']}, {crossover['model']} "
                            "[its firing rate]", lambda a, m: crossover_text(a["crossover"])))
    rows.append(agg_row("conformance", lambda a, m: f"{a['conformance']:.3f}"))
    rows.append(agg_row("score / its source ANN's", lambda a, m: f"{a['fraction_of_source_ann']:.3f}"))
    return header, rows


def crossover_text(crossover: dict) -> str:
    """Per game: the rate below which the column would cost less than the int8 ANN, and its
    own ("none": its part that does not scale with spikes alone costs more)."""
    def one(game: str) -> str:
        rate = crossover["rate"][game]
        return f"{'none' if rate is None else f'{rate:.3g}'} [{crossover['firing_rate'][game]:.3g}]"
    games = list(crossover["rate"])
    return one(games[0]) if len(games) == 1 else "; ".join(f"{g.split('/')[-1]} {one(g)}" for g in games)


def robustness_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    eps_values = sorted({eps for g in table["games"] for m in table["columns"]
                         for eps in table["robustness"][g][m]}, key=float)
    header = ["game", *[f"{m} eps={e}" for m in table["columns"] for e in eps_values]]
    rows = []
    for game in table["games"]:
        row = [game]
        for m in table["columns"]:
            for e in eps_values:
                c = table["robustness"][game][m].get(e)
                row.append("-" if c is None else _pm(c))
        rows.append(row)
    return header, rows


def render(header: list[str] | None, rows: list[list[str]], fmt: str) -> str:
    """md, csv or latex text; csv leaves the header out when it is None (a continued table)."""
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(([header] if header else []) + rows)
        return buffer.getvalue()
    if fmt == "latex":
        def esc(text: str) -> str:
            return (text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%")
                    .replace("&", "\\&").replace("#", "\\#").replace("+-", "$\\pm$"))
        lines = ["\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\hline",
                 " & ".join(map(esc, header)) + " \\\\", "\\hline"]
        lines += [" & ".join(map(esc, row)) + " \\\\" for row in rows]
        return "\n".join(lines + ["\\hline", "\\end{tabular}"]) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def summary_lines(records: list[RunRecord], skipped: list[str]) -> list[str]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        counts[(r.column, r.game)] += 1
    lines = [f"read {len(records)} finished runs"]
    lines += [f"  {column:<8} {game:<20} {n} run{'s' if n > 1 else ''}" for (column, game), n in sorted(counts.items())]
    if skipped:
        lines.append(f"skipped {len(skipped)}:")
        lines += [f"  {line}" for line in skipped]
    return lines
