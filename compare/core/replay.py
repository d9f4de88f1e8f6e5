"""Replay buffer that stores every frame once and rebuilds frame stacks when sampling.

Each env writes its own ring of entries; one entry per agent step holds the newest frame the
agent saw, the action it took, the clipped reward and whether the step ended bootstrapping.
When an episode ends, one extra *final* entry keeps the last frame (the next state of the
last transition). A stack of k frames is the entry and its k-1 predecessors, never reaching
back past the episode's first entry: there the first frame is repeated, exactly as
`compare.core.envs.FrameStacker` fills the agent's own stack. An Atari transition costs one
84x84 frame plus a few bytes, against four (or eight) frames in CleanRL's and SB3's buffers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

FIRST = np.uint8(1)      # first entry of an episode
FINAL = np.uint8(2)      # the extra entry after an episode's last step (no action of its own)
TERMINAL = np.uint8(4)   # no bootstrapping from this step (game over, or a lost life)
CHUNK_BYTES = 16 * 2**20  # frames per checkpoint file; a checkpoint rewrites only chunks that changed


@dataclass
class Batch:
    obs: np.ndarray | torch.Tensor       # a tensor on the replay's device when it keeps frames there
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray | torch.Tensor
    terminals: np.ndarray   # float32 1.0 where the target must not bootstrap


class ReplayBuffer:
    """With `device`, the frames are also kept on that device (a GPU) and stacks are gathered
    there, so that a batch's frames never cross the bus; the host copy stays the one that
    checkpoints read and write, and the indices are drawn on the host either way (the same
    batches)."""

    def __init__(self, capacity: int, num_envs: int, frame_shape: tuple[int, ...], frame_dtype,
                 frame_stack: int, seed: int, device: torch.device | None = None):
        self.num_envs = num_envs
        self.slots = -(-capacity // num_envs)  # ring length of each env
        self.k = frame_stack
        # np.zeros maps pages lazily: a 1M-frame Atari buffer costs memory only as it fills.
        self.frames = np.zeros((num_envs, self.slots, *frame_shape), dtype=frame_dtype)
        self.actions = np.zeros((num_envs, self.slots), dtype=np.uint8)
        self.rewards = np.zeros((num_envs, self.slots), dtype=np.float32)
        self.flags = np.zeros((num_envs, self.slots), dtype=np.uint8)
        self.head = np.zeros(num_envs, dtype=np.int64)     # next slot to write, per env
        self.written = np.zeros(num_envs, dtype=np.int64)  # entries ever written, per env
        self.pending_first = np.ones(num_envs, dtype=bool)
        self.rng = np.random.default_rng(seed)
        self._envs = np.arange(num_envs)
        self.device_frames = (None if device is None else
                              torch.zeros(self.frames.shape, dtype=torch.from_numpy(self.frames[:0, :0]).dtype,
                                          device=device))

    @property
    def bytes_per_entry(self) -> int:
        """Bytes one stored step costs (the frame plus action, reward and flags)."""
        return int(self.frames[0, 0].nbytes + self.actions.itemsize + self.rewards.itemsize
                   + self.flags.itemsize)

    def __len__(self) -> int:
        return int(np.minimum(self.written, self.slots).sum())

    def _write(self, envs, frames, actions, rewards, flags) -> None:
        h = self.head[envs]
        self.frames[envs, h] = frames
        if self.device_frames is not None:
            self.device_frames[torch.as_tensor(envs), torch.as_tensor(h)] = torch.as_tensor(
                self.frames[envs, h]).to(self.device_frames.device)
        self.actions[envs, h] = actions
        self.rewards[envs, h] = rewards
        self.flags[envs, h] = flags
        self.head[envs] = (h + 1) % self.slots
        self.written[envs] += 1

    def add(self, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            terminals: np.ndarray, done: np.ndarray, final_frames: np.ndarray) -> None:
        """Record one vector step.

        `frames` are the newest frames of the observations the actions were taken on;
        `terminals` stop bootstrapping; `done` marks episodes that ended with this step, whose
        last frames are `final_frames`.
        """
        flags = np.where(terminals, TERMINAL, 0) | np.where(self.pending_first, FIRST, 0)
        self._write(self._envs, frames, actions, rewards, flags.astype(np.uint8))
        self.pending_first[:] = done
        if done.any():
            ended = np.flatnonzero(done)
            self._write(ended, final_frames[ended], 0, 0.0, FINAL)

    def end_episodes(self) -> None:
        """Close every open episode at its newest entry (before the envs are reset outside
        `add`, as on resume): that entry becomes the final one and loses its own transition."""
        has_entries = self.written > 0
        newest = (self.head - 1) % self.slots
        open_ = has_entries & ~self.pending_first
        self.flags[self._envs[open_], newest[open_]] = FINAL
        self.pending_first[:] = True

    def _valid(self, envs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        newest = (self.head[envs] - 1) % self.slots
        full = self.written[envs] > self.slots
        # When an env's ring has wrapped, a stack must not reach back into overwritten slots.
        history_ok = ~full | ((idx - self.head[envs]) % self.slots >= self.k - 1)
        return (idx != newest) & ((self.flags[envs, idx] & FINAL) == 0) & history_ok

    def _stack_slots(self, envs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(batch, k) slots of each stack, oldest first, the episode's first repeated."""
        slots = [idx]
        cur = idx
        at_start = (self.flags[envs, cur] & FIRST) != 0
        for _ in range(2, self.k + 1):
            cur = np.where(at_start, cur, (cur - 1) % self.slots)
            slots.append(cur)
            at_start |= (self.flags[envs, cur] & FIRST) != 0
        return np.stack(slots[::-1], axis=1)

    def _stack(self, envs: np.ndarray, idx: np.ndarray) -> np.ndarray | torch.Tensor:
        """The frames of each stack (k = 1: the frame alone), gathered where the frames are."""
        rows, slots = (envs, idx) if self.k == 1 else (envs[:, None], self._stack_slots(envs, idx))
        if self.device_frames is None:
            return self.frames[rows, slots]
        device = self.device_frames.device
        return self.device_frames[torch.as_tensor(rows, device=device), torch.as_tensor(slots, device=device)]

    def sample(self, batch_size: int) -> Batch:
        counts = np.minimum(self.written, self.slots)
        if self.sampleable() == 0:
            raise ValueError("replay buffer holds no complete transition yet")
        envs = np.empty(batch_size, dtype=np.int64)
        idx = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        while len(todo):
            if self.num_envs == 1:
                e = np.zeros(len(todo), dtype=np.int64)
            else:
                e = self.rng.choice(self.num_envs, size=len(todo), p=counts / counts.sum())
            j = (self.rng.random(len(todo)) * counts[e]).astype(np.int64)
            # A full ring's entries sit anywhere; a filling one's start at slot 0.
            ok = self._valid(e, j)
            envs[todo[ok]] = e[ok]
            idx[todo[ok]] = j[ok]
            todo = todo[~ok]
        return self.transitions(envs, idx)

    def transitions(self, envs: np.ndarray, idx: np.ndarray) -> Batch:
        """The transitions starting at entries `idx` of rings `envs` (which must be valid)."""
        nxt = (idx + 1) % self.slots
        return Batch(obs=self._stack(envs, idx), actions=self.actions[envs, idx].astype(np.int64),
                     rewards=self.rewards[envs, idx],
                     next_obs=self._stack(envs, nxt),
                     terminals=((self.flags[envs, idx] & TERMINAL) != 0).astype(np.float32))

    def valid_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (env, entry) pair that starts a complete transition."""
        envs, idx = np.meshgrid(np.arange(self.num_envs), np.arange(self.slots), indexing="ij")
        envs, idx = envs.ravel(), idx.ravel()
        filled = idx < np.minimum(self.written, self.slots)[envs]
        envs, idx = envs[filled], idx[filled]
        ok = self._valid(envs, idx)
        return envs[ok], idx[ok]

    def sampleable(self) -> int:
        """An upper bound on complete transitions held (zero means nothing to sample)."""
        return int(np.maximum(np.minimum(self.written, self.slots) - 1, 0).sum())

    # -- checkpoints: small arrays whole, frames in chunks of about CHUNK_BYTES ------------------
    STATE_KEYS = ("actions", "rewards", "flags", "head", "written", "pending_first")

    @property
    def chunk_slots(self) -> int:
        return max(1, CHUNK_BYTES // max(1, self.frames[0, 0].nbytes))

    def state_dict(self) -> dict:
        """Everything but the frames (a few bytes per slot)."""
        state = {key: getattr(self, key) for key in self.STATE_KEYS}
        state["rng"] = np.array(json.dumps(self.rng.bit_generator.state))
        return state

    def frame_chunks(self, since: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The frame chunks holding entries written after `since` (each env's `written` at an
        earlier save; None: every chunk), each cut to its filled slots: name -> frames."""
        size, chunks = self.chunk_slots, {}
        for env in range(self.num_envs):
            filled = int(min(self.written[env], self.slots))
            new = int(self.written[env] - (0 if since is None else since[env]))
            if since is None or new >= self.slots:
                ranges = [(0, filled)] if filled else []
            elif new <= 0:
                ranges = []
            else:  # half-open slot ranges written since, split where the ring wraps
                start = int(since[env]) % self.slots
                stop = start + new
                ranges = [(start, min(stop, self.slots))] + ([(0, stop - self.slots)] if stop > self.slots else [])
            for lo, hi in ranges:
                for chunk in range(lo // size, (hi - 1) // size + 1):
                    chunks[f"frames-e{env}-c{chunk}"] = self.frames[env, chunk * size:min((chunk + 1) * size, filled)]
        return chunks

    def load_state_dict(self, state: dict, chunks: dict[str, np.ndarray]) -> None:
        for key in self.STATE_KEYS:
            if state[key].shape != getattr(self, key).shape:
                raise ValueError(f"replay {key} has shape {state[key].shape}, expected {getattr(self, key).shape}")
            getattr(self, key)[...] = state[key]
        if ((self.head < 0) | (self.head >= self.slots) | (self.written < 0)).any():
            raise ValueError(f"replay head {self.head.tolist()} or count {self.written.tolist()} lies outside "
                             f"its ring of {self.slots} slots")
        size = self.chunk_slots
        for name, frames in chunks.items():
            env, chunk = (int(part[1:]) for part in name.split("-")[1:])
            target = self.frames[env, chunk * size:chunk * size + len(frames)]
            if frames.shape != target.shape:
                raise ValueError(f"replay {name} has shape {frames.shape}, expected {target.shape}")
            target[...] = frames
        if self.device_frames is not None:
            self.device_frames.copy_(torch.from_numpy(self.frames))
        self.rng.bit_generator.state = json.loads(str(state["rng"]))
