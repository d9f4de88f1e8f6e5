"""`compare plot`: PNG figures from the run store (matplotlib, headless).

- learning_curves__<group>__<game>.png: training episode return against agent steps, one line
  per method variant (the table's columns): the mean over seeds of each seed's binned curve, with a 95% confidence band
  (mean +- 1.96 standard errors; none for a single seed);
- conversion__<group>__<game>.png: converted SNN score and conformance against T (one figure
  per conversion variant);
- score_vs_energy__<group>.png: score against energy per decision, one point per variant and
  game (log energy axis), under the table's score and energy conventions.
Groups are the table's (one protocol and budget): runs made differently are never drawn together.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from compare.app.table import ENERGY_CONVENTIONS, Group, RunRecord, check_conventions, group_runs
from compare.core.runstore import ensure_writable_dir, read_jsonl

BINS = 20


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


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
    """Atomically: into a temporary file beside `path`, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")  # legends outside the axes included
    os.replace(tmp, path)
    return path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(group: Group, game: str, path: Path) -> Path | None:
    plt = _figure()
    edges = np.linspace(0, group.budget, BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for column in group.columns:
        curves = [binned_curve(r, edges) for r in group.cell_runs(game, column)
                  if (r.path / "metrics.jsonl").is_file()]
        curves = [c for c in curves if not np.isnan(c).all()]
        if not curves:
            continue  # conversions have no training curve
        stack = np.vstack(curves)
        mean = np.nanmean(stack, axis=0)
        ax.plot(centres, mean, label=f"{column} (n={len(curves)})")
        if len(curves) > 1:
            sem = np.nanstd(stack, axis=0, ddof=1) / np.sqrt(np.sum(~np.isnan(stack), axis=0))
            ax.fill_between(centres, mean - 1.96 * sem, mean + 1.96 * sem, alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="agent steps", ylabel="training episode return (unclipped)", title=f"{game}: {group.label}")
    # Below the axes: variant names are long and would cover the curves.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


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
    ax.plot(ts, score, "o-", color="tab:blue", label="SNN mean return")
    ann = [r.result["ann_mean_return"] for r in runs if r.result.get("ann_mean_return") is not None]
    if ann:
        ax.axhline(np.mean(ann), color="tab:blue", linestyle="--", label="source ANN")
    ax.set(xscale="log", xlabel="simulation time steps T (per decision)", ylabel="mean return (evaluation)")
    ax.set_title(f"{game}: {column}\n{group.label}", fontsize=9)  # variant names are long
    ax.set_xticks(ts, [str(t) for t in ts])
    twin = ax.twinx()
    twin.plot(ts, conformance, "s-", color="tab:orange", label="conformance")
    twin.set(ylabel="conformance (share of states: ANN's action)", ylim=(0, 1.05))
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncol=3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def score_vs_energy(group: Group, path: Path, kind: str = "final", energy: str = "per-step") -> Path | None:
    points = []
    for column in group.columns:
        for game in group.games:
            runs = [r for r in group.cell_runs(game, column) if r.energy(energy)]
            if runs:
                points.append((column, game, np.mean([r.energy(energy) for r in runs]) * 1e6,
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
    ax.set(xscale="log", xlabel=f"energy per decision (uJ, 45 nm compute estimate; {ENERGY_CONVENTIONS[energy][1]})",
           ylabel=f"mean return ({kind.replace('-', ' ')} evaluation)", title=f"score vs energy: {group.label}")
    ax.xaxis.label.set_fontsize(8)
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def write_plots(records: list[RunRecord], out: Path, kind: str = "final", energy: str = "per-step") -> list[Path]:
    check_conventions(kind, energy)
    out = ensure_writable_dir(out)
    written = []
    for group in group_runs(records):
        tag = _slug(group.label)
        for game in group.games:
            path = learning_curves(group, game, out / f"learning_curves__{tag}__{_slug(game)}.png")
            written += [path] if path is not None else []
            for column in group.columns:
                name = f"conversion__{tag}__{_slug(game)}__{_slug(column)}.png"
                path = conversion_curve(group, game, column, out / name)
                written += [path] if path is not None else []
        path = score_vs_energy(group, out / f"score_vs_energy__{tag}.png", kind, energy)
        if path is not None:
            written.append(path)
    return written
