"""FGSM robustness (`compare eval RUN_DIR --attack fgsm --eps 0.001,0.005,0.01`).

At every decision the observation x is replaced by x' = x + eps * sign(grad_x L), where L is the
cross-entropy between the attacked network's output (Q-values or logits, through a softmax) and
its own greedy action (Huang et al. 2017, untargeted). The policy then acts on x' exactly as in
its normal evaluation (same protocol, same seeds), so eps = 0 reproduces the clean score.

- dqn, dsqn, ppo, hybrid: white-box, through the network that acts (for spiking networks the
  gradient is the surrogate gradient they were trained with).
- convert: a transfer attack: the gradient comes from the source ANN, the converted SNN (at the
  run's best T) acts on the perturbed frames. Sinabs' SNN has no useful input gradient.
Each method says which network acts and which gives the gradient (`Deployed.attack_network`).

eps is in the network's input scale: for pixel observations a fraction of the pixel range
(x' is computed on frame / 255 and clipped to [0, 1]); for vector observations raw units.
Results go to `robustness.json` in the run directory (written atomically, merged per eps).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compare.core.errors import UsageError
from compare.core.evaluation import Policy, evaluate_policy
from compare.core.networks import pixel_divisor
from compare.core.runstore import ROBUSTNESS, Run, stored_robustness, write_json
from compare.core.seeding import stream_seed
from compare.core.training import load_deployed


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
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"--eps {text!r} must list finite numbers >= 0")
    return values


def run_fgsm(run_dir: Path, eps_values: list[float], episodes: int | None, seed: int | None) -> dict:
    """Evaluate the run's policy under FGSM at each eps; store and return the results. The
    seeds are `compare eval`'s, so eps = 0 reproduces its clean score."""
    deployed = load_deployed(Path(run_dir), "cpu")
    stored_robustness(Path(run_dir) / ROBUSTNESS)  # a damaged file refuses before the attack runs
    settings, spec = deployed.settings, deployed.spec
    episodes = episodes or settings.protocol.eval_episodes
    seed = stream_seed(settings.seed if seed is None else seed, "reevaluation")
    pixel_scale = pixel_divisor(spec.family)
    results = {}
    for eps in eps_values:
        policy, epsilon = deployed.policy(seed)
        result = evaluate_policy(attacked(policy, deployed.attack_network, eps, pixel_scale), spec, settings.protocol,
                                 episodes, seed, epsilon=epsilon)
        results[f"{eps:g}"] = {**result.summary(), "seed": seed}
    with Run.open(run_dir).acquire() as run:
        path = run.path / ROBUSTNESS
        stored = stored_robustness(path)
        entry = stored.get("fgsm", {"results": {}})
        entry.update({"attack": deployed.attack,
                      "eps_unit": "fraction of the pixel range" if pixel_scale else "raw observation units"})
        entry["results"].update(results)
        stored["fgsm"] = entry
        write_json(path, stored)
    return entry
