"""Trained runs, start to finish: train (or resume) with the method's learner, evaluate the
deployed network, record; and a finished run's deployed network read back for evaluation,
attacks, conversion and export."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compare.core.accounting import CostMeter, liveness_warning
from compare.core.envs import EnvSpec, VecEnv, resolve_env
from compare.core.errors import UsageError
from compare.core.evaluation import EvalResult, Policy, evaluate_policy
from compare.core.learner import Learner
from compare.core.liveness import apply_scales, initial_scales, liveness_at_start
from compare.core.provenance import provenance
from compare.core.registry import get_method
from compare.core.runstore import Run, ensure_writable_dir
from compare.core.scores import human_normalized_score
from compare.core.seeding import stream_seed
from compare.core.settings import Settings, use_compute_settings
from compare.core.tracking import RunTracker, wandb_module


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use auto or cpu")
    return device


@dataclass
class Deployed:
    """A finished run's deployed network and how it acts: what `compare eval`, FGSM, conversion
    and export need, whatever the method."""

    settings: Settings
    spec: EnvSpec
    network: nn.Module                 # acts; its cost per decision is measured
    learner: type[Learner]             # whose policy rule it follows (a conversion: the DQN's)
    device: torch.device
    attack_network: nn.Module | None = None  # FGSM takes its gradient here (None: `network`)
    attack: str = "white-box"

    def __post_init__(self):
        self.attack_network = self.attack_network or self.network

    def policy(self, seed: int) -> tuple[Policy, float | None]:
        """(policy, epsilon) under the run's protocol; epsilon None: the protocol's eval_epsilon."""
        return self.learner.policy(self.network, self.settings.protocol, self.device, seed)


@contextmanager
def probe_env(spec: EnvSpec, protocol, seed: int = 0) -> Iterator[tuple[VecEnv, np.ndarray]]:
    """One env of `spec` and its first observation, for what only a live env tells: shapes,
    dtypes, a state to cost a network on."""
    env = VecEnv(spec, protocol, 1)
    try:
        yield env, env.reset(seed=seed)
    finally:
        env.close()


def observation_shape(spec: EnvSpec, protocol) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of an environment under a protocol."""
    with probe_env(spec, protocol) as (env, _):
        return tuple(env.obs_shape), env.n_actions


def build_networks(method, settings: Settings, spec: EnvSpec, obs_shape: tuple[int, ...],
                   n_actions: int) -> dict[str, nn.Module]:
    """Every network the method's learner trains, by role."""
    network = method.build_network(settings.options, spec.family, obs_shape, n_actions)
    return method.learner.networks(network, settings.options, spec.family, obs_shape)


def new_deployed_network(method, settings: Settings, spec: EnvSpec) -> nn.Module:
    """The deployed network exactly as `_train` builds it for a new run (torch's global RNG is
    left as it was)."""
    obs_shape, n_actions = observation_shape(spec, settings.protocol)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(settings.seed, "torch"))
        return build_networks(method, settings, spec, obs_shape, n_actions)[method.learner.deployed_role]


def start_training_run(method, settings: Settings, results_root: Path, name: str | None = None,
                       progress_factory=None) -> Run:
    ensure_writable_dir(results_root)
    spec = resolve_env(settings.game)
    preflight(method, settings, spec)
    config = {**settings.to_dict(), **provenance()}
    use_compute_settings(settings)
    network = new_deployed_network(method, settings, spec)
    scales = initial_scales(network, settings.options, spec, settings.protocol, settings.seed)
    if scales is not None:  # reapplied by _train; recorded so that the run is reproducible
        config["init_scales"] = scales
    start = liveness_at_start(network, spec, settings.protocol, settings.seed)
    if start:  # recorded with the run, and said at once: a silent network learns nothing
        config["liveness_at_start"] = start
        warning = liveness_warning(f"{settings.method} {settings.game} seed {settings.seed} as initialised, on "
                                   f"{start['observations']} random-policy observations", start)
        if warning:
            print(warning, file=sys.stderr)
    with Run.create(results_root, spec.slug, settings.method, settings.seed, config, name=name) as run:
        for warning in method.learner.setting_warnings(settings.learner, settings.total_steps):
            print(f"compare: warning: {warning}", file=sys.stderr)
        _train(method, run, settings, checkpoint=None, progress_factory=progress_factory)
    return run


def preflight(method, settings: Settings, spec: EnvSpec) -> None:
    """Refuse, before any file is written, settings the machine cannot run (the learner's
    `check_resources`, e.g. a replay larger than memory)."""
    if settings.wandb is not None:
        wandb_module()  # installed, or a clear error now
    with probe_env(spec, settings.protocol) as (env, _):
        method.learner.check_resources(settings.learner, env)


def resume_training_run(method, run: Run, progress_factory=None) -> Run:
    with run.acquire():
        if run.finished:
            raise UsageError(f"run {run.path} has already finished (eval.json exists); nothing to resume")
        settings = Settings.from_dict(run.config, f"{run.path}/config.json")
        if settings.device == "cuda" and not torch.cuda.is_available():
            print(f"compare: {run.path.name} was trained on cuda; no CUDA device here, continuing on the cpu",
                  file=sys.stderr)
            settings = dataclasses.replace(settings, device="cpu")
        _train(method, run, settings, checkpoint=run.load_checkpoint(), progress_factory=progress_factory)
    return run


def _train(method, run: Run, settings: Settings, checkpoint: dict | None, progress_factory) -> None:
    spec = resolve_env(settings.game)
    use_compute_settings(settings)
    torch.manual_seed(stream_seed(settings.seed, "torch"))
    device = torch.device(settings.device)
    env = VecEnv(spec, settings.protocol, settings.learner.num_envs)
    env.reset(seed=0)  # learns obs shape and action count; the learner starts its own episodes
    nets = build_networks(method, settings, spec, env.obs_shape, env.n_actions)
    if checkpoint is None and run.config.get("init_scales"):  # init=data: the scales found at the start
        apply_scales(nets[method.learner.deployed_role], run.config["init_scales"])
    learner = method.learner(nets, env, settings.learner, settings.protocol, settings.total_steps,
                             settings.seed, device, run)
    if checkpoint is not None:
        learner.load_checkpoint(checkpoint)  # everything it needs is read before the logs are cut
    if run.metrics() or run.evals():  # a resumed run's logs, cut back to its checkpoint
        run.truncate_logs(learner.state.step)
    progress = learner.progress = progress_factory(settings.total_steps) if progress_factory else None
    if progress is not None:
        progress.update(learner.state.step)
    run.tracker = RunTracker(run.path, resume_step=None if checkpoint is None else learner.state.step,
                             wandb=settings.wandb, config=run.config)
    try:
        try:
            learner.train()
        finally:
            env.close()
            if progress is not None:
                progress.close()
        for net in nets.values():
            net.eval()
        deployed = Deployed(settings, spec, learner.deployed, method.learner, device)
        training_only = {role: net for role, net in nets.items() if role != method.learner.deployed_role}
        run.write_eval(evaluate_deployed(deployed, settings.protocol.eval_episodes,
                                         stream_seed(settings.seed, "final_eval"), training_only))
    finally:
        run.tracker.close()
        run.tracker = None


def eval_record(settings: Settings, spec: EnvSpec, result: EvalResult, neuro: dict) -> dict:
    """The eval.json record of an evaluation: scores, protocol and the cost of a decision."""
    liveness = {key: neuro[key] for key in ("silent_layers", "saturated_layers") if key in neuro}
    return {"game": settings.game, "method": settings.method, "seed": settings.seed,
            "step": settings.total_steps, **result.summary(),
            "hns": human_normalized_score(spec.ale_id, result.summary()["mean_return"]),
            "protocol": dataclasses.asdict(settings.protocol), **liveness, "neuro": neuro}


def evaluate_deployed(deployed: Deployed, episodes: int, seed: int,
                      training_only: dict[str, nn.Module] | None = None) -> dict:
    """Scores under the protocol and the cost of each decision (`neuro`). Networks used only
    in training (an actor-critic's critic) are costed apart, per evaluated state, under
    `<role>_neuro_training_only`."""
    settings, spec = deployed.settings, deployed.spec
    policy, epsilon = deployed.policy(seed)
    with CostMeter(deployed.network) as meter:
        result = evaluate_policy(policy, spec, settings.protocol, episodes, seed, epsilon=epsilon)
    record = eval_record(settings, spec, result, meter.summary())
    if training_only:
        with probe_env(spec, settings.protocol, seed) as (_, first):
            obs = torch.as_tensor(first, device=deployed.device)
        for role, net in training_only.items():
            with CostMeter(net) as role_meter, torch.inference_mode():
                net(obs)
            record[f"{role}_neuro_training_only"] = role_meter.summary()
    return record


def load_trained(method, run: Run, device: str = "cpu") -> Deployed:
    """A finished trained run's deployed network (the Q-network of a Q-method, the actor of an
    actor-critic method) with its trained weights."""
    settings = Settings.from_dict(run.config, f"{run.path}/config.json")
    spec = resolve_env(settings.game)
    saved = run.load_weights(device)
    obs_shape, n_actions = observation_shape(spec, settings.protocol)
    nets = build_networks(method, settings, spec, obs_shape, n_actions)
    role = method.learner.deployed_role
    network = nets[role]
    try:
        network.load_state_dict(method.learner.deployed_weights(saved, list(nets), role))
    except (KeyError, RuntimeError) as e:
        raise UsageError(f"{run.path}/model.pt does not fit this run's network ({type(e).__name__})") from None
    return Deployed(settings, spec, network.to(device).eval(), method.learner, torch.device(device))


def load_deployed(path: Path, device: str = "cpu", methods: tuple[str, ...] | None = None) -> Deployed:
    """The deployed network of the finished run at `path`, whatever its method; `methods`
    restricts which methods are accepted."""
    run = Run.open(path)  # its config is a JSON object with a method
    method_name = run.config["method"]
    if methods is not None and method_name not in methods:
        raise UsageError(f"{path} is a {method_name!r} run; this needs a finished {' or '.join(methods)} run")
    if not run.finished:
        raise UsageError(f"{path} has not finished (no eval.json); use a finished run")
    return get_method(method_name).deployed(run, device)


def resume_run(path: Path, progress_factory=None) -> Run:
    """Continue the killed run at `path` from its last checkpoint, with its method."""
    run = Run.open(path)  # its config is a JSON object with a method
    return get_method(run.config["method"]).resume(run, progress_factory)


def evaluate_saved_run(path: Path, episodes: int | None, seed: int | None, device: str) -> dict:
    """`compare eval`: the run's deployed network evaluated again (the run is not modified)."""
    deployed = load_deployed(path, resolve_device(device))
    settings = deployed.settings
    seed = stream_seed(settings.seed if seed is None else seed, "reevaluation")
    return evaluate_deployed(deployed, episodes or settings.protocol.eval_episodes, seed)
