"""Reading the run store back: the comparison table (`compare table`) and what the plots use.

Runs are pooled only when they share the whole protocol and the training budget; each such
group gets a table of its own. A cell is the mean +- std over seeds of the final `mean_return`
(or its human-normalized score), with the number of seeds; a missing run is a dash. Aggregate
rows per method: IQM with a 95% stratified-bootstrap interval and the probability of improvement
over dqn (both from rliable), T, mean firing rate, energy per decision and its ratio to the
ANN's (dqn for Q-value methods and conversions, ppo for actor-critic methods), and conformance
for conversions.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rliable import library as rly
from rliable import metrics

from compare.app.robustness import ROBUSTNESS
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
from compare.core.registry import REGISTRY, get_method
from compare.core.runstore import list_runs, read_json
from compare.core.scores import human_normalized_score, reference_scores

BOOTSTRAP_REPS = 2000


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

    @property
    def neuro(self) -> dict:
        return self.result.get("neuro") or {}


@dataclass
class Group:
    """Runs that may be compared: one protocol, one budget."""

    protocol: dict
    budget: int
    runs: list[RunRecord] = field(default_factory=list)
    label: str = ""

    def cell_runs(self, game: str, method: str) -> list[RunRecord]:
        return sorted((r for r in self.runs if r.game == game and r.method == method), key=lambda r: r.seed)

    @property
    def games(self) -> list[str]:
        return sorted({r.game for r in self.runs})

    @property
    def methods(self) -> list[str]:
        present = {r.method for r in self.runs}
        return [m for m in REGISTRY if m in present]


def read_runs(results: Path, games: list[str] | None = None, methods: list[str] | None = None,
              timesteps: int | None = None) -> tuple[list[RunRecord], list[str]]:
    """Finished runs under RESULTS/runs that pass the filters, and one line per skipped run."""
    results = Path(results)
    if not (results / "runs").is_dir():
        raise UsageError(f"no run store at {results} (expected {results / 'runs'}); pass --results DIR")
    for name in methods or []:
        get_method(name)  # unknown names: one line listing the registered methods
    wanted_games = {resolve_env(g).name for g in games} if games else None
    records, skipped = [], []
    newest: dict[tuple, RunRecord] = {}
    for run in list_runs(results):
        try:
            config = run.config
            method, game, seed = config["method"], config["game"], int(config["seed"])
            protocol, budget = config["protocol"], int(config["total_steps"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            skipped.append(f"{run.path.name}: unreadable config.json ({type(e).__name__})")
            continue
        if method not in REGISTRY:
            skipped.append(f"{run.path.name}: method {method!r} is not registered")
            continue
        if (methods and method not in methods) or (wanted_games and game not in wanted_games):
            continue
        if not run.finished:
            skipped.append(f"{run.path.name}: unfinished (no eval.json)")
            continue
        try:
            result = read_json(run.path / "eval.json")
            float(result["mean_return"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            skipped.append(f"{run.path.name}: unreadable eval.json ({type(e).__name__})")
            continue
        if method == "convert" and timesteps is not None:
            entry = next((e for e in result.get("sweep", []) if e["timesteps"] == timesteps), None)
            if entry is None:
                skipped.append(f"{run.path.name}: no T={timesteps} in its sweep")
                continue
            result = {**result, **entry}
        record = RunRecord(run.path, method, game, seed, protocol, budget, config, result)
        key = (method, game, seed, json.dumps(protocol, sort_keys=True), budget)
        if key in newest:  # run names sort by creation time: keep the newest of a repeat
            skipped.append(f"{newest[key].path.name}: repeated by {run.path.name} (kept the newer)")
            records.remove(newest[key])
        newest[key] = record
        records.append(record)
    return records, skipped


def group_runs(records: list[RunRecord]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for r in records:
        key = (json.dumps(r.protocol, sort_keys=True), r.budget)
        groups.setdefault(key, Group(r.protocol, r.budget)).runs.append(r)
    out = list(groups.values())
    for g in out:
        g.label = f"protocol {g.protocol.get('name', '?')}, budget {g.budget:,} agent steps"
        same_label = [o for o in out if o is not g and o.protocol.get("name") == g.protocol.get("name")
                      and o.budget == g.budget]
        if same_label:  # same name and budget, different fields: say which
            differ = sorted(k for o in same_label for k in g.protocol if g.protocol.get(k) != o.protocol.get(k))
            g.label += " (" + ", ".join(f"{k}={g.protocol.get(k)}" for k in dict.fromkeys(differ)) + ")"
    return out


def run_score(r: RunRecord, score: str) -> float | None:
    raw = float(r.result["mean_return"])
    return raw if score == "raw" else human_normalized_score(resolve_env(r.game).ale_id, raw)


def ann_baseline(method: str) -> str:
    """The ANN method a method's energy is compared with (dqn for Q-methods and conversions,
    ppo for actor-critic methods): the method's own declaration."""
    return get_method(method).baseline


def score_matrix(group: Group, method: str, games: list[str], score: str) -> np.ndarray | None:
    """(runs, games) scores for rliable; as many runs per game as the game with the fewest."""
    columns = []
    for game in games:
        values = [run_score(r, score) for r in group.cell_runs(game, method)]
        if not values or any(v is None for v in values):
            return None
        columns.append(values)
    n = min(len(c) for c in columns)
    return np.array([c[:n] for c in columns], dtype=np.float64).T


def aggregates(group: Group, method: str, score: str) -> dict:
    """The aggregate rows of one method in one group."""
    with warnings.catch_warnings():
        # rliable passes a RandomState to arch, which warns that the keyword is deprecated.
        warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
        return _aggregates(group, method, score)


def _aggregates(group: Group, method: str, score: str) -> dict:
    games = [g for g in group.games if group.cell_runs(g, method)]
    runs = [r for r in group.runs if r.method == method]
    out: dict = {"games": len(games), "runs": len(runs)}
    matrix = score_matrix(group, method, games, score)
    if matrix is not None:
        point, interval = rly.get_interval_estimates(
            {method: matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=BOOTSTRAP_REPS,
            random_state=np.random.RandomState(0))
        out["iqm"] = float(point[method][0])
        out["iqm_ci"] = [float(interval[method][0][0]), float(interval[method][1][0])]
    if method != "dqn" and any(r.method == "dqn" for r in group.runs):
        common = [g for g in games if group.cell_runs(g, "dqn")]
        x, y = score_matrix(group, method, common, score), score_matrix(group, "dqn", common, score)
        if common and x is not None and y is not None:
            n = min(len(x), len(y))
            point, interval = rly.get_interval_estimates(
                {"pair": (x[:n], y[:n])}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
                reps=BOOTSTRAP_REPS, random_state=np.random.RandomState(0))
            out["p_improve_over_dqn"] = float(point["pair"][0])
            out["p_improve_ci"] = [float(interval["pair"][0][0]), float(interval["pair"][1][0])]
    timesteps = sorted({int(r.neuro.get("timesteps", 1)) for r in runs})
    if timesteps != [1]:
        out["timesteps"] = timesteps
    rates = [r.neuro["mean_firing_rate"] for r in runs if r.neuro.get("mean_firing_rate") is not None]
    if rates:
        out["mean_firing_rate"] = float(np.mean(rates))
    energies = [r.neuro["energy_per_decision_j"] for r in runs if "energy_per_decision_j" in r.neuro]
    if energies:
        out["energy_uj"] = float(np.mean(energies)) * 1e6
        ratios = []
        for game in games:
            mine = [r.neuro.get("energy_per_decision_j") for r in group.cell_runs(game, method)]
            ann = [r.neuro.get("energy_per_decision_j") for r in group.cell_runs(game, ann_baseline(method))]
            mine, ann = [v for v in mine if v is not None], [v for v in ann if v]
            if mine and ann:
                ratios.append(np.mean(mine) / np.mean(ann))
        if ratios and method != ann_baseline(method):
            out["energy_ratio_to_ann"] = float(np.mean(ratios))
            out["ann"] = ann_baseline(method)
    conformance = [r.result["conformance"] for r in runs if r.result.get("conformance") is not None]
    if conformance:
        out["conformance"] = float(np.mean(conformance))
    return out


def cell(group: Group, game: str, method: str, score: str) -> dict | None:
    values = [run_score(r, score) for r in group.cell_runs(game, method)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": len(values),
            "values": values}


def robustness_cells(group: Group, game: str, method: str) -> dict[str, dict]:
    """eps -> mean +- std over seeds of the FGSM score (runs that stored robustness.json)."""
    per_eps: dict[str, list[float]] = defaultdict(list)
    for r in group.cell_runs(game, method):
        path = r.path / ROBUSTNESS
        try:
            stored = json.loads(path.read_text())["fgsm"]["results"] if path.is_file() else {}
        except (OSError, ValueError, KeyError):
            continue
        for eps, entry in stored.items():
            per_eps[eps].append(float(entry["mean_return"]))
    return {eps: {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)}
            for eps, v in sorted(per_eps.items(), key=lambda kv: float(kv[0]))}


def build_tables(records: list[RunRecord], score: str, reference: bool, robustness: bool) -> list[dict]:
    """Every group's table as plain data (what `--format json` prints)."""
    tables = []
    for group in group_runs(records):
        # auto: human-normalized when every game has reference scores (raw returns of different
        # games do not pool into one IQM), raw otherwise.
        unit = score if score != "auto" else (
            "hns" if all(resolve_env(g).ale_id in reference_scores() for g in group.games) else "raw")
        table = {"group": group.label, "protocol": group.protocol, "budget": group.budget,
                 "score": unit, "methods": group.methods, "games": group.games,
                 "cells": {g: {m: cell(group, g, m, unit) for m in group.methods} for g in group.games},
                 "aggregates": {m: aggregates(group, m, unit) for m in group.methods}}
        if reference:
            refs = reference_scores()
            table["reference"] = {g: refs.get(resolve_env(g).ale_id or "", None) for g in group.games}
        if robustness:
            table["robustness"] = {g: {m: robustness_cells(group, g, m) for m in group.methods}
                                   for g in group.games}
        tables.append(table)
    return tables


def _pm(mean: float, std: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def table_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one group's table, as strings; '-' marks what is missing."""
    methods, score = table["methods"], table["score"]
    digits = 3 if score == "hns" else 2
    refs = table.get("reference")
    header = ["game", *methods] + (["random (published)", "human (published)", "Nature DQN 2015 (published)"]
                                   if refs is not None else [])
    rows = []
    for game in table["games"]:
        row = [game]
        for m in methods:
            c = table["cells"][game][m]
            row.append("-" if c is None else f"{_pm(c['mean'], c['std'], digits)} (n={c['seeds']})")
        if refs is not None:
            ref = refs.get(game) or {}
            row += ["-" if ref.get(k) is None else f"{ref[k]:g}" for k in ("random", "human", "nature_dqn_2015")]
        rows.append(row)
    label = "HNS" if score == "hns" else "score"

    def agg_row(name: str, render) -> list[str]:
        cells = []
        for m in methods:
            a = table["aggregates"][m]
            try:
                cells.append(render(a, m))
            except KeyError:
                cells.append("-")
        return [name, *cells] + (["", "", ""] if refs is not None else [])

    rows.append(agg_row(f"IQM {label} [95% CI]", lambda a, m: f"{a['iqm']:.{digits}f} "
                        f"[{a['iqm_ci'][0]:.{digits}f}, {a['iqm_ci'][1]:.{digits}f}]"))
    rows.append(agg_row("P(improvement over dqn) [95% CI]", lambda a, m: f"{a['p_improve_over_dqn']:.2f} "
                        f"[{a['p_improve_ci'][0]:.2f}, {a['p_improve_ci'][1]:.2f}]"))
    rows.append(agg_row("T", lambda a, m: ",".join(map(str, a["timesteps"]))))
    rows.append(agg_row("mean firing rate", lambda a, m: f"{a['mean_firing_rate']:.4f}"))
    rows.append(agg_row("energy per decision (uJ)", lambda a, m: f"{a['energy_uj']:.4g}"))
    rows.append(agg_row("energy ratio to the ANN", lambda a, m: f"{a['energy_ratio_to_ann']:.3g} (vs {a['ann']})"))
    rows.append(agg_row("conformance", lambda a, m: f"{a['conformance']:.3f}"))
    return header, rows


def robustness_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    eps_values = sorted({eps for g in table["games"] for m in table["methods"]
                         for eps in table["robustness"][g][m]}, key=float)
    header = ["game", *[f"{m} eps={e}" for m in table["methods"] for e in eps_values]]
    rows = []
    for game in table["games"]:
        row = [game]
        for m in table["methods"]:
            for e in eps_values:
                c = table["robustness"][game][m].get(e)
                row.append("-" if c is None else f"{_pm(c['mean'], c['std'])} (n={c['seeds']})")
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
        counts[(r.method, r.game)] += 1
    lines = [f"read {len(records)} finished runs"]
    lines += [f"  {method:<8} {game:<20} {n} run{'s' if n > 1 else ''}" for (method, game), n in sorted(counts.items())]
    if skipped:
        lines.append(f"skipped {len(skipped)}:")
        lines += [f"  {line}" for line in skipped]
    return lines
