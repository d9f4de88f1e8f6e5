"""Published reference scores and normalized scores.

Atari: random, human and Nature DQN scores; HNS = (score - random) / (human - random). MinAtar and
classic control: a shipped table (`data/small_env_reference_scores.csv`) of this harness's
measured random-policy score and a published DQN score per game. Aggregates over games (IQM)
are computed on normalized scores only: raw returns of different games are on different scales.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from compare.core.errors import UsageError


@lru_cache(maxsize=1)
def reference_scores() -> dict[str, dict[str, float | None]]:
    """Rows of `data/atari_reference_scores.csv` keyed by ALE ROM id (`space_invaders`)."""
    text = (Path(__file__).parent / "data" / "atari_reference_scores.csv").read_text()
    table = {}
    for row in csv.DictReader(text.splitlines()):
        table[row["game"]] = {
            key: (float(row[key]) if row[key] else None)
            for key in ("random", "human", "nature_dqn_2015")
        }
    return table


def human_normalized_score(rom_id: str | None, score: float) -> float | None:
    """HNS = (score - random) / (human - random); None for games without reference scores."""
    ref = reference_scores().get(rom_id or "")
    if ref is None:
        return None
    return (score - ref["random"]) / (ref["human"] - ref["random"])


@dataclass(frozen=True)
class Reference:
    """What a game's scores are normalized by: (score - random) / (reference - random)."""

    random: float
    reference: float
    reference_name: str   # what `reference` is: "human" (Atari) or a published agent's score
    source: str


SMALL_ENV_REFERENCES = "small_env_reference_scores.csv"
REFERENCE_COLUMNS = ("game", "random", "reference", "reference_name", "source")


def read_references(path: Path) -> dict[str, Reference]:
    """A normalization table (CSV, '#' comment lines, columns REFERENCE_COLUMNS) keyed by game
    name (`MinAtar/Breakout`, `CartPole-v1`); a missing column or a non-numeric score is a
    UsageError naming it."""
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"reference scores {path}: unreadable ({type(e).__name__})") from None
    rows = list(csv.DictReader(lines))
    missing = [c for c in REFERENCE_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise UsageError(f"reference scores {path}: missing column {missing[0]!r} "
                         f"(needed: {', '.join(REFERENCE_COLUMNS)})")
    table = {}
    for n, row in enumerate(rows, start=2):
        try:
            random, reference = float(row["random"]), float(row["reference"])
        except (TypeError, ValueError):
            raise UsageError(f"reference scores {path}, row {n} ({row['game']}): random and reference must be "
                             f"numbers, got {row['random']!r}, {row['reference']!r}") from None
        if not (np.isfinite(random) and np.isfinite(reference)) or reference == random:
            raise UsageError(f"reference scores {path}, row {n} ({row['game']}): random and reference must be "
                             "finite and differ")
        table[row["game"]] = Reference(random, reference, row["reference_name"], row["source"])
    return table


@lru_cache(maxsize=1)
def small_env_references() -> dict[str, Reference]:
    """The shipped table for MinAtar and classic control (random: this harness's measured
    random policy; reference: a published DQN score, with its source)."""
    return read_references(Path(__file__).parent / "data" / SMALL_ENV_REFERENCES)


def normalization_reference(game: str, rom_id: str | None,
                            references: dict[str, Reference] | None = None) -> Reference | None:
    """Atari: random and human (HNS). Other games: the row of `references` (default: the shipped
    table). None when the game has none."""
    atari = reference_scores().get(rom_id or "")
    if atari is not None:
        return Reference(atari["random"], atari["human"], "human", "Mnih et al. 2015 (random and human scores)")
    return (small_env_references() if references is None else references).get(game)


def normalized_score(reference: Reference, score: float) -> float:
    return (score - reference.random) / (reference.reference - reference.random)


TRAINING_WINDOW = 100  # episodes: Young & Tian 2019's "moving average of returns over 100 episodes"
PUBLISHED_CURVES = "minatar_youngtian2019_dqn.csv"
THEIR_CODE_HERE = "minatar_youngtian2019_dqn_rerun.csv"
PUBLISHED_GAMES = {"breakout": "MinAtar/Breakout", "space_invaders": "MinAtar/SpaceInvaders"}


def training_return_average(records: list[dict], at_step: int, window: int = TRAINING_WINDOW) -> float | None:
    """Mean return of the last `window` training episodes that ended at or before `at_step`
    (metrics.jsonl records); None before the first episode."""
    returns = [float(r["episode_return"]) for r in records
               if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= at_step
               and isinstance(r.get("episode_return"), (int, float))]
    return float(np.mean(returns[-window:])) if returns else None


@lru_cache(maxsize=1)
def published_minatar_curves() -> dict[str, list[tuple[int, float, float]]]:
    """Young & Tian 2019's DQN curves read off their figure: game -> [(frames, return,
    reading uncertainty)] (data/minatar_youngtian2019_dqn.csv; its header gives the provenance)."""
    return _curves(PUBLISHED_CURVES, "dqn_return", "reading_uncertainty")


@lru_cache(maxsize=1)
def their_code_minatar_curves() -> dict[str, list[tuple[int, float, float]]]:
    """Young & Tian's examples/dqn.py as published, run on a machine like this one (three runs):
    game -> [(frames, mean, standard error)] (data/minatar_youngtian2019_dqn_rerun.csv)."""
    return _curves(THEIR_CODE_HERE, "mean", "standard_error")


def _curves(name: str, value: str, error: str) -> dict[str, list[tuple[int, float, float]]]:
    """game -> [(frames, value, error)] from a shipped curve file ('#' lines: its provenance)."""
    lines = [line for line in (Path(__file__).parent / "data" / name).read_text().splitlines()
             if line and not line.startswith("#")]
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for row in csv.DictReader(lines):
        curves.setdefault(PUBLISHED_GAMES[row["game"]], []).append(
            (int(row["frames"]), float(row[value]), float(row[error])))
    return curves
