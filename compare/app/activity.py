"""`compare plot --activity RUN`: what a deployed spiking network does over one episode.

One evaluation episode of the run's deployed network (its own policy rule, the protocol's
exploration, a seed stream of its own) with a hook on every spiking layer it declares
(`compare.core.spiking.CostRoles`). The figure, one row per spiking layer: a spike raster of
sampled neurons over the time steps of the first decisions, and the histogram of every neuron's
firing rate over the episode; a last row: the output over T in the first decisions (the
membranes of a non-spiking output integrator, else the last synaptic layer's current).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compare.core.errors import UsageError
from compare.core.evaluation import evaluate_policy
from compare.core.seeding import stream_seed
from compare.core.spiking import SpikingNetwork
from compare.core.training import Deployed

RASTER_NEURONS = 48      # sampled per layer
SHOWN_DECISIONS = 10     # decisions drawn in the raster and the output traces


@dataclass
class LayerActivity:
    neurons: int
    sample: np.ndarray                                  # indices of the raster's neurons
    counts: np.ndarray                                  # spikes per neuron over the episode
    raster: list[np.ndarray] = field(default_factory=list)  # per shown decision: (T, sampled)

    @property
    def spikes(self) -> float:
        return float(self.counts.sum())


@dataclass
class Activity:
    timesteps: int
    layers: dict[str, LayerActivity]
    output_name: str
    output: list[np.ndarray]                            # per shown decision: (T, outputs)
    decisions: int = 0
    episode_return: float = 0.0


def record_activity(deployed: Deployed, seed: int) -> Activity:
    """Play one episode (the seed stream "activity" of `seed`) and record every spiking layer."""
    network = deployed.network
    if not isinstance(network, SpikingNetwork):
        raise UsageError(f"--activity draws a spiking network; this {deployed.settings.method} run deploys an ANN "
                         f"({type(network).__name__})")
    roles = network.cost_roles()
    T = roles.timesteps
    names = {module: name for name, module in network.named_modules()}
    rng = np.random.default_rng(0)
    activity = Activity(T, {}, "", [])
    state = {"decision": 0}

    def spiking_hook(name: str):
        def hook(module, inputs, output) -> None:
            spikes = output.detach().reshape(T, -1).cpu().numpy()  # one decision at a time: (T, neurons)
            layer = activity.layers.get(name)
            if layer is None:
                n = spikes.shape[1]
                layer = activity.layers[name] = LayerActivity(
                    n, np.sort(rng.choice(n, size=min(RASTER_NEURONS, n), replace=False)), np.zeros(n))
            layer.counts += spikes.sum(axis=0)
            if state["decision"] < SHOWN_DECISIONS:
                layer.raster.append(spikes[:, layer.sample])
        return hook

    traced = roles.integrators[-1][0] if roles.integrators else roles.synapses[-1][0]
    activity.output_name = (f"{names[traced]} (membrane)" if roles.integrators else f"{names[traced]} (current)")

    def output_hook(module, inputs, output) -> None:
        if state["decision"] < SHOWN_DECISIONS and output.numel() % T == 0:
            activity.output.append(output.detach().reshape(T, -1).cpu().numpy())

    def decision_hook(module, inputs, output) -> None:
        state["decision"] += 1

    handles = [module.register_forward_hook(spiking_hook(names[module])) for module, _ in roles.neurons]
    handles += [traced.register_forward_hook(output_hook), network.register_forward_hook(decision_hook)]
    policy, epsilon = deployed.policy(stream_seed(deployed.settings.seed, "activity"))
    try:
        result = evaluate_policy(policy, deployed.spec, deployed.settings.protocol, 1,
                                 stream_seed(deployed.settings.seed, "activity"), epsilon=epsilon)
    finally:
        for handle in handles:
            handle.remove()
    activity.decisions, activity.episode_return = state["decision"], result.episode_returns[0]
    return activity


def activity_figure(activity: Activity, title: str, plt):
    """The figure (matplotlib) of a recorded episode."""
    rows = len(activity.layers) + 1
    fig, axes = plt.subplots(rows, 2, figsize=(11, 1.9 * rows + 0.8), gridspec_kw={"width_ratios": [3, 1]},
                             squeeze=False)
    T = activity.timesteps
    for (name, layer), (raster_ax, hist_ax) in zip(activity.layers.items(), axes):
        steps = np.concatenate(layer.raster) if layer.raster else np.zeros((0, len(layer.sample)))
        t, neuron = np.nonzero(steps)
        raster_ax.scatter(t, neuron, s=14, marker="|", linewidths=0.8, color="black")
        for boundary in range(T, len(steps), T):
            raster_ax.axvline(boundary - 0.5, color="tab:blue", linewidth=0.4, alpha=0.5)
        raster_ax.set(xlim=(-0.5, max(len(steps), 1) - 0.5), ylim=(-0.5, len(layer.sample) - 0.5),
                      ylabel=f"{name}\n{len(layer.sample)} of {layer.neurons}")
        raster_ax.yaxis.label.set_fontsize(8)
        rates = layer.counts / (T * max(activity.decisions, 1))
        hist_ax.hist(rates, bins=np.linspace(0, 1, 21), color="tab:gray")
        hist_ax.set_yscale("log")
        hist_ax.set_title(f"mean rate {rates.mean():.3f}", fontsize=8)
        hist_ax.tick_params(labelsize=7)
    raster_ax.set_xlabel(f"time step (first {min(SHOWN_DECISIONS, activity.decisions)} decisions, T = {T} each)",
                         fontsize=8)
    hist_ax.set_xlabel("firing rate per neuron over the episode", fontsize=8)
    out_ax, empty = axes[-1]
    if activity.output:
        trace = np.concatenate(activity.output)
        for i in range(trace.shape[1]):
            out_ax.plot(trace[:, i], linewidth=0.8, label=f"output {i}")
        for boundary in range(T, len(trace), T):
            out_ax.axvline(boundary - 0.5, color="tab:blue", linewidth=0.4, alpha=0.5)
        if trace.shape[1] <= 10:
            out_ax.legend(fontsize=6, ncol=min(trace.shape[1], 6), loc="upper right")
    out_ax.set(xlabel="time step", ylabel=activity.output_name)
    out_ax.yaxis.label.set_fontsize(8)
    empty.axis("off")
    fig.suptitle(f"{title}\none episode: {activity.decisions} decisions, return {activity.episode_return:g}",
                 fontsize=9)
    fig.tight_layout()
    return fig
