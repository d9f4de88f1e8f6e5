"""From a command line to a finished run: resolve settings, train, evaluate, record."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compare import config as cfgmod
from compare.dqn import DQNConfig, DQNLearner, get_dqn_preset
from compare.envs import EnvSpec, VecEnv, resolve_env
from compare.errors import UsageError
from compare.methods import ActorCriticMethod, QMethod, build_critic, get_method
from compare.ppo import PPOConfig, PPOLearner, evaluate_actor, get_ppo_preset
from compare.protocols import Protocol, get_protocol
from compare.runstore import Run, ensure_writable_dir
from compare.scores import human_normalized_score


# The learner behind each kind of training method: its config key, config type and presets.
LEARNERS = {QMethod: ("dqn", DQNConfig, get_dqn_preset), ActorCriticMethod: ("ppo", PPOConfig, get_ppo_preset)}
TrainingMethod = QMethod | ActorCriticMethod


def learner_of(method) -> tuple[str, type, object]:
    if type(method) not in LEARNERS:
        raise UsageError(f"method {method.name!r} is not trained by a learner (it derives a run from another)")
    return LEARNERS[type(method)]


@dataclass
class Settings:
    """Everything that defines a run; `config.json` is its JSON form plus provenance."""

    method: str
    game: str
    seed: int
    total_steps: int
    device: str
    preset: str
    protocol: Protocol
    learner: DQNConfig | PPOConfig  # saved under "dqn" or "ppo"
    options: object  # the method's options dataclass

    def to_dict(self) -> dict:
        key = learner_of(get_method(self.method))[0]
        return {"method": self.method, "game": self.game, "seed": self.seed,
                "total_steps": self.total_steps, "device": self.device, "preset": self.preset,
                "protocol": dataclasses.asdict(self.protocol), key: dataclasses.asdict(self.learner),
                "method_options": dataclasses.asdict(self.options)}

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        method = get_method(data["method"])
        key, config_type, _ = learner_of(method)
        return cls(method=data["method"], game=data["game"], seed=data["seed"],
                   total_steps=data["total_steps"], device=data["device"], preset=data["preset"],
                   protocol=cfgmod.from_dict(Protocol, data["protocol"]),
                   learner=cfgmod.from_dict(config_type, data[key]),
                   options=cfgmod.from_dict(method.options_type, data["method_options"]))


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def resolve_settings(method_name: str, game: str, seed: int, steps: int | None, protocol_name: str,
                     preset: str | None, overrides: dict[str, str], device: str) -> Settings:
    method = get_method(method_name)
    _, config_type, get_preset = learner_of(method)
    spec = resolve_env(game)
    protocol = get_protocol(protocol_name)
    preset = preset or method.preset_for(spec.family)
    learner = get_preset(preset)
    options = method.option_presets.get(preset, method.options_type())
    # Each override goes to the one config object that has a field of that name.
    targets = {"protocol": (protocol, set(cfgmod.field_names(Protocol)) - {"name"}),
               "learner": (learner, set(cfgmod.field_names(config_type))),
               "options": (options, set(cfgmod.field_names(method.options_type)))}
    per_target: dict[str, dict[str, str]] = {name: {} for name in targets}
    for key, value in overrides.items():
        owner = next((name for name, (_, keys) in targets.items() if key in keys), None)
        if owner is None:
            allowed = sorted(set().union(*(keys for _, keys in targets.values())))
            raise UsageError(cfgmod.unknown_name_message(f"setting for {method_name}", key, allowed))
        per_target[owner][key] = value
    protocol = cfgmod.apply_overrides(protocol, per_target["protocol"])
    learner = cfgmod.apply_overrides(learner, per_target["learner"])
    options = cfgmod.apply_overrides(options, per_target["options"])
    total = steps if steps is not None else spec.budget(protocol)
    return Settings(method=method_name, game=spec.name, seed=seed, total_steps=total,
                    device=resolve_device(device), preset=preset, protocol=protocol, learner=learner,
                    options=options)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use auto or cpu")
    return device


def provenance() -> dict:
    from compare.runstore import git_commit, package_versions

    return {"versions": package_versions(), "python": platform.python_version(),
            "git_commit": git_commit(), "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["compare", *sys.argv[1:]])}


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def start_run(settings: Settings, results_root: Path, progress_factory=None, name: str | None = None) -> Run:
    ensure_writable_dir(results_root)
    spec = resolve_env(settings.game)
    run = Run.create(results_root, spec.slug, settings.method, settings.seed,
                     {**settings.to_dict(), **provenance()}, name=name)
    _train(run, settings, checkpoint=None, progress_factory=progress_factory)
    return run


def resume_run(path: Path, progress_factory=None) -> Run:
    run = Run.open(path)
    if run.finished:
        raise UsageError(f"run {path} has already finished (eval.json exists); nothing to resume")
    if not isinstance(get_method(run.config.get("method", "?")), TrainingMethod):
        raise UsageError(f"{path} is a {run.config.get('method')!r} run; only training runs resume "
                         "(rerun the conversion instead)")
    try:
        settings = Settings.from_dict(run.config)
    except (KeyError, TypeError) as e:
        raise UsageError(f"{path}/config.json is not a compare run config ({e})") from None
    checkpoint = run.load_checkpoint()
    run.truncate_logs(checkpoint["train_state"]["step"] if checkpoint else 0)
    _train(run, settings, checkpoint=checkpoint, progress_factory=progress_factory)
    return run


def build_networks(method: TrainingMethod, settings: Settings, spec: EnvSpec, env: VecEnv) -> dict[str, torch.nn.Module]:
    """The method's trainable networks by role: {"q"} or {"actor", "critic"}."""
    args = (settings.options, spec.family, env.obs_shape, env.n_actions)
    if isinstance(method, QMethod):
        return {"q": method.build_q_network(*args)}
    return {"actor": method.build_actor(*args), "critic": build_critic(settings.options, spec.family, env.obs_shape)}


def _train(run: Run, settings: Settings, checkpoint: dict | None, progress_factory) -> None:
    method = get_method(settings.method)
    spec = resolve_env(settings.game)
    _seed_everything(settings.seed)
    device = torch.device(settings.device)
    env = VecEnv(spec, settings.protocol, settings.learner.num_envs)
    env.reset(seed=settings.seed)  # learns obs shape and action count; train() resets again
    nets = build_networks(method, settings, spec, env)
    progress = progress_factory(settings.total_steps) if progress_factory else None
    common = (env, settings.learner, settings.protocol, settings.total_steps, settings.seed, device, run, progress)
    learner = (DQNLearner(nets["q"], *common) if isinstance(method, QMethod)
               else PPOLearner(nets["actor"], nets["critic"], *common))
    if checkpoint is not None:
        learner.load_checkpoint(checkpoint)
        if progress is not None:
            progress.update(learner.state.step)
    try:
        learner.train()
    finally:
        env.close()
        if progress is not None:
            progress.close()
    nets = {role: net.eval() for role, net in nets.items()}
    seed = settings.seed + 10_000 + settings.total_steps
    record = (evaluate_q_network(nets["q"], settings, spec, settings.protocol.eval_episodes, seed, device)
              if isinstance(method, QMethod) else
              evaluate_actor_critic(nets["actor"], nets["critic"], settings, spec,
                                    settings.protocol.eval_episodes, seed, device))
    run.write_eval(record)


def _record(settings: Settings, spec: EnvSpec, result, neuro: dict) -> dict:
    return {"game": settings.game, "method": settings.method, "seed": settings.seed,
            "step": settings.total_steps, **result.summary(),
            "hns": human_normalized_score(spec.ale_id, result.summary()["mean_return"]),
            "protocol": dataclasses.asdict(settings.protocol), "neuro": neuro}


def evaluate_q_network(net: torch.nn.Module, settings: Settings, spec: EnvSpec, episodes: int,
                       seed: int, device: torch.device) -> dict:
    """Final-evaluation record: scores under the protocol and the cost of each decision."""
    from compare.accounting import CostMeter
    from compare.evaluation import evaluate_policy, greedy_q_policy

    with CostMeter(net, timesteps=getattr(settings.options, "timesteps", 1)) as meter:
        result = evaluate_policy(greedy_q_policy(net, device), spec, settings.protocol, episodes, seed)
    return _record(settings, spec, result, meter.summary())


def evaluate_actor_critic(actor: torch.nn.Module, critic: torch.nn.Module | None, settings: Settings,
                          spec: EnvSpec, episodes: int, seed: int, device: torch.device) -> dict:
    """Scores of the actor under the protocol. `neuro` covers the actor, the part that would be
    deployed; the critic's cost per evaluated state is reported apart, as training-only."""
    from compare.accounting import CostMeter

    with CostMeter(actor, timesteps=getattr(settings.options, "timesteps", 1)) as meter:
        result = evaluate_actor(actor, spec, settings.protocol, episodes, seed, device)
    if critic is None:
        return _record(settings, spec, result, meter.summary())
    env = VecEnv(spec, settings.protocol, 1)
    try:
        obs = torch.as_tensor(env.reset(seed=seed), device=device)
    finally:
        env.close()
    with CostMeter(critic, timesteps=1) as critic_meter, torch.inference_mode():
        critic(obs)
    return {**_record(settings, spec, result, meter.summary()),
            "critic_neuro_training_only": critic_meter.summary()}


def load_trained_network(run: Run, device: str = "cpu") -> tuple[Settings, EnvSpec, torch.nn.Module]:
    """A finished training run's deployed network with its trained weights: the Q-network of
    a Q-method, the actor of an actor-critic method."""
    from compare.runstore import WEIGHTS

    method = get_method(run.config.get("method", "?"))
    if not isinstance(method, TrainingMethod):
        raise UsageError(f"{run.path} is a {run.config['method']!r} run; this needs a trained (not derived) run")
    settings = Settings.from_dict(run.config)
    spec = resolve_env(settings.game)
    weights = run.path / WEIGHTS
    if not weights.is_file():
        raise UsageError(f"{run.path} has no trained weights ({WEIGHTS}); has the run finished?")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as e:
        raise UsageError(f"{weights} is truncated or corrupt ({type(e).__name__})") from None
    env = VecEnv(spec, settings.protocol, 1)
    try:
        env.reset(seed=settings.seed)
        nets = build_networks(method, settings, spec, env)
    finally:
        env.close()
    role = "q" if isinstance(method, QMethod) else "actor"
    nets[role].load_state_dict(state if role == "q" else state["actor"])
    return settings, spec, nets[role].to(device).eval()


def load_trained_q_network(run: Run, device: str = "cpu") -> tuple[Settings, EnvSpec, torch.nn.Module]:
    """A finished Q-method run's network (dqn, dsqn) with its trained weights."""
    if not isinstance(get_method(run.config.get("method", "?")), QMethod):
        raise UsageError(f"{run.path} is a {run.config.get('method')!r} run; this needs a dqn or dsqn run")
    return load_trained_network(run, device)


def evaluate_saved_run(path: Path, episodes: int | None, seed: int | None, device: str) -> dict:
    run = Run.open(path)
    dev = torch.device(resolve_device(device))
    settings, spec, net = load_trained_network(run, str(dev))
    episodes = episodes or settings.protocol.eval_episodes
    seed = (settings.seed if seed is None else seed) + 20_000
    if isinstance(get_method(settings.method), QMethod):
        return evaluate_q_network(net, settings, spec, episodes, seed, dev)
    return evaluate_actor_critic(net, None, settings, spec, episodes, seed, dev)
