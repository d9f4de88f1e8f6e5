"""Training curves for TensorBoard: every training run writes event files next to its logs, so
`tensorboard --logdir results/runs` shows every run with no flag.

What it mirrors (the same numbers as the JSON logs, by agent step):
    train/<key>     each metrics.jsonl record's numbers: episode_return, episode_length, loss,
                    epsilon, steps_per_s (and a learner's own, e.g. PPO's losses)
    eval/<key>      each periodic evaluation: mean_return, std_return, hns
    final/<key>     the final evaluation at the budget: mean_return, hns, energy per decision
                    under every energy model and both first-layer conventions
                    (final/energy_uj/<model>/<convention>), mean firing rate, and
    neuro/firing_rate/<layer>   each spiking layer's firing rate in the final evaluation
Events are flushed at every checkpoint; a resumed run purges the events after its checkpoint's
step, as it cuts back its JSON logs.

With `--track wandb` (`pip install -e '.[wandb]'`) the same scalars also go to Weights & Biases,
with the run's full resolved config, under `global_step`. Project, entity and group come from the
run's settings or wandb's own environment variables (WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE=offline
...); the W&B run id is the run directory's name, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import re
from pathlib import Path

from compare.core.errors import UsageError

SKIPPED = ("step", "frames", "episode")  # the x axis, not curves


def _numbers(record: dict) -> dict[str, float]:
    return {key: float(value) for key, value in record.items()
            if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool)}


def wandb_module():
    try:
        import wandb
    except ImportError:
        raise UsageError("--track wandb needs wandb; install it with: pip install -e '.[wandb]'") from None
    return wandb


class RunTracker:
    def __init__(self, run_dir: Path, resume_step: int | None = None, wandb: dict | None = None,
                 config: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter  # loads tensorboard: only for training runs

        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=30,
                                    purge_step=None if resume_step is None else resume_step + 1)
        self.wandb = None
        if wandb is not None:
            module = wandb_module()
            self.wandb = module.init(project=wandb.get("project"), entity=wandb.get("entity"),
                                     group=wandb.get("group"), name=run_dir.name, id=_wandb_id(run_dir.name),
                                     resume="allow", config=config, dir=str(run_dir))
            self.wandb.define_metric("global_step")
            self.wandb.define_metric("*", step_metric="global_step")

    def _scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if self.wandb is not None and values:
            self.wandb.log({**values, "global_step": step})

    def metric(self, record: dict) -> None:
        self._scalars({f"train/{key}": value for key, value in _numbers(record).items()}, record["step"])

    def evaluation(self, record: dict) -> None:
        self._scalars({f"eval/{key}": float(record[key]) for key in ("mean_return", "std_return", "hns")
                       if isinstance(record.get(key), (int, float))}, record["step"])

    def final(self, record: dict) -> None:
        neuro = record.get("neuro") or {}
        values = {"final/mean_return": record.get("mean_return"), "final/hns": record.get("hns"),
                  "final/mean_firing_rate": neuro.get("mean_firing_rate")}
        for model, conventions in (neuro.get("energy") or {}).items():
            for convention, block in conventions.items():
                values[f"final/energy_uj/{model}/{convention}"] = block["total_j"] * 1e6
        for layer, rate in (neuro.get("firing_rate") or {}).items():
            values[f"neuro/firing_rate/{layer}"] = rate
        self._scalars({tag: float(v) for tag, v in values.items() if v is not None}, record["step"])

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_id(name: str) -> str:
    """W&B run ids allow letters, digits, '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[-128:]
