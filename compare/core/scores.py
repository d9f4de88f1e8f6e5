"""Published reference scores (random, human, Nature DQN) and human-normalized scores."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path


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
