"""The three pipelines side by side on CartPole, small enough for a laptop CPU (minutes):

    python examples/cartpole_in_five_minutes.py [--steps 20000] [--results results/example]

trains an ANN DQN and a DSQN, converts the DQN into a Sinabs SNN and into an int8 ANN, and
prints the comparison table (scores, firing, energy under two models, the crossover rate).
A few thousand steps teach CartPole little; the default 20,000 give a DQN that balances for a
while on most seeds. The test suite runs it with a tiny budget (tests/test_examples.py).
"""

import argparse

from compare.app import api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--results", default="results/example")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    common = {"game": "CartPole-v1", "seed": args.seed, "steps": args.steps, "results": args.results}
    budget = {"learning_starts": min(1000, args.steps // 2), "eval_episodes": 10}
    dqn = api.run(method="dqn", settings=budget, **common)
    api.run(method="dsqn", settings={**budget, "timesteps": 4}, **common)
    api.run(method="convert", source=dqn.path, results=args.results,
            settings={"timesteps": [8, 32], "calibration_frames": 2000, "validation_episodes": 5})
    api.run(method="quantize", source=dqn.path, results=args.results, settings={"calibration_frames": 2000})
    frame = api.table(args.results)
    print(frame[["column", "mean", "seeds", "mean_firing_rate", "energy_uj_memory", "energy_uj_compute",
                 "crossover_rate"]].to_string(index=False))


if __name__ == "__main__":
    main()
