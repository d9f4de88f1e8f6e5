"""`compare bench`: speed of the harness and the learner, as ratios to baselines run here.

(a) environment steps/s: `VecEnv` (ale-py's C++ vector env) against gymnasium's single-env
    AtariPreprocessing + FrameStackObservation stack;
(b) DQN training steps/s on an Atari game: our learner (one env, as CleanRL, frame-once replay)
    against a CleanRL-style loop (one gymnasium env, replay of stacked observations) doing the
    very same updates with the same network;
(c) replay bytes per transition, ours against the layout CleanRL's `dqn_atari.py` uses (SB3's
    ReplayBuffer with optimize_memory_usage: one stacked observation, int64 action, float32
    reward, done and timeout per transition);
(d) DSQN (T=8) training-step time over the ANN DQN's, both through the same learner update on
    the Nature CNN (batch 32) at one thread (at two, on two cores, the ANN's update slows more
    from oversubscription than the DSQN's), next to the dense MAC ratio of the two networks;
(e) two CartPole DQN runs side by side (`compare run --threads 1` each, as a sweep with two
    workers on two cores runs them) against one alone: each one's steps/s as a share of the solo
    run's;
(f) training steps/s on MinAtar Breakout at one thread, an update of batch 32 every step: our
    learner (the `youngtian2019` preset and protocol) with the ANN DQN and with the DSQN (T = 8,
    the `minatar` option preset) against the loop of the MinAtar authors' own PyTorch DQN as
    published (Young & Tian 2019, `examples/dqn.py` in kenjyoung/MinAtar: centered RMSProp
    without momentum), written out in `compare.app.reference_loop`, timed over its frames that
    make an update;
(g) PPO training steps/s on the Atari game (the `atari` preset): our learner with the
    shared-trunk critic and with its separate critic, against the loop of CleanRL's
    ppo_atari.py, written out here (gymnasium's Atari preprocessing for its envs).
(h) each update of (d) and of (f)'s learners against its arithmetic floor: its matmul and
    convolution FLOPs (torch's FlopCounterMode) at this machine's measured one-thread FP32 matmul
    rate, and against the time of those very kernels, each run alone at its own shapes (what the
    update would cost if nothing else did); (f) sets the latter against the step its goals need.
(i) the committed MinAtar study's training cost at 1M agent steps per run, projected from each
    training cell's steps/s (each method on each game) as a run of that study trains it (one
    thread, one run at a time; (e) gives the share two runs side by side keep).
(j) the cost accounting's overhead on an evaluation: the Atari and the MinAtar DSQN (T = 8,
    initialised as a run initialises them) deciding one observation at a time, with and without
    `CostMeter`.
(b) also times our learner with `overlap_updates` (training phases in a second thread).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from compare.app.reference_loop import REPLAY_START_SIZE, youngtian2019_dqn
from compare.app.resolve import resolve_settings
from compare.app.sweep import Cell, from_toml
from compare.core import linear
from compare.core.accounting import CostMeter, dense_macs
from compare.core.dqn import DQNLearner
from compare.core.envs import VecEnv, resolve_env
from compare.core.errors import UsageError
from compare.core.evaluation import random_observations
from compare.core.learner import Learner
from compare.core.liveness import initial_scales
from compare.core.networks import build_ann
from compare.core.ppo import PPOLearner
from compare.core.protocols import get_protocol
from compare.core.registry import get_method
from compare.core.replay import FINAL, Batch, ReplayBuffer
from compare.core.runstore import Run
from compare.core.training import build_networks, new_deployed_network

WARMUP = 1000  # agent steps before updates start, in both training measurements


def _gym_atari_env(spec, protocol):
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = gym.make(f"ALE/{spec.name}-v5", frameskip=1,
                   repeat_action_probability=protocol.sticky_action_prob)
    env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, noop_max=protocol.noop_max)
    return gym.wrappers.FrameStackObservation(env, 4)


def gym_env_steps_per_s(spec, protocol, steps: int) -> float:
    env = _gym_atari_env(spec, protocol)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def harness_env_steps_per_s(spec, protocol, steps: int, num_envs: int) -> float:
    env = VecEnv(spec, protocol, num_envs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        env.step(rng.integers(env.n_actions, size=num_envs))
    rate = (steps // num_envs) * num_envs / (time.perf_counter() - start)
    env.close()
    return rate


class StackedReplay:
    """The CleanRL/SB3 layout: every transition keeps its own 4-frame obs and next obs."""

    def __init__(self, capacity: int, obs_shape, seed: int):
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.uint8)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=np.float32)
        self.size = self.pos = 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, next_obs, action, reward, terminal):
        i = self.pos
        self.obs[i], self.next_obs[i], self.actions[i] = obs, next_obs, action
        self.rewards[i], self.terminals[i] = reward, terminal
        self.pos = (i + 1) % len(self.obs)
        self.size = min(self.size + 1, len(self.obs))

    def sampleable(self) -> int:
        return self.size

    def sample(self, batch_size: int) -> Batch:
        idx = self.rng.integers(self.size, size=batch_size)
        return Batch(self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx],
                     self.terminals[idx])


def sb3_memory_saving_bytes(obs_shape: tuple[int, ...]) -> int:
    """Bytes per transition of SB3's ReplayBuffer(optimize_memory_usage=True) on Atari, as
    CleanRL's dqn_atari.py builds it: the observation once (next = the following slot), an int64
    action, float32 reward, done and timeout."""
    return int(np.prod(obs_shape)) + 8 + 4 + 4 + 4


def _bench_learner(spec, protocol, steps: int, num_envs: int, run: Run,
                   network: torch.nn.Module | None = None, preset: str = "cleanrl",
                   overlap_updates: bool = False) -> DQNLearner:
    config = dataclasses.replace(DQNLearner.preset(preset), num_envs=num_envs, learning_starts=WARMUP,
                                 buffer_size=50_000, checkpoint_interval=10**9, save_replay="never",
                                 overlap_updates=overlap_updates)
    env = VecEnv(spec, protocol, num_envs)
    env.reset(seed=0)
    torch.manual_seed(0)
    network = network or build_ann(spec.family, env.obs_shape, env.n_actions)
    return DQNLearner({"q": network}, env, config, protocol, WARMUP + steps, seed=0,
                      device=torch.device("cpu"), run=run)


def ours_train_steps_per_s(spec, protocol, steps: int, num_envs: int, run: Run, preset: str = "cleanrl",
                           overlap_updates: bool = False,
                           network: torch.nn.Module | None = None) -> tuple[float, ReplayBuffer]:
    """Learner steps/s once updates run (the ANN of the family, or `network`), and its replay as
    the run left it."""
    learner = _bench_learner(spec, protocol, steps, num_envs, run, network, preset=preset,
                             overlap_updates=overlap_updates)
    rate = steps_per_s_after(learner, WARMUP, steps)
    learner.env.close()
    return rate, learner.replay


def steps_per_s_after(learner, warm: int, steps: int) -> float:
    """Agent steps/s of a new learner from step `warm` (reached untimed) to `warm + steps`."""
    learner.begin()
    learner.train_until(warm)
    start, first = time.perf_counter(), learner.state.step
    learner.train_until(warm + steps)
    return (learner.state.step - first) / (time.perf_counter() - start)


def run_learner(method_name: str, game: str, protocol: str, overrides: dict[str, str], steps: int,
                run: Run) -> tuple[Learner, int]:
    """The learner `compare run` would build (settings resolved, networks built, no checkpoints
    or saved replay) for `steps` agent steps past its warm-up, and that warm-up: the replay
    start, or PPO_WARMUP_ROLLOUTS rollouts."""
    method = get_method(method_name)
    q_learner = method.learner is DQNLearner
    settings = resolve_settings(method_name, game, 0, None, protocol, None, overrides, "cpu")
    config = dataclasses.replace(settings.learner, checkpoint_interval=10**9,
                                 **({"save_replay": "never"} if q_learner else {}))
    warm = config.learning_starts if q_learner else config.rollout_size * PPO_WARMUP_ROLLOUTS
    spec = resolve_env(game)
    env = VecEnv(spec, settings.protocol, config.num_envs)
    env.reset(seed=0)
    torch.manual_seed(0)
    networks = build_networks(method, settings, spec, env.obs_shape, env.n_actions)
    return method.learner(networks, env, config, settings.protocol, warm + steps, 0, torch.device("cpu"), run), warm


def replay_bytes_per_transition(replay: ReplayBuffer) -> float:
    """Measured replay bytes per stored transition (episode-final entries counted as overhead)."""
    entries = int(np.minimum(replay.written, replay.slots).sum())
    transitions = entries - int(((replay.flags & FINAL) != 0).sum())
    return replay.bytes_per_entry * entries / max(1, transitions)


def cleanrl_style_train_steps_per_s(spec, protocol, steps: int, run: Run) -> float:
    """One gymnasium env, stacked replay, same learner update; steps/s after the warm-up."""
    learner = _bench_learner(spec, protocol, steps, 1, run)
    learner.env.close()
    env = _gym_atari_env(spec, protocol)
    replay = StackedReplay(50_000, (4, 84, 84), seed=0)
    learner.replay = replay
    obs, _ = env.reset(seed=0)
    cfg, start = learner.cfg, None
    for step in range(WARMUP + steps):
        if step == WARMUP:
            start = time.perf_counter()
        action = learner._act(np.asarray(obs)[None], cfg.epsilon(step, WARMUP + steps))[0]
        next_obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, next_obs, action, np.sign(reward), terminated)
        obs = env.reset()[0] if (terminated or truncated) else next_obs
        if step >= WARMUP and step % cfg.train_freq == 0:
            learner.update_once()
        if step % cfg.target_update_period == 0:
            learner.target.load_state_dict(learner.q.state_dict())
    env.close()
    return steps / (time.perf_counter() - start)


PPO_WARMUP_ROLLOUTS = 1  # rollouts (and their updates) before the clock starts


def ppo_train_steps_per_s(spec, protocol, rollouts: int, run: Run, shared_trunk: bool) -> tuple[float, float]:
    """(g), ours: PPO training steps/s over `rollouts` rollouts and updates (the `atari` preset:
    8 envs x 128 steps, 4 epochs of minibatch 256), and the MACs of actor + critic per state."""
    steps = PPOLearner.preset("atari").rollout_size * rollouts
    learner, warm = run_learner("ppo", spec.name, protocol.name, {"shared_trunk": str(shared_trunk)}, steps, run)
    rate = steps_per_s_after(learner, warm, steps)
    learner.env.close()
    obs = torch.zeros(1, *learner.env.obs_shape, dtype=torch.uint8)
    return rate, sum(sum(layer_macs(net, obs)) for net in learner.networks.values())


class CleanRLAgent(torch.nn.Module):
    """The Agent of CleanRL's ppo_atari.py: the Nature CNN trunk shared by a policy output and a
    value output, orthogonal initialization, input divided by 255."""

    def __init__(self, n_actions: int):
        super().__init__()
        def layer(module, std=2 ** 0.5):
            torch.nn.init.orthogonal_(module.weight, std)
            torch.nn.init.constant_(module.bias, 0.0)
            return module
        self.network = torch.nn.Sequential(
            layer(torch.nn.Conv2d(4, 32, 8, stride=4)), torch.nn.ReLU(),
            layer(torch.nn.Conv2d(32, 64, 4, stride=2)), torch.nn.ReLU(),
            layer(torch.nn.Conv2d(64, 64, 3, stride=1)), torch.nn.ReLU(), torch.nn.Flatten(),
            layer(torch.nn.Linear(64 * 7 * 7, 512)), torch.nn.ReLU())
        self.actor = layer(torch.nn.Linear(512, n_actions), std=0.01)
        self.critic = layer(torch.nn.Linear(512, 1), std=1)

    def get_value(self, x):
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x / 255.0)
        probs = torch.distributions.Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def cleanrl_ppo_steps_per_s(spec, protocol, rollouts: int) -> float:
    """(g)'s baseline: the loop of CleanRL's ppo_atari.py with its defaults (8 envs in a
    SyncVectorEnv x 128 steps, float32 rollout storage, GAE, 4 epochs of 4 minibatches, clipped
    value loss, grad-norm clip 0.5, lr annealed), on gymnasium's Atari preprocessing. Steps/s after
    the first rollout and update."""
    import gymnasium as gym

    cfg = PPOLearner.preset("atari")
    num_envs, num_steps = cfg.num_envs, cfg.num_steps
    envs = gym.vector.SyncVectorEnv([lambda: _gym_atari_env(spec, protocol) for _ in range(num_envs)])
    torch.manual_seed(0)
    agent = CleanRLAgent(int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    obs = torch.zeros((num_steps, num_envs, *envs.single_observation_space.shape))
    actions = torch.zeros((num_steps, num_envs))
    logprobs, rewards, dones, values = (torch.zeros((num_steps, num_envs)) for _ in range(4))
    next_obs = torch.Tensor(np.asarray(envs.reset(seed=0)[0]))
    next_done = torch.zeros(num_envs)
    batch_size = num_envs * num_steps
    total = PPO_WARMUP_ROLLOUTS + rollouts
    for iteration in range(1, total + 1):
        if iteration == PPO_WARMUP_ROLLOUTS + 1:
            start = time.perf_counter()
        optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / total) * cfg.lr
        for step in range(num_steps):
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step], logprobs[step] = action, logprob
            next_obs_np, reward, terminations, truncations, _ = envs.step(action.cpu().numpy())
            rewards[step] = torch.tensor(np.sign(reward)).view(-1)
            next_obs = torch.Tensor(np.asarray(next_obs_np))
            next_done = torch.Tensor(np.logical_or(terminations, truncations).astype(np.float32))
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(num_steps)):
                nextnonterminal = 1.0 - (next_done if t == num_steps - 1 else dones[t + 1])
                nextvalues = next_value if t == num_steps - 1 else values[t + 1]
                delta = rewards[t] + cfg.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + cfg.gamma * cfg.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs = obs.reshape((-1, *envs.single_observation_space.shape))
        b_logprobs, b_actions, b_advantages = logprobs.reshape(-1), actions.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values.reshape(-1)
        b_inds = np.arange(batch_size)
        for _ in range(cfg.update_epochs):
            np.random.shuffle(b_inds)
            for begin in range(0, batch_size, cfg.minibatch_size):
                mb = b_inds[begin:begin + cfg.minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions.long()[mb])
                ratio = (newlogprob - b_logprobs[mb]).exp()
                with torch.no_grad():  # CleanRL logs these every minibatch
                    approx_kl = ((ratio - 1) - (newlogprob - b_logprobs[mb])).mean()
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                newvalue = newvalue.view(-1)
                v_clipped = b_values[mb] + (newvalue - b_values[mb]).clamp(-cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * torch.max((newvalue - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                loss = pg_loss - cfg.ent_coef * entropy.mean() + v_loss * cfg.vf_coef
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()
        del approx_kl, clipfrac
    rate = batch_size * rollouts / (time.perf_counter() - start)
    envs.close()
    return rate


def layer_macs(net: torch.nn.Module, obs: torch.Tensor) -> list[int]:
    """Dense MACs of each convolution and linear layer in one forward pass of `net` on `obs`."""
    macs: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: macs.append(dense_macs(m, i[0], o)))
             for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            net(obs)
    finally:
        for hook in hooks:
            hook.remove()
    return macs


def matmul_flops_per_s(size: int = 512, reps: int = 20) -> float:
    """FP32 matmul throughput at the current thread count (FLOP/s, median of `reps`) of the
    faster of torch's BLAS and oneDNN (where torch has it): the rate an update's arithmetic
    could at best run at on this machine."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    products = [lambda: a @ b] + ([lambda: linear.onednn_product(a, b.t())] if linear.onednn_available() else [])
    best = []
    for product in products:
        times = []
        for _ in range(reps + 2):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
        best.append(float(np.median(times[2:])))
    return 2 * size**3 / min(best)


def update_flops(learner: DQNLearner) -> int:
    """FLOPs of one learner update (2 per multiply-add) as torch's FlopCounterMode counts them:
    the matmuls and convolutions of the online network's forward and backward and the target's
    forward; elementwise work (neurons, loss, optimizer) is not counted."""
    with flop_counter() as counter:
        learner.update_once()
    return counter.get_total_flops()


def onednn_product_flops(x_shape, weight_shape, *args, **kwargs) -> int:
    """FlopCounterMode's formula for oneDNN's linear operator (x @ weight.T)."""
    return 2 * math.prod(x_shape) * weight_shape[0]


def flop_counter():
    """torch's FlopCounterMode, also counting oneDNN's linear operator (compare.core.linear)."""
    from torch.utils.flop_counter import FlopCounterMode

    formulas = {linear.ONEDNN_PRODUCT: onednn_product_flops} if linear.ONEDNN_PRODUCT else {}
    return FlopCounterMode(display=False, custom_mapping=formulas)


# The operators whose FLOPs (h) counts: matrix products and convolutions, forward and backward.
KERNEL_OPS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.baddbmm,
              torch.ops.aten.convolution, torch.ops.aten.convolution_backward, linear.ONEDNN_PRODUCT}


class KernelCapture(TorchDispatchMode):
    """Records every call of a `KERNEL_OPS` operator made inside it, with copies of its arguments."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in KERNEL_OPS:
            copy = lambda a: a.detach().clone() if isinstance(a, torch.Tensor) else a  # noqa: E731
            self.calls.append((func, *tree_map(copy, (args, kwargs))))
        return func(*args, **kwargs)


def update_kernel_seconds(learner: DQNLearner, round_seconds: float = 0.01, rounds: int = 5) -> float:
    """Seconds of one update's matrix products and convolutions, each run alone on copies of its
    own arguments (the median of `rounds` rounds of about `round_seconds` each, summed over the
    kernels): what the update would take if nothing but those kernels cost time, a floor for
    any implementation doing the same arithmetic with the same library kernels."""
    with KernelCapture() as capture:
        learner.update_once()
    total = 0.0
    for func, args, kwargs in capture.calls:
        start = time.perf_counter()
        func(*args, **kwargs)  # warm
        reps = max(1, min(100, round(round_seconds / (time.perf_counter() - start))))
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(reps):
                func(*args, **kwargs)
            times.append((time.perf_counter() - start) / reps)
        total += float(np.median(times))
    return total


@dataclasses.dataclass(frozen=True)
class UpdateTime:
    seconds: float          # one learner update, median
    flops: int              # its matrix products' and convolutions' FLOPs
    kernel_seconds: float   # those kernels alone (update_kernel_seconds)


def update_times(spec, protocol, networks: dict[str, torch.nn.Module], run: Run, preset: str = "cleanrl",
                 rounds: int = 5) -> dict[str, UpdateTime]:
    """Each network's median seconds per learner update (the networks alternating, all on one
    replay filled by a random policy), the update's FLOPs and its kernels' time alone."""
    names = list(networks)
    learners = {name: _bench_learner(spec, protocol, 0, 1, run, networks[name], preset) for name in names}
    first = learners[names[0]]
    first.begin()
    first.train_until(WARMUP)  # fills the replay; no update happens before WARMUP
    for lrn in learners.values():
        lrn.env.close()
        lrn.replay = first.replay
    flops = {name: update_flops(lrn) for name, lrn in learners.items()}
    kernels = {name: update_kernel_seconds(lrn) for name, lrn in learners.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, lrn in learners.items():
            lrn.update_once()  # warm
            start = time.perf_counter()
            for _ in range(3):
                lrn.update_once()
            times[name].append((time.perf_counter() - start) / 3)
    return {name: UpdateTime(float(np.median(times[name])), flops[name], kernels[name]) for name in names}


def through_blas(measure: Callable[[], float]) -> Callable[[], float]:
    """`measure` with every linear layer through torch's F.linear (compare.core.linear)."""
    def measured() -> float:
        with linear.linear_kernel("blas"):
            return measure()
    return measured


@contextlib.contextmanager
def single_thread():
    """torch at one thread inside the block (as one sweep worker of two on two cores runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def spiking_and_ann(spec, protocol, options) -> dict[str, torch.nn.Module]:
    """The family's ANN Q-network and a DSQN with `options` (its options type) on the same
    synapse stack, the DSQN built as its registered method builds it."""
    env = VecEnv(spec, protocol, 1)
    env.reset(seed=0)  # the shape is known once a frame is seen
    shape, n_actions = env.obs_shape, env.n_actions
    env.close()
    torch.manual_seed(0)
    dsqn = get_method("dsqn").build_network(options, spec.family, shape, n_actions)
    return {"dqn": build_ann(spec.family, shape, n_actions), "dsqn": dsqn}


# The committed MinAtar study, whose training cost (i) projects.
STUDY = Path(__file__).resolve().parents[1] / "studies" / "minatar.toml"


def study_steps_per_s(steps: int, run: Run) -> dict[Cell, float]:
    """Training steps/s of each training cell of the study's first seed (one per method and
    game; derived cells such as conversions train nothing), as its run trains it: the study's
    protocol and learner presets, one env, past the replay start or first rollout and with
    epsilon already at its final value, as in almost all of a long run."""
    spec = from_toml(STUDY)
    rates = {}
    for cell in spec.cells():
        if cell.source is None and cell.seed == spec.seeds[0]:
            q_learner = get_method(cell.method).learner is DQNLearner
            overrides = {"learning_starts": str(WARMUP), "epsilon_decay_steps": "1"} if q_learner else {}
            learner, warm = run_learner(cell.method, cell.game, spec.protocol, overrides, steps, run)
            rates[cell] = steps_per_s_after(learner, warm, steps)
            learner.env.close()
    return rates


def study_core_hours(rates: dict[Cell, float], steps_per_run: int) -> float:
    """Core-hours of the study's training at `steps_per_run` agent steps per run, one thread
    each: every seed of a cell at that cell's measured rate."""
    seeds = len(from_toml(STUDY).seeds)
    return sum(seeds * steps_per_run / rate for rate in rates.values()) / 3600


def dense_mac_ratio(n_actions: int, timesteps: int) -> float:
    """DSQN MACs if every synaptic operation were dense (the first layer once, the others T
    times) over the ANN's MACs."""
    macs = layer_macs(build_ann("atari", (4, 84, 84), n_actions), torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
    return (macs[0] + timesteps * sum(macs[1:])) / sum(macs)


def concurrent_run_shares(steps: int, out: Path) -> tuple[float, list[float]]:
    """(e): wall-clock steps/s of one CartPole DQN run alone, and of each of two started together,
    as shares of the solo rate. Each run is its own `compare run` process with one thread."""
    def start(name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "compare", "run", "--method", "dqn", "--game", "CartPole-v1", "--steps",
               str(steps), "--set", "eval_episodes=1", "--threads", "1", "--quiet", "--out", str(out), "--name", name]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def timed(names: list[str]) -> list[float]:
        begin = time.perf_counter()
        procs = [start(name) for name in names]
        ends = []
        for proc in procs:
            if proc.wait() != 0:
                raise UsageError("a benchmark run failed; run `compare run --method dqn --game CartPole-v1` "
                                 "to see why")
            ends.append(time.perf_counter() - begin)
        return [steps / t for t in ends]

    (solo,) = timed(["solo"])
    pair = timed(["pair-a", "pair-b"])
    return solo, [rate / solo for rate in pair]


# (j): one meter over all of a round's decisions (an evaluation makes more: 30 Breakout
# episodes are tens of thousands); a meter builds its fan-out maps once.
def metered_evaluation_times(game: str, protocol_name: str, rounds: int = 5,
                             decisions: int = 1_000) -> tuple[float, float]:
    """(j): median seconds per decision of a new run's deployed DSQN (`compare run --method
    dsqn` on `game`, its default init) over random-policy observations, without and with
    `CostMeter` attached, the two taking turns."""
    settings = resolve_settings("dsqn", game, 0, None, protocol_name, None, {}, "cpu")
    spec = resolve_env(game)
    network = new_deployed_network(get_method("dsqn"), settings, spec)
    initial_scales(network, settings.options, spec, settings.protocol, settings.seed)  # rescales it in place
    network.eval()
    observations = torch.as_tensor(random_observations(spec, settings.protocol, decisions, 0, "liveness"))

    def decide_all() -> None:
        with torch.inference_mode():
            for obs in observations:
                network(obs[None]).argmax(dim=1)

    def plain() -> float:
        start = time.perf_counter()
        decide_all()
        return (time.perf_counter() - start) / len(observations)

    def metered() -> float:
        start = time.perf_counter()
        with CostMeter(network) as meter:
            decide_all()
        meter.summary()
        return (time.perf_counter() - start) / len(observations)

    times = alternated_medians({"plain": plain, "metered": metered}, rounds)
    return times["plain"], times["metered"]


def alternated_medians(measures: dict[str, Callable[[], float]], rounds: int = 3) -> dict[str, float]:
    """Each measure's median over `rounds` rounds, the measures taking turns within a round:
    a shared machine drifts by tens of percent between minutes, and a ratio of two measures
    taken minutes apart would carry that drift."""
    values: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            values[name].append(measure())
    return {name: float(np.median(v)) for name, v in values.items()}


def run_benchmarks(game: str, env_steps: int, train_steps: int, echo=print, num_envs: int = 16,
                   concurrent_steps: int = 10_000, ppo_rollouts: int = 3, rounds: int = 3,
                   decisions: int = 1_000) -> dict:
    spec = resolve_env(game)
    if spec.family != "atari":
        raise UsageError(f"the benchmark measures Atari games; {spec.name} is {spec.family}")
    protocol = get_protocol("nature")
    echo(f"compare bench: {spec.name}, torch threads {torch.get_num_threads()}; (a), (b) and (f): medians of "
         f"{rounds} alternated rounds; (d) and (h): medians of 5")
    rates = alternated_medians({"gym": lambda: gym_env_steps_per_s(spec, protocol, env_steps),
                                "ours": lambda: harness_env_steps_per_s(spec, protocol, env_steps, num_envs)}, rounds)
    gym_rate, ours_rate = rates["gym"], rates["ours"]
    echo(f"(a) env steps/s: harness VecEnv x{num_envs} {ours_rate:,.0f} | gymnasium "
         f"AtariPreprocessing+FrameStack single env {gym_rate:,.0f} | ratio {ours_rate / gym_rate:.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))
        replays: list[ReplayBuffer] = []  # (c) reads the replay of the last timed run

        def ours_serial() -> float:
            rate, replay = ours_train_steps_per_s(spec, protocol, train_steps, 1, run)
            replays.append(replay)
            return rate

        rates = alternated_medians({
            "cleanrl": lambda: cleanrl_style_train_steps_per_s(spec, protocol, train_steps, run),
            "ours": ours_serial,
            "overlap": lambda: ours_train_steps_per_s(spec, protocol, train_steps, 1, run, overlap_updates=True)[0]},
            rounds)
        base_rate, train_rate, overlap_rate = rates["cleanrl"], rates["ours"], rates["overlap"]
        frame_bytes = replay_bytes_per_transition(replays[-1])
        cleanrl_ppo = cleanrl_ppo_steps_per_s(spec, protocol, ppo_rollouts)
        (shared_ppo, shared_macs), (separate_ppo, separate_macs) = (
            ppo_train_steps_per_s(spec, protocol, ppo_rollouts, run, shared) for shared in (True, False))
        with single_thread():
            atari = update_times(spec, protocol, spiking_and_ann(spec, protocol, get_method("dsqn").options_type(timesteps=8)), run)
    sb3_bytes = sb3_memory_saving_bytes((4, 84, 84))
    echo(f"(b) DQN training steps/s (Nature CNN, batch 32, update every 4 steps, CPU, 1 env each): ours "
         f"{train_rate:,.1f} | ours with overlap_updates {overlap_rate:,.1f} | CleanRL-style loop {base_rate:,.1f} | "
         f"ratio {train_rate / base_rate:.2f}x, overlapped {overlap_rate / base_rate:.2f}x")
    echo(f"(c) replay bytes per transition: ours {frame_bytes:,.0f} | CleanRL's (SB3 memory-saving layout) "
         f"{sb3_bytes:,} | ratio {sb3_bytes / frame_bytes:.1f}x smaller")
    mac_ratio = dense_mac_ratio(4, 8)
    dsqn_s, dqn_s = atari["dsqn"].seconds, atari["dqn"].seconds
    echo(f"(d) training step, Nature CNN, batch 32, 1 thread: DSQN T=8 {dsqn_s * 1e3:.0f} ms | DQN "
         f"{dqn_s * 1e3:.0f} ms | ratio {dsqn_s / dqn_s:.2f}x (dense MAC ratio {mac_ratio:.2f}x)")
    with tempfile.TemporaryDirectory() as tmp:
        solo, shares = concurrent_run_shares(concurrent_steps, Path(tmp))
    echo(f"(e) two CartPole DQN runs side by side, 1 thread each, {concurrent_steps:,} steps: alone "
         f"{solo:,.0f} steps/s | together, each, ratio {min(shares):.2f}x and {max(shares):.2f}x of alone")
    per_flop = separate_ppo / cleanrl_ppo * separate_macs / shared_macs
    echo(f"(g) PPO training steps/s, Breakout, 8 envs x 128, 4 epochs of minibatch 256: ours, shared trunk "
         f"{shared_ppo:,.1f} | ours, separate critic {separate_ppo:,.1f} | CleanRL ppo_atari.py-style loop "
         f"{cleanrl_ppo:,.1f} | ratio {shared_ppo / cleanrl_ppo:.2f}x shared, {separate_ppo / cleanrl_ppo:.2f}x "
         f"separate ({per_flop:.2f}x per network MAC: {separate_macs / shared_macs:.2f}x the MACs)")
    minatar, paper = resolve_env("MinAtar/Breakout"), get_protocol("youngtian2019")
    with single_thread(), tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))
        dsqn_options = get_method("dsqn").option_presets["minatar"]
        ours = {"dqn": lambda: ours_train_steps_per_s(minatar, paper, train_steps, 1, run, "youngtian2019")[0],
                "dsqn": lambda: ours_train_steps_per_s(minatar, paper, train_steps, 1, run, "youngtian2019",
                                                       network=spiking_and_ann(minatar, paper, dsqn_options)["dsqn"])[0]}
        # where the linear layers run through oneDNN, also through torch's own F.linear: its gain
        blas = {f"{name} blas": through_blas(measure) for name, measure in ours.items()
                if linear.LINEAR_KERNEL == "onednn"}
        rates = alternated_medians({
            "theirs": lambda: youngtian2019_dqn("breakout", REPLAY_START_SIZE + 1 + train_steps,
                                                seed=0).training_frames_per_s, **ours, **blas}, rounds)
        small = update_times(minatar, paper, spiking_and_ann(minatar, paper, dsqn_options), run, "youngtian2019")
        flop_rate = matmul_flops_per_s()
    theirs = rates["theirs"]
    step = 1 / theirs  # seconds per step of their loop
    echo(f"(f) MinAtar Breakout training steps/s, youngtian2019 learner (batch 32 every step), 1 thread: ours DQN "
         f"{rates['dqn']:,.1f} | ours DSQN T=8 {rates['dsqn']:,.1f} | Young & Tian's examples/dqn.py loop "
         f"{theirs:,.1f} | ratio DQN {rates['dqn'] / theirs:.2f}x (goal 2.0x), DSQN {rates['dsqn'] / theirs:.2f}x "
         f"(goal 0.5x) | their step {step * 1e3:.2f} ms: the goals need a DQN step of at most {step / 2 * 1e3:.2f} ms "
         f"and a DSQN step of at most {step * 2 * 1e3:.2f} ms; the updates' kernels alone take "
         f"{small['dqn'].kernel_seconds * 1e3:.2f} and {small['dsqn'].kernel_seconds * 1e3:.2f} ms" +
         "".join(f" | ours {name.upper()} through torch's F.linear instead of oneDNN {rates[f'{name} blas']:,.1f}, "
                 f"oneDNN's gain {rates[name] / rates[f'{name} blas']:.2f}x" for name in ours if blas))
    floors = {f"{family} {name}": (cost.seconds, cost.kernel_seconds, cost.flops / flop_rate)
              for family, times in (("MinAtar", small), ("Atari", atari)) for name, cost in times.items()}
    echo(f"(h) one update against its arithmetic floor (its matmul and convolution FLOPs at this machine's "
         f"1-thread matmul rate, {flop_rate / 1e9:.1f} GFLOP/s) and its kernels (those products and convolutions "
         "each run alone): " + " | ".join(
             f"{name} {seconds * 1e3:.2f} ms, kernels {kernels * 1e3:.2f} ms, floor {floor * 1e3:.2f} ms, "
             f"ratio {seconds / floor:.1f}x" for name, (seconds, kernels, floor) in floors.items()))
    with single_thread(), tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))
        study = study_steps_per_s(train_steps, run)
    hours = study_core_hours(study, 1_000_000)
    echo(f"(i) studies/{STUDY.name} at 1M agent steps per run, projected from each training cell's steps/s "
         f"(1 thread): " + ", ".join(f"{cell.method} {resolve_env(cell.game).slug} {rate:,.0f}"
                                     for cell, rate in study.items()) +
         f" | {hours:,.1f} core-hours ({hours / 2:,.1f} h on 2 workers), goal 24")
    with single_thread():
        metered = {name: metered_evaluation_times(name, "nature", rounds, decisions) for name in (spec.name, minatar.name)}
    echo(f"(j) cost accounting on an evaluation, DSQN T=8 (init=data), {decisions:,} decisions one at a time, "
         "1 thread: " + " | ".join(f"{name} plain {plain * 1e3:.3f} ms, with CostMeter {meter * 1e3:.3f} ms, ratio "
                                   f"{meter / plain:.2f}x" for name, (plain, meter) in metered.items()) +
         f" (goal for {spec.name}: at most 1.1x)")
    return {"env_ratio": ours_rate / gym_rate, "train_ratio": train_rate / base_rate,
            "overlap_ratio": overlap_rate / base_rate, "ppo_shared_ratio": shared_ppo / cleanrl_ppo,
            "ppo_separate_per_mac_ratio": per_flop,
            "bytes_per_transition": frame_bytes, "dsqn_update_ratio": dsqn_s / dqn_s, "mac_ratio": mac_ratio,
            "concurrent_shares": shares, "minatar_ratio": rates["dqn"] / theirs,
            "minatar_dsqn_ratio": rates["dsqn"] / theirs,
            "floor_ratios": {name: seconds / floor for name, (seconds, _, floor) in floors.items()},
            "kernel_ratios": {name: seconds / kernels for name, (seconds, kernels, _) in floors.items()},
            "study_steps_per_s": {cell.label: rate for cell, rate in study.items()}, "study_core_hours": hours,
            "cost_meter_ratios": {name: meter / plain for name, (plain, meter) in metered.items()}}
