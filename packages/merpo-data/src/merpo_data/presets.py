"""Per-env data-generation presets: SAC size and budget, checkpoints, dataset episodes.

A preset is looked up by (env id, name). Point-Robot-Wind has hand-set presets
("default": all 50 tasks in a few minutes on a 2-core CPU; "test": a handful of tasks in
seconds, still with expert > medium > random). Half-Cheetah-Fwd-Back, Ant-Fwd-Back and
Walker-2D-Params have a "default" that a 2-core CPU trains in one to two hours (and whose
policies are shipped) and a "test" of a few episodes rolled out from those policies. A new
env id gets a GPU-scale "default" built from its MetaEnvInfo, so it works without edits
here, and a tiny "test" preset for tests that only check the plumbing.

A preset also fixes the env's *task groups* (:meth:`DataPreset.task_groups`): consecutive
task indices, ``tasks_per_group`` at a time, trained as one batched SAC and rolled out
together. A dataset's content depends on its group, never on which other tasks were asked
for, so building tasks 0-3 or 0-49, in chunks or under torchrun, gives the same datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from merpo_envs import get_meta_info

from merpo_data.ids import check_preset
from merpo_data.sac import SACConfig

DEFAULT_EPISODES = 200  # per dataset; the paper found 200 episodes enough (App. A.2.2)


@dataclass(frozen=True)
class DataPreset:
    """How to train the behavior policies of an env and how many episodes each dataset holds.

    Attributes:
        name: the preset name (part of the behavior-policy cache key).
        sac: the SAC configuration shared by all tasks of the env.
        episodes: whole episodes per dataset (per task and quality).
        rollout_envs_per_task: sub-envs per task when collecting dataset episodes.
        tasks_per_group: tasks trained and rolled out together, as fixed groups of
            consecutive task indices (bounds memory on big envs; see the module docstring).
        random_eval_episodes: episodes of the uniform policy that place the ``medium``
            checkpoint (halfway between random and expert).
        reference_episodes: episodes of the uniform and the expert policy, collected as
            the datasets are, whose mean returns are ``ref_min_score`` / ``ref_max_score``
            (Minari's ``num_episodes_average_score``).
        policies_of: the preset whose behavior policies this one rolls out (its cache and
            shipped file); ``None``: its own. A cheap preset over an expensive one's
            policies gives small datasets of the real qualities.
    """

    name: str
    sac: SACConfig = field(default_factory=SACConfig)
    episodes: int = DEFAULT_EPISODES
    rollout_envs_per_task: int = 20
    tasks_per_group: int = 50
    random_eval_episodes: int = 20
    reference_episodes: int = 100
    policies_of: str | None = None

    @property
    def policy_preset(self) -> str:
        """The preset name that keys this preset's behavior policies (cache, shipped file)."""
        return self.policies_of or self.name

    def task_groups(self, num_tasks: int) -> tuple[tuple[int, ...], ...]:
        """The fixed task groups of an env with ``num_tasks`` tasks (consecutive indices)."""
        size = self.tasks_per_group
        return tuple(
            tuple(range(start, min(start + size, num_tasks))) for start in range(0, num_tasks, size)
        )

    def group_of(self, task: int, num_tasks: int) -> tuple[int, ...]:
        """The task group holding ``task``."""
        return self.task_groups(num_tasks)[task // self.tasks_per_group]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "sac": self.sac.to_dict(),
            "episodes": self.episodes,
            "rollout_envs_per_task": self.rollout_envs_per_task,
            "tasks_per_group": self.tasks_per_group,
            "random_eval_episodes": self.random_eval_episodes,
            "reference_episodes": self.reference_episodes,
            "policies_of": self.policy_preset,
        }


# Measured on 10 tasks: 32x2 nets with batch 64 reach the returns of 64x2 / batch 128
# (-6.6 vs -6.5 mean after 3000 iterations) at a quarter of the CPU time.
_POINT_ROBOT_SAC = SACConfig(
    hidden=32,
    hidden_layers=2,
    iterations=3000,
    envs_per_task=1,
    random_iterations=250,
    batch_size=64,
    actor_lr=1e-3,
    critic_lr=1e-3,
    alpha_lr=1e-3,
    gamma=0.9,  # 25-step horizon: a short effective horizon learns faster, same optimum
    checkpoint_every=250,
    eval_episodes=10,
    eval_envs_per_task=10,
)

# Point-Robot-Wind's default trains all 50 tasks as one group (seeded by the whole
# group, as its published datasets were built); the test preset, pairs of tasks.
_SPECIFIC: dict[tuple[str, str], DataPreset] = {
    ("merpo/PointRobotWind-v0", "default"): DataPreset(
        "default", _POINT_ROBOT_SAC, tasks_per_group=50
    ),
    ("merpo/PointRobotWind-v0", "test"): DataPreset(
        "test",
        replace(_POINT_ROBOT_SAC, iterations=1250, checkpoint_every=250, eval_episodes=10),
        episodes=100,
        rollout_envs_per_task=10,
        tasks_per_group=2,
    ),
}


# The GPU-scale SAC of new MuJoCo env ids: 256x2, 1M env steps per task.
_MUJOCO_GPU_SAC = SACConfig(
    hidden=256,
    hidden_layers=2,
    iterations=250_000,
    envs_per_task=4,  # 1M env steps per task
    random_iterations=2_500,
    updates_per_step=4,  # one gradient step per env step, as in SAC
    batch_size=256,
    actor_lr=3e-4,
    critic_lr=3e-4,
    alpha_lr=3e-4,
    init_alpha=1.0,
    gamma=0.99,
    buffer_size=1_000_000,
    checkpoint_every=12_500,  # 20 checkpoints along the way
    eval_episodes=10,
    eval_envs_per_task=10,
)

# Half-Cheetah-Fwd-Back and Ant-Fwd-Back (two tasks each) on a 2-core CPU: the GPU-scale
# SAC with 128x2 networks (a gradient step of the two stacked tasks costs ~11 ms on one
# core, against ~27 ms at 256x2) and one env step and one gradient step per iteration.
# The two envs train side by side, one core each, in about an hour and a half; the budgets
# are where SAC's published learning curves on these bodies pass the expert returns the
# datasets need (>= 1000 and >= 400 per 200-step episode). A checkpoint every 10k steps.
_MUJOCO_CPU_SAC = replace(
    _MUJOCO_GPU_SAC,
    hidden=128,
    envs_per_task=1,
    random_iterations=5_000,
    updates_per_step=1,
    checkpoint_every=10_000,
)
for _env_id, _iterations in (
    ("merpo/HalfCheetahFwdBack-v0", 250_000),
    ("merpo/AntFwdBack-v0", 300_000),  # Ant learns to walk more slowly
):
    _default = DataPreset(
        "default",
        replace(_MUJOCO_CPU_SAC, iterations=_iterations),
        rollout_envs_per_task=10,
        tasks_per_group=2,
    )
    _SPECIFIC[(_env_id, "default")] = _default
    # Seconds-sized datasets of the real qualities: the default's shipped policies.
    _SPECIFIC[(_env_id, "test")] = replace(
        _default,
        name="test",
        episodes=4,
        rollout_envs_per_task=2,
        reference_episodes=4,
        policies_of="default",
    )


# Walker-2D-Params (25 tasks) on a 2-core CPU: all 25 tasks as ONE batched SAC of 64x2
# networks (measured under load, one core: 2.1 ms per task and iteration at T = 25 and 64x2,
# against 6.6 ms at 128x2 and 27 ms for a lone 256x2 SAC), 200k env steps per task, a
# checkpoint every 10k; one env step and one gradient step per iteration.
_WALKER_DEFAULT = DataPreset(
    "default",
    replace(_MUJOCO_CPU_SAC, hidden=64, iterations=200_000, buffer_size=200_000),
    rollout_envs_per_task=10,
    tasks_per_group=25,
)
_SPECIFIC[("merpo/Walker2dParams-v0", "default")] = _WALKER_DEFAULT
# Seconds-sized datasets of the real qualities, as for Half-Cheetah and Ant.
_SPECIFIC[("merpo/Walker2dParams-v0", "test")] = replace(
    _WALKER_DEFAULT,
    name="test",
    episodes=4,
    rollout_envs_per_task=2,
    reference_episodes=4,
    policies_of="default",
)


def _generic_mujoco(env_id: str, name: str) -> DataPreset:
    """GPU-scale SAC (256x2, 1M steps per task) for long-horizon envs; a tiny one for tests."""
    info = get_meta_info(env_id)
    if name == "test":
        sac = SACConfig(
            hidden=32,
            hidden_layers=2,
            iterations=300,
            random_iterations=100,
            batch_size=64,
            checkpoint_every=100,
            eval_episodes=2,
            eval_envs_per_task=2,
            buffer_size=10_000,
        )
        return DataPreset(
            "test",
            sac,
            episodes=4,
            rollout_envs_per_task=2,
            tasks_per_group=8,
            random_eval_episodes=2,
            reference_episodes=4,
        )
    sac = _MUJOCO_GPU_SAC
    # Memory: a (T, 1M, ...) float32 buffer per group; 10 tasks of a 27-d env is ~2.5 GB.
    chunk = max(1, min(info.num_tasks, 10))
    return DataPreset(
        name,
        sac,
        episodes=DEFAULT_EPISODES,
        rollout_envs_per_task=10,
        tasks_per_group=chunk,
        random_eval_episodes=20,
    )


def get_preset(env_id: str, name: str = "default") -> DataPreset:
    """The preset ``name`` of ``env_id`` (one-line error for unknown names)."""
    get_meta_info(env_id)  # unknown env -> one-line error listing the ids
    check_preset(name)
    specific = _SPECIFIC.get((env_id, name))
    return specific if specific is not None else _generic_mujoco(env_id, name)
