"""``python -m merpo_envs``: one seeded random-action episode per env on a train and a test task.

Prints a table of returns, a smoke check that every environment installs, builds and steps.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import merpo_envs


def pick_tasks(info: merpo_envs.MetaEnvInfo) -> list[tuple[str, int]]:
    """The first train task and the first test task that differs from it (when one does)."""
    train = info.train_tasks[0]
    test = next((t for t in info.test_tasks if t != train), info.test_tasks[0])
    return [("train", train), ("test", test)]


def run_episode(env_id: str, task: int, seed: int) -> tuple[float, int, bool]:
    """Return, length and whether it terminated, for uniform random actions."""
    env = gym.make(env_id, task=task)
    try:
        env.action_space.seed(seed)
        env.reset(seed=seed)
        total, steps = 0.0, 0
        while True:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            steps += 1
            if terminated or truncated:
                return total, steps, bool(terminated)
    finally:
        env.close()


def describe(params: dict) -> str:
    """A short summary of a task's parameters for the table."""
    parts = []
    for name, value in params.items():
        array = np.asarray(value, dtype=float)
        if array.size == 1:
            parts.append(f"{name}={array.item():+g}")
        elif array.size == 2:
            parts.append(f"{name}=({array[0]:+.3f},{array[1]:+.3f})")
        else:
            parts.append(f"{name} x{array.min():.2f}..{array.max():.2f}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m merpo_envs", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of reset and actions")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    header = f"{'env':<28} {'split':<5} {'task':>4} {'steps':>5} {'term':>5} {'return':>10}  params"
    print(f"merpo-envs: one episode of random actions (seed {args.seed}) per env and task")
    print(header)
    print("-" * len(header))
    for env_id in merpo_envs.ENV_IDS:
        info = merpo_envs.get_meta_info(env_id)
        for split, task in pick_tasks(info):
            total, steps, terminated = run_episode(env_id, task, args.seed)
            print(
                f"{env_id:<28} {split:<5} {task:>4} {steps:>5} {str(terminated):>5} "
                f"{total:>10.2f}  {describe(info.task_params(task))}"
            )
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
