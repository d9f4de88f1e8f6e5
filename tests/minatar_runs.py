"""What the MinAtar learning tests share (test_minatar_dqn.py, test_minatar.py).

Every pipeline learns from pixels: MinAtar Breakout (Young & Tian 2019), 10x10 frames of 4
binary channels, as each method's user starts it (`compare run`). Slow (minutes), part of CI.

A uniformly random policy scores 0.412 there under the harness (10,000 episodes; the shipped
normalization table, compare.core.scores), so no bar is under 3x random (1.24). Each bar
is at most 70% of the worst seed we measured (docs/minatar.md, "Learning from pixels"). The DQN's bar is
judged over three seeds: the same seed, settings and package versions scored 6.42 on 2026-11-30
and 4.18 on 2026-12-02 (machines of the same kind; the cause is not pinned down, while the
spiking runs and the CartPole MLP runs gave the same numbers on both days).

The DQN-learner runs here keep their MinAtar preset except what the short budget forces on
both alike: learning from step 1,000 and epsilon decayed over half the run (the preset's 5,000
and 100,000 assume Young & Tian's 5M steps).
"""

import json

RANDOM_RETURN = 0.412
GAME = "MinAtar/Breakout"
EVAL = ["--set", "eval_episodes=100"]  # a 30-episode mean varies by +-0.3 here; 100 halves that


def short_schedule(steps: int) -> list[str]:
    return ["--steps", str(steps), "--set", "learning_starts=1000", "--set", f"epsilon_decay_steps={steps // 2}",
            *EVAL]


def final_return(run_dir) -> float:
    return json.loads((run_dir / "eval.json").read_text())["mean_return"]
