"""`compare plot`: PNG figures from the run store (matplotlib, headless).

- learning_curves__<group>__<game>.png: training episode return against agent steps, one line
  per method variant (the table's columns): the mean over seeds of each seed's binned curve, with
  a 95% Student-t confidence band (mean +- t(0.975, n-1) standard errors; none for one seed);
- conversion__<group>__<game>__<variant>.png: converted SNN score (test and validation episodes)
  and conformance against T, the reported T marked (one figure per conversion variant);
- performance_profile__<group>.png: rliable's performance profiles: for each variant, the share
  of runs (all games) whose final normalized score exceeds tau, with 95% stratified-bootstrap
  bands;
- sample_efficiency__<group>.png: IQM of the normalized score of the periodic evaluations and the
  final one against agent steps, with 95% stratified-bootstrap bands;
- score_vs_energy__<group>.png: score against energy per decision, one point per variant and
  game (log energy axis), under the table's score and energy conventions.
- activity__<run>.png (`--activity RUN`): one episode of a spiking run's deployed network:
  spike rasters, firing-rate histograms and the output over T (compare.app.activity).
Groups are the table's (one protocol and budget): runs made differently are never drawn together.
Scores pool across games only when normalized (as in the table); a figure that cannot be drawn
is reported with its reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy import stats

from compare.app.activity import activity_figure, record_activity
from compare.app.table import (
    ENERGY_CONVENTIONS,
    UNITS,
    Group,
    RunRecord,
    bootstrap,
    check_conventions,
    group_references,
    group_runs,
    reproducible_rliable,
    score_matrix,
)
from compare.core.energy import MODELS
from compare.core.errors import UsageError
from compare.core.runstore import ensure_writable_dir, read_jsonl, write_file
from compare.core.scores import (
    Reference,
    normalized_score,
    published_minatar_curves,
    their_code_minatar_curves,
    training_return_average,
)
from compare.core.training import load_deployed

BINS = 20
PROFILE_POINTS = 101


def t_halfwidth(stack: np.ndarray) -> np.ndarray:
    """Half-width of the 95% Student-t interval of the mean over rows (seeds), per column."""
    n = np.sum(~np.isnan(stack), axis=0)
    sem = np.nanstd(stack, axis=0, ddof=1) / np.sqrt(n)
    return stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sem


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


CURVES = {"episode": "training episode return (unclipped), binned mean",
          "train-ma100": "mean return of the last 100 training episodes (Young & Tian 2019's statistic)"}


def training_average_curve(run: RunRecord, edges: np.ndarray) -> np.ndarray:
    """The 100-episode moving average of training returns at each bin's right edge."""
    records = read_jsonl(run.path / "metrics.jsonl")
    values = [training_return_average(records, int(edge)) for edge in edges[1:]]
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def binned_curve(run: RunRecord, edges: np.ndarray) -> np.ndarray:
    """Mean training episode return of one run in each step bin (carried forward over empty bins)."""
    records = read_jsonl(run.path / "metrics.jsonl")
    steps = np.array([r["step"] for r in records], dtype=np.float64)
    returns = np.array([r["episode_return"] for r in records], dtype=np.float64)
    curve = np.full(len(edges) - 1, np.nan)
    for i in range(len(edges) - 1):
        inside = (steps > edges[i]) & (steps <= edges[i + 1])
        if inside.any():
            curve[i] = returns[inside].mean()
        elif i > 0:
            curve[i] = curve[i - 1]
    return curve


def _save(fig, path: Path) -> Path:
    """Atomically, under a temporary name of its own (two plots into one folder do not collide)."""
    write_file(path, lambda f: fig.savefig(f, dpi=100, format="png", bbox_inches="tight"))  # outside legends too
    return path


def _finish(fig, ax, title: str, path: Path) -> Path:
    """Title, the legend below the axes (variant names are long and would cover the data), and
    the figure saved and closed."""
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    _save(fig, path)
    _figure().close(fig)
    return path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(group: Group, game: str, path: Path, curve: str = "episode") -> Path | None:
    plt = _figure()
    edges = np.linspace(0, group.budget, BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2 if curve == "episode" else edges[1:]
    read = binned_curve if curve == "episode" else training_average_curve
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for column in group.columns:
        curves = [read(r, edges) for r in group.cell_runs(game, column)
                  if (r.path / "metrics.jsonl").is_file()]
        curves = [c for c in curves if not np.isnan(c).all()]
        if not curves:
            continue  # conversions have no training curve
        stack = np.vstack(curves)
        mean = np.nanmean(stack, axis=0)
        ax.plot(centres, mean, label=f"{column} (n={len(curves)})")
        if len(curves) > 1:
            half = t_halfwidth(stack)
            ax.fill_between(centres, mean - half, mean + half, alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    paper = [v for v in (group.variant_of(c) for c in group.columns) if v.preset == "youngtian2019"]
    if group.protocol.get("name") == "youngtian2019" and paper and game in published_minatar_curves():
        points = [p for p in published_minatar_curves()[game] if p[0] <= group.budget]
        if points:  # MinAtar has no frame skip: frames are agent steps
            frames, values, reading = zip(*points)
            ax.errorbar(frames, values, yerr=reading, fmt="k^", capsize=3,
                        label="Young & Tian 2019 DQN, published figure (bars: reading uncertainty)")
        here = [p for p in their_code_minatar_curves().get(game, []) if p[0] <= group.budget]
        if here:
            frames, means, errors = zip(*here)
            ax.errorbar(frames, means, yerr=errors, fmt="s", color="grey", capsize=3,
                        label="their examples/dqn.py run on this kind of machine (3 runs, mean +- s.e.)")
    ax.set(xlabel="agent steps", ylabel=CURVES[curve].split(",")[0].split(" (Young")[0])
    return _finish(fig, ax, f"{game}: {group.label}\nmean over seeds, band: 95% Student-t CI", path)


def conversion_curve(group: Group, game: str, column: str, path: Path) -> Path | None:
    runs = group.cell_runs(game, column)
    by_t: dict[int, list[dict]] = {}
    for r in runs:
        for entry in r.result.get("sweep", []):
            by_t.setdefault(int(entry["timesteps"]), []).append(entry)
    if not by_t:
        return None
    plt = _figure()
    ts = sorted(by_t)
    score = [np.mean([e["mean_return"] for e in by_t[t]]) for t in ts]
    conformance = [np.mean([e["conformance"] for e in by_t[t]]) for t in ts]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ts, score, "o-", color="tab:blue", label="SNN, test episodes")
    if all("validation_mean_return" in e for t in ts for e in by_t[t]):
        validation = [np.mean([e["validation_mean_return"] for e in by_t[t]]) for t in ts]
        ax.plot(ts, validation, "o:", color="tab:green", label="SNN, validation episodes")
    chosen = [int(r.result["timesteps"]) for r in runs if "timesteps" in r.result]
    for t in sorted(set(chosen)):
        ax.axvline(t, color="grey", linewidth=0.8, alpha=0.6)
    if chosen:
        ax.plot([], [], color="grey", linewidth=0.8, label="reported T (" + ", ".join(
            f"{t}: {chosen.count(t)} run{'s' * (chosen.count(t) > 1)}" for t in sorted(set(chosen))) + ")")
    ann = [r.result["ann_mean_return"] for r in runs if r.result.get("ann_mean_return") is not None]
    if ann:
        ax.axhline(np.mean(ann), color="tab:blue", linestyle="--", label="source ANN")
    ax.set(xscale="log", xlabel="simulation time steps T (per decision)", ylabel="mean return (evaluation)")
    fig.suptitle(f"{game}: {column}\n{group.label}", fontsize=9)  # over both y axes: variant names are long
    ax.set_xticks(ts, [str(t) for t in ts])
    twin = ax.twinx()
    twin.plot(ts, conformance, "s-", color="tab:orange", label="conformance")
    twin.set(ylabel="conformance (share of states)", ylim=(0, 1.05))
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def score_vs_energy(group: Group, path: Path, kind: str = "final", energy: str = "per-step",
                    model: str = "memory") -> Path | None:
    points = []
    for column in group.columns:
        for game in group.games:
            runs = [r for r in group.cell_runs(game, column) if r.energy(model, energy)]
            if runs:
                points.append((column, game, np.mean([r.energy(model, energy).total for r in runs]) * 1e6,
                               np.mean([r.score(kind) for r in runs])))
    if not points:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # Colour names the variant, marker shape the game (text labels at the points overlapped).
    colours = {column: f"C{i % 10}" for i, column in enumerate(dict.fromkeys(p[0] for p in points))}
    markers = {game: "osD^vPX*<>"[i % 10] for i, game in enumerate(dict.fromkeys(p[1] for p in points))}
    for column, game, x, y in points:
        ax.scatter([x], [y], color=colours[column], marker=markers[game])
    handles = ([plt.Line2D([], [], color=c, marker="o", linestyle="", label=column) for column, c in colours.items()]
               + [plt.Line2D([], [], color="grey", marker=m, linestyle="", label=game) for game, m in markers.items()])
    ax.set(xscale="log", xlabel=f"energy per decision (uJ; model {model}: {MODELS[model]}; {ENERGY_CONVENTIONS[energy][1]})",
           ylabel=f"mean return ({kind.replace('-', ' ')} evaluation)", title=f"score vs energy: {group.label}")
    ax.xaxis.label.set_fontsize(8)
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _final_scores(group: Group, column: str, unit: str, refs: dict[str, Reference]) -> np.ndarray | None:
    """(runs, games) normalized final scores of one column, as the table's IQM reads them."""
    games = [g for g in group.games if group.cell_runs(g, column)]
    return score_matrix(group, column, games, unit, "final", refs) if games == group.games else None


def performance_profile(group: Group, unit: str, refs: dict[str, Reference], path: Path) -> Path | None:
    """rliable's performance profiles of every column that has runs on every game of the group."""
    from rliable import library as rly

    scores = {c: m for c in group.columns if (m := _final_scores(group, c, unit, refs)) is not None}
    if not scores:
        return None
    low = min(float(m.min()) for m in scores.values())
    high = max(float(m.max()) for m in scores.values())
    taus = np.linspace(min(low, 0.0), high if high > low else low + 1.0, PROFILE_POINTS)
    with reproducible_rliable():
        profiles, cis = rly.create_performance_profile(scores, taus)
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, column in enumerate(scores):
        n = scores[column].shape[0]
        ax.plot(taus, profiles[column], color=f"C{i % 10}", label=f"{column} (n={n} per game)")
        ax.fill_between(taus, cis[column][0], cis[column][1], color=f"C{i % 10}", alpha=0.15)
    ax.set(xlabel=f"final {UNITS[unit].split(':')[0]} tau", ylabel="fraction of runs with score > tau", ylim=(0, 1.02))
    return _finish(fig, ax, f"performance profiles: {group.label}\nbands: 95% stratified-bootstrap CI", path)


def _evaluation_scores(run: RunRecord) -> dict[int, float]:
    """Agent step -> mean return of the run's periodic evaluations and its final one."""
    out = {int(r["step"]): float(r["mean_return"]) for r in read_jsonl(run.path / "evals.jsonl")
           if isinstance(r, dict) and isinstance(r.get("step"), int) and isinstance(r.get("mean_return"), (int, float))}
    out[run.budget] = float(run.result["mean_return"])
    return out


def sample_efficiency(group: Group, unit: str, refs: dict[str, Reference], path: Path) -> Path | None:
    """IQM over runs and games of the normalized evaluation score at each evaluation step that
    every run of a column has (two steps at least)."""
    from rliable import metrics

    def normalized(run: RunRecord, value: float) -> float:
        return value if unit == "raw" else normalized_score(refs[run.game], value)

    curves = {}
    for column in group.columns:
        if any("sweep" in r.result for r in group.runs if r.column == column):
            continue  # derived runs have no periodic evaluations
        per_game = {g: [_evaluation_scores(r) for r in group.cell_runs(g, column)] for g in group.games}
        if any(not runs for runs in per_game.values()):
            continue
        steps = sorted(set.intersection(*(set(e) for runs in per_game.values() for e in runs)))
        if len(steps) < 2:
            continue
        n = min(len(runs) for runs in per_game.values())
        runs_of = {g: group.cell_runs(g, column)[:n] for g in group.games}
        points, lows, highs = [], [], []
        for step in steps:
            matrix = np.array([[normalized(runs_of[g][i], per_game[g][i][step]) for g in group.games]
                               for i in range(n)], dtype=np.float64)
            point, interval = bootstrap({"x": matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]))
            points.append(point["x"][0])
            lows.append(interval["x"][0][0])
            highs.append(interval["x"][1][0])
        curves[column] = (steps, points, lows, highs, n)
    if not curves:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (column, (steps, points, lows, highs, n)) in enumerate(curves.items()):
        ax.plot(steps, points, "o-", color=f"C{i % 10}", markersize=3, label=f"{column} (n={n} per game)")
        ax.fill_between(steps, lows, highs, color=f"C{i % 10}", alpha=0.15)
    ax.set(xlabel="agent steps", ylabel=f"IQM {UNITS[unit].split(':')[0]} (evaluation)")
    return _finish(fig, ax, f"sample efficiency: {group.label}\nbands: 95% stratified-bootstrap CI", path)


def write_plots(records: list[RunRecord], out: Path, kind: str = "final", energy: str = "per-step",
                references: dict[str, Reference] | None = None, curve: str = "episode",
                energy_model: str = "memory") -> tuple[list[Path], list[str]]:
    """Every figure of every group; (the files written, one line per figure not drawn and why).
    `curve`: what the learning curves show (CURVES); `energy_model`: the score-vs-energy
    figure's (compare.core.energy.MODELS)."""
    check_conventions(kind, energy)
    if energy_model not in MODELS:
        raise UsageError(f"--energy-model {energy_model!r}: allowed: {', '.join(MODELS)}")
    if curve not in CURVES:
        raise UsageError(f"--curve {curve!r}: allowed: {', '.join(CURVES)}")
    out = ensure_writable_dir(out)
    written, skipped = [], []

    def keep(path: Path | None, what: str, why: str) -> None:
        if path is None:
            skipped.append(f"{what}: {why}")
        else:
            written.append(path)

    for group in group_runs(records):
        tag = _slug(group.label)
        for game in group.games:
            keep(learning_curves(group, game, out / f"learning_curves__{tag}__{_slug(game)}.png", curve),
                 f"learning curves, {game}, {group.label}", "no run has a training curve (metrics.jsonl)")
            for column in group.columns:
                name = f"conversion__{tag}__{_slug(game)}__{_slug(column)}.png"
                path = conversion_curve(group, game, column, out / name)
                written += [path] if path is not None else []
        unit, refs, missing = group_references(group.games, "auto", references)
        if unit == "raw" and len(group.games) > 1:
            why = f"raw returns of different games do not pool (no reference for {', '.join(missing)})"
            skipped += [f"performance profile, {group.label}: {why}", f"sample efficiency, {group.label}: {why}"]
        else:
            keep(performance_profile(group, unit, refs, out / f"performance_profile__{tag}.png"),
                 f"performance profile, {group.label}", "no column has runs on every game")
            keep(sample_efficiency(group, unit, refs, out / f"sample_efficiency__{tag}.png"),
                 f"sample efficiency, {group.label}", "fewer than two evaluation steps shared by a column's runs "
                 "(periodic evaluations: evals.jsonl)")
        keep(score_vs_energy(group, out / f"score_vs_energy__{tag}.png", kind, energy, energy_model),
             f"score vs energy, {group.label}", "no run recorded the counts its energy is estimated from "
             "(neuro.counts; runs made before the energy models)")
    return written, skipped


def activity_plot(run_dir: Path, out: Path) -> Path:
    """activity__<run>.png: one evaluation episode of the finished spiking run at `run_dir`."""
    deployed = load_deployed(Path(run_dir))
    activity = record_activity(deployed, deployed.settings.seed)  # refuses an ANN before anything is written
    out = ensure_writable_dir(out)
    plt = _figure()
    s = deployed.settings
    fig = activity_figure(activity, f"{s.method} on {s.game}, seed {s.seed}: spikes of its deployed network", plt)
    path = _save(fig, out / f"activity__{_slug(Path(run_dir).resolve().name)}.png")
    plt.close(fig)
    return path
