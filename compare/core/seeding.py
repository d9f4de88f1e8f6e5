"""Named seed streams: every random use in a run draws from its own stream of one seed.

A run's seed S is the entropy of `numpy.random.SeedSequence(S)`; each use below is a child
sequence keyed by its stream number (and, where a use repeats, an index such as the step of a
periodic evaluation or the round of calibration). Streams never share a key, so no two uses
can collide, whatever the seed, step or round: the last periodic evaluation does not replay the
final evaluation's episodes, and `compare eval` does not replay either.

Adding a stream: give it the next number; never renumber one (old runs would change).
"""

from __future__ import annotations

import numpy as np

MAX_SEED = 2**32 - 1  # largest run seed: the environments take 32-bit seeds

STREAMS = {
    "torch": 0,             # network initialisation and torch's sampling during training
    "train_env": 1,         # training environments; indexed by the step they (re)start at
    "exploration": 2,       # epsilon-greedy draws of the learner
    "replay": 3,            # replay sampling
    "periodic_eval": 4,     # evaluations during training; indexed by step
    "final_eval": 5,        # the evaluation written to eval.json
    "reevaluation": 6,      # `compare eval` and FGSM (eps 0 reproduces its clean score)
    "calibration": 7,       # conversion calibration play; indexed by round
    "export_eval": 8,       # `compare export`'s chip evaluations
    "validation": 9,        # a derived run's validation episodes (its operating point, e.g. T)
    "liveness": 10,         # observations probing a new spiking network's firing; indexed by round
    "init": 11,             # observations of a data-driven initialisation (init=data); indexed by round
    "activity": 12,         # the episode `compare plot --activity` records
    "video": 13,            # the episode `compare eval --video` draws
}


def stream_seed(seed: int, stream: str, *index: int) -> int:
    """A 31-bit seed for one use (`stream`, `index`) of run seed `seed`; deterministic."""
    sequence = np.random.SeedSequence(seed, spawn_key=(STREAMS[stream], *index))
    return int(sequence.generate_state(1, dtype=np.uint32)[0] >> 1)  # env APIs take 31-bit ints
