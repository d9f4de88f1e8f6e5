"""FGSM robustness (`compare eval RUN_DIR --attack fgsm --eps 0.001,0.005,0.01`).

At every decision the observation x is replaced by x' = x + eps * sign(grad_x L), where L is the
cross-entropy between the attacked network's output (Q-values or logits, through a softmax) and
its own greedy action (Huang et al. 2017, untargeted). The policy then acts on x' exactly as in
its normal evaluation (same protocol, same seeds), so eps = 0 reproduces the clean score.

- dqn, dsqn, ppo, hybrid: white-box, through the network that acts (for spiking networks the
  gradient is the surrogate gradient they were trained with).
- convert: a transfer attack: the gradient comes from the source ANN, the converted SNN (at the
  run's best T) acts on the perturbed frames. Sinabs' SNN has no useful input gradient.

eps is in the network's input scale: for pixel observations a fraction of the pixel range
(x' is computed on frame / 255 and clipped to [0, 1]); for vector observations raw units.
Results go to `robustness.json` in the run directory (written atomically, merged per eps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compare.errors import UsageError
from compare.evaluation import Policy

ROBUSTNESS = "robustness.json"


def fgsm(attack_net: torch.nn.Module, obs: np.ndarray, eps: float, pixel_scale: float | None) -> np.ndarray:
    """The FGSM-perturbed observation batch, as float32 in the environment's own scale."""
    x = torch.as_tensor(obs).float()
    if eps == 0:
        return x.numpy()
    with torch.enable_grad():
        x.requires_grad_(True)
        out = attack_net(x)
        loss = F.cross_entropy(out, out.argmax(dim=1))
        (grad,) = torch.autograd.grad(loss, x)
    step = eps * (pixel_scale or 1.0) * grad.sign()
    adv = x.detach() + step
    if pixel_scale:
        adv = adv.clamp(0.0, pixel_scale)
    return adv.numpy()


def attacked(policy: Policy, attack_net: torch.nn.Module, eps: float, pixel_scale: float | None) -> Policy:
    return lambda obs: policy(fgsm(attack_net, obs, eps, pixel_scale))


def parse_eps(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--eps {text!r} must be a comma-separated list of numbers, e.g. 0.001,0.005,0.01") from None
    if not values or any(v < 0 for v in values):
        raise UsageError(f"--eps {text!r} must list numbers >= 0")
    return values


def run_fgsm(run_dir: Path, eps_values: list[float], episodes: int | None, seed: int | None) -> dict:
    """Evaluate the run's policy under FGSM at each eps; store and return the results."""
    from compare.evaluation import evaluate_policy, greedy_q_policy
    from compare.experiment import load_trained_network
    from compare.methods import ActorCriticMethod, QMethod, get_method
    from compare.ppo import actor_policy
    from compare.runstore import Run, read_json, write_json

    run = Run.open(run_dir)
    if not run.finished:
        raise UsageError(f"{run_dir} has not finished (no eval.json); attack a finished run")
    method = get_method(run.config.get("method", "?"))
    cpu = torch.device("cpu")
    if isinstance(method, QMethod | ActorCriticMethod):
        settings, spec, net = load_trained_network(run, "cpu")
        attack_net, kind = net, "white-box"
    else:
        from converters.convert import ConvertedSNN, load_converted, split_ann

        settings, spec, ann_q, options, scales, normalized = load_converted(run)
        timesteps = run.read_eval()["best_timesteps"]
        net = ConvertedSNN(normalized, options, timesteps, split_ann(ann_q)[1],
                           output_scale=1.0 if options.readout == "membrane" else scales[-1]).eval()
        attack_net, kind = ann_q, f"transfer from the source ANN (SNN at T={timesteps})"
    protocol = settings.protocol
    episodes = episodes or protocol.eval_episodes
    seed = (settings.seed if seed is None else seed) + 20_000
    pixel_scale = 255.0 if spec.family == "atari" else None
    if isinstance(method, ActorCriticMethod):
        epsilon = 0.0 if protocol.actor_eval == "sample" else None
        make_policy = lambda: actor_policy(net, cpu, protocol.actor_eval, seed)  # noqa: E731
    else:
        epsilon = None
        make_policy = lambda: greedy_q_policy(net, cpu)  # noqa: E731

    results = {}
    for eps in eps_values:
        policy = attacked(make_policy(), attack_net, eps, pixel_scale)
        results[f"{eps:g}"] = {**evaluate_policy(policy, spec, protocol, episodes, seed, epsilon=epsilon).summary(),
                               "seed": seed}
    path = run.path / ROBUSTNESS
    stored = read_json(path) if path.is_file() else {}
    entry = stored.get("fgsm", {"results": {}})
    entry.update({"attack": kind, "eps_unit": "fraction of the pixel range" if pixel_scale else "raw observation units"})
    entry["results"].update(results)
    stored["fgsm"] = entry
    write_json(path, stored)
    return entry
