"""Young & Tian 2019's DQN training loop (kenjyoung/MinAtar `examples/dqn.py`, commit 4241f24),
written out step by step: the reference that this project's `youngtian2019` setup is checked
against (`compare reference-loop`) and the baseline `compare bench` (f) times.

What their script does, line by line as it runs: the raw `minatar.Environment(game)` (sticky
actions 0.1, difficulty ramping, the full action set); one tensor per state, action, reward and
flag; transitions as named tuples in a list, overwritten cyclically, sampled with
`random.sample` and concatenated per batch; a uniform random policy before the replay start,
then epsilon-greedy with epsilon annealed from 1 to 0.1 over 100k frames counted from the replay
start; an update of 32 on every frame once `t > 5000`; the target network run on the non-terminal
next states only; Huber loss; centered RMSProp (lr 2.5e-4, alpha 0.95, eps 0.01) without heavy-ball
momentum (their GRAD_MOMENTUM constant was never passed to the optimizer); the target copied
after every 1,000th update; the return of every episode recorded with the frame it ended at,
the last (cut) episode included.

Two deviations, neither of which changes the algorithm: their script seeds nothing (each run is
its own seed) and this loop seeds Python, NumPy, torch and the environment from `seed`; and the
run stops after `frames` frames instead of their NUM_FRAMES = 5M.
"""

from __future__ import annotations

import copy
import random
import time
from collections import namedtuple
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compare.core.envs import MINATAR_GAMES, EnvSpec
from compare.core.errors import UsageError
from compare.core.networks import build_ann
from compare.core.runstore import read_json, write_json
from compare.core.scores import training_return_average

BATCH_SIZE = 32
REPLAY_BUFFER_SIZE = 100_000
TARGET_NETWORK_UPDATE_FREQ = 1_000
FIRST_N_FRAMES = 100_000
REPLAY_START_SIZE = 5_000
END_EPSILON = 0.1
STEP_SIZE = 0.00025
SQUARED_GRAD_MOMENTUM = 0.95
MIN_SQUARED_GRAD = 0.01
GAMMA = 0.99

Transition = namedtuple("Transition", "state next_state action reward terminal")


@dataclass
class LoopResult:
    """Every episode's return and the frame count when it ended (their `returns` and
    `frame_stamps`), and the frames/s of the frames that made an update."""
    returns: list[float] = field(default_factory=list)
    frame_stamps: list[int] = field(default_factory=list)
    training_frames_per_s: float = 0.0


def _state(frame: np.ndarray) -> torch.Tensor:
    return torch.tensor(frame).permute(2, 0, 1).unsqueeze(0).float()


def _train(sample: list[Transition], q: torch.nn.Module, target: torch.nn.Module, optimizer) -> None:
    batch = Transition(*zip(*sample))
    states, next_states = torch.cat(batch.state), torch.cat(batch.next_state)
    actions, rewards, terminals = torch.cat(batch.action), torch.cat(batch.reward), torch.cat(batch.terminal)
    q_sa = q(states).gather(1, actions)
    live = torch.tensor([i for i, done in enumerate(terminals) if done == 0], dtype=torch.int64)
    live_next = next_states.index_select(0, live)
    next_q = torch.zeros(len(sample), 1)
    if len(live_next) != 0:
        next_q[live] = target(live_next).detach().max(1)[0].unsqueeze(1)
    loss = F.smooth_l1_loss(rewards + GAMMA * next_q, q_sa)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def youngtian2019_dqn(game: str, frames: int, seed: int) -> LoopResult:
    """Train their DQN on MinAtar `game` (e.g. "breakout") for `frames` frames."""
    from minatar import Environment

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = Environment(game)
    env.seed(seed)
    n_actions = env.num_actions()
    q = build_ann("minatar", (env.state_shape()[2], 10, 10), n_actions)  # their QNetwork's layers
    target = copy.deepcopy(q)
    optimizer = torch.optim.RMSprop(q.parameters(), lr=STEP_SIZE, alpha=SQUARED_GRAD_MOMENTUM, centered=True,
                                    eps=MIN_SQUARED_GRAD)
    buffer: list[Transition] = []
    cursor, updates, t = 0, 0, 0
    result, clock = LoopResult(), None
    while t < frames:
        episode_return = 0.0
        env.reset()
        state, terminal = _state(env.state()), False
        while not terminal and t < frames:
            if t < REPLAY_START_SIZE:
                action = torch.tensor([[random.randrange(n_actions)]])
            else:
                epsilon = END_EPSILON if t - REPLAY_START_SIZE >= FIRST_N_FRAMES else (
                    (END_EPSILON - 1.0) / FIRST_N_FRAMES * (t - REPLAY_START_SIZE) + 1.0)
                if np.random.binomial(1, epsilon) == 1:
                    action = torch.tensor([[random.randrange(n_actions)]])
                else:
                    with torch.no_grad():
                        action = q(state).max(1)[1].view(1, 1)
            reward, terminal = env.act(action)
            next_state = _state(env.state())
            reward_t = torch.tensor([[reward]]).float()
            transition = Transition(state, next_state, action, reward_t, torch.tensor([[terminal]]))
            if len(buffer) < REPLAY_BUFFER_SIZE:
                buffer.append(transition)
            else:
                buffer[cursor] = transition
            cursor = (cursor + 1) % REPLAY_BUFFER_SIZE
            if t > REPLAY_START_SIZE and len(buffer) >= BATCH_SIZE:
                if clock is None:
                    clock = (time.perf_counter(), t)
                updates += 1
                _train(random.sample(buffer, BATCH_SIZE), q, target, optimizer)
            if updates > 0 and updates % TARGET_NETWORK_UPDATE_FREQ == 0:
                target.load_state_dict(q.state_dict())
            episode_return += reward_t.item()
            t += 1
            state = next_state
        result.returns.append(episode_return)
        result.frame_stamps.append(t)
    if clock is not None and t > clock[1]:
        result.training_frames_per_s = (t - clock[1]) / (time.perf_counter() - clock[0])
    return result


def run_file(out: Path, game: str, seed: int) -> Path:
    return out / f"youngtian2019-dqn__{game}__seed{seed}.json"


def run_reference_loop(spec: EnvSpec, frames: int, seeds: tuple[int, ...], out: Path, at: tuple[int, ...],
                       echo=print) -> list[dict]:
    """Each seed's run of their loop, saved as it finishes (returns, frame stamps, speed, versions);
    a seed whose file holds `frames` frames is read back, not rerun. Returns one row per `at` frame
    count: their statistic (mean of the last 100 training-episode returns) per run, the mean and
    its standard error over runs (ddof 1)."""
    if spec.family != "minatar":
        raise UsageError(f"the Young & Tian loop runs MinAtar games only; {spec.name} is {spec.family}")
    if any(a > frames for a in at):
        raise UsageError(f"--at {max(at)} is past --frames {frames}")
    game = MINATAR_GAMES[spec.name.split("/", 1)[1]]
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        path = run_file(out, game, seed)
        try:
            saved = read_json(path)
        except (OSError, ValueError):  # absent, or cut short by a kill: run it (again)
            saved = None
        if not (isinstance(saved, dict) and saved.get("frames") == frames):
            started = time.time()
            result = youngtian2019_dqn(game, frames, seed)
            saved = {"loop": "Young & Tian 2019 examples/dqn.py (kenjyoung/MinAtar 4241f24), compare.app.reference_loop",
                     "game": spec.name, "frames": frames, "seed": seed, "returns": result.returns,
                     "frame_stamps": result.frame_stamps, "training_frames_per_s": result.training_frames_per_s,
                     "wall_s": time.time() - started, "threads": torch.get_num_threads(),
                     "versions": {"minatar": version("minatar"), "torch": torch.__version__}}
            write_json(path, saved)
            echo(f"{spec.name} seed {seed}: {frames:,} frames, {len(result.returns):,} episodes, "
                 f"{result.training_frames_per_s:,.0f} training frames/s -> {path}")
        runs.append([{"step": s, "episode_return": r} for s, r in zip(saved["frame_stamps"], saved["returns"])])
    rows = []
    for frame in at:
        values = [training_return_average(records, frame) for records in runs]
        values = [v for v in values if v is not None]
        se = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
        rows.append({"game": game, "frames": frame, "runs": values, "mean": float(np.mean(values)),
                     "standard_error": se})
    return rows
