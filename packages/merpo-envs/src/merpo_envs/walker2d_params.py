"""Walker-2D-Params: Walker2d-v5 whose physics (masses, inertias, damping, friction) vary by task.

rand_param_envs' walker2d-rand-params on Gymnasium's Walker2d-v5 (the paper, Appendix A.1):
each task multiplies the model's default ``body_mass``, ``body_inertia`` and
``geom_friction`` by ``1.5**U(-3, 3)`` and ``dof_damping`` by ``1.3**U(-3, 3)``, element
by element, from one seeded random stream so task j is the same everywhere.

"The same everywhere" includes the last bit: the powers are computed in software
(:func:`power_on_every_cpu`), because numpy's ``np.power`` rounds by CPU (its AVX-512
kernels round some results to the neighbouring float), and MuJoCo turns a last-bit change
of a mass into another trajectory, so another dataset.
"""

from __future__ import annotations

import functools
import os
from decimal import Context, Decimal, localcontext
from typing import Any

import gymnasium.envs.mujoco.mujoco_env as gym_mujoco_env
import mujoco
import numpy as np
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from merpo_envs.meta_info import MetaEnvInfo
from merpo_envs.task_env import MujocoTaskEnvMixin

ENV_ID = "merpo/Walker2dParams-v0"
HORIZON = 200
NUM_TASKS = 25
TRAIN_TASKS = tuple(range(0, 20))
TEST_TASKS = tuple(range(20, 25))
TASK_SEED = 1337
LOG_SCALE_LIMIT = 3.0
# The order rand_param_envs draws them in (it fixes which random numbers go where), and
# the base each exponent raises.
PARAM_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
XML_FILE = "walker2d_v5.xml"
# Walker2d-v5's healthy ranges: torso height qpos[1] (observation[0]) and torso angle
# qpos[2] (observation[1]), both open intervals.
HEALTHY_Z_RANGE = (0.8, 2.0)
HEALTHY_ANGLE_RANGE = (-1.0, 1.0)
OBS_DIM = 17
ACT_DIM = 6


def xml_path() -> str:
    """Path of Gymnasium's Walker2d-v5 model file."""
    return os.path.join(os.path.dirname(gym_mujoco_env.__file__), "assets", XML_FILE)


@functools.cache
def _param_shapes() -> dict[str, tuple[int, ...]]:
    # Load the bare model (no env, no renderer) only for the array shapes.
    model = mujoco.MjModel.from_xml_path(xml_path())
    return {name: getattr(model, name).shape for name in PARAM_BASES}


def power_on_every_cpu(base: float, exponents: np.ndarray) -> np.ndarray:
    """``base ** exponents`` element by element, the same bits on every machine.

    Each power is the float nearest to the exact value, computed by Python's ``decimal``
    (integer arithmetic, 40 significant digits, then one rounding to float64), not by a
    libm or SIMD kernel, whose last bit depends on the CPU and the library version.
    """
    with localcontext(Context(prec=40)):
        exact_base = Decimal(base)
        values = [float(exact_base ** Decimal(e)) for e in np.ravel(exponents).tolist()]
    return np.array(values, dtype=np.float64).reshape(np.shape(exponents))


@functools.cache
def task_multipliers() -> tuple[dict[str, np.ndarray], ...]:
    """The 25 tasks' multiplier arrays (read-only), drawn from one ``RandomState(1337)``.

    Task by task, in ``PARAM_BASES`` order: exponents ``uniform(-3, 3, size=shape)`` with
    the shape of the model's array, multiplier ``base ** exponent``
    (:func:`power_on_every_cpu`).
    """
    rng = np.random.RandomState(TASK_SEED)
    shapes = _param_shapes()
    tasks = []
    for _ in range(NUM_TASKS):
        multipliers = {}
        for name, base in PARAM_BASES.items():
            exponents = rng.uniform(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT, size=shapes[name])
            multiplier = power_on_every_cpu(base, exponents)
            multiplier.setflags(write=False)
            multipliers[name] = multiplier
        tasks.append(multipliers)
    return tuple(tasks)


def task_params(task: int) -> dict[str, Any]:
    """The task's four multiplier arrays as nested lists of floats."""
    return {name: value.tolist() for name, value in task_multipliers()[task].items()}


def terminated_np(obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Walker2d-v5's ``not is_healthy`` from the next observation: torso height
    ``next_obs[..., 0]`` outside ``(0.8, 2.0)`` or torso angle ``next_obs[..., 1]`` outside
    ``(-1, 1)`` (NaN counts as outside). Batched over leading axes."""
    next_obs = np.asarray(next_obs)
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (
        (z > HEALTHY_Z_RANGE[0])
        & (z < HEALTHY_Z_RANGE[1])
        & (angle > HEALTHY_ANGLE_RANGE[0])
        & (angle < HEALTHY_ANGLE_RANGE[1])
    )
    return ~healthy


def terminated_torch(obs, act, next_obs):
    """Torch form of :func:`terminated_np` (on the inputs' device)."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (
        (z > HEALTHY_Z_RANGE[0])
        & (z < HEALTHY_Z_RANGE[1])
        & (angle > HEALTHY_ANGLE_RANGE[0])
        & (angle < HEALTHY_ANGLE_RANGE[1])
    )
    return ~healthy


META_INFO = MetaEnvInfo(
    env_id=ENV_ID,
    slug="walker-2d-params",
    num_tasks=NUM_TASKS,
    train_tasks=TRAIN_TASKS,
    test_tasks=TEST_TASKS,
    max_episode_steps=HORIZON,
    obs_dim=OBS_DIM,
    act_dim=ACT_DIM,
    params_fn=task_params,
    terminated_np=terminated_np,
    terminated_torch=terminated_torch,
)


class Walker2dParamsEnv(MujocoTaskEnvMixin, Walker2dEnv):
    """Walker2d-v5 with the physics parameters of its task.

    ## Observation
    ``Box(-inf, inf, (17,), float64)``: Walker2d-v5's, qpos without the x position (8:
    torso height, torso angle, 6 joint angles) then qvel clipped to [-10, 10] (9).

    ## Action
    ``Box(-1, 1, (6,), float32)``: torques on the six joints.

    ## Reward
    ``v_x + 1[healthy] - 1e-3 * ||a||^2`` (Walker2d-v5's) with ``v_x`` the x velocity of the
    torso over the step (``dt = 0.008``). ``info`` carries ``reward_forward``,
    ``reward_survive``, ``reward_ctrl``, ``x_velocity`` and ``task``.

    ## Starting state
    Walker2d-v5's: qpos and qvel + U(-0.005, 0.005).

    ## Termination and truncation
    Terminates when unhealthy (Walker2d-v5): torso height outside ``(0.8, 2.0)`` or torso
    angle outside ``(-1, 1)``. ``merpo_envs.get_meta_info(ENV_ID).terminated_np/_torch``
    compute the same from batched next observations. Truncated after 200 steps.

    ## Tasks
    25 parameter sets from one ``RandomState(1337)``: task by task, exponents
    ``uniform(-3, 3, size=shape)`` for ``body_mass``, ``body_inertia``, ``dof_damping``,
    ``geom_friction`` in that order (rand_param_envs' order); the model's default arrays are
    multiplied by ``1.5**e`` (mass, inertia, friction) or ``1.3**e`` (damping). Train tasks
    0-19, test tasks 20-24. ``task`` picks one (default 0); ``set_task(j)`` switches at the
    next reset (the defaults are restored before another task's multipliers are applied);
    ``task_params`` holds the four multiplier arrays as nested lists.

    ## Arguments
    ``task``, ``render_mode`` (``"rgb_array"``, ``"depth_array"``, ``"human"``),
    ``width``, ``height``, ``camera_id``, ``camera_name``.

    ## Version History
    * v0: initial version, on Gymnasium's Walker2d-v5 (25 seeded parameter sets, train
      0-19, test 20-24, horizon 200).
    """

    _meta_info = META_INFO
    _base_env_kwargs = {"xml_file": XML_FILE}

    @functools.cached_property
    def _default_params(self) -> dict[str, np.ndarray]:
        """Copies of the model's arrays as compiled, taken at the first task's start in
        ``__init__``, before any multiplier is applied."""
        return {name: getattr(self.model, name).copy() for name in PARAM_BASES}

    def _on_task_start(self, task: int, changed: bool) -> None:
        # Rewriting the model (and mj_setConst) only on a new task keeps a plain reset cheap.
        if changed:
            self._apply_task_physics(task)

    def _apply_task_physics(self, task: int) -> None:
        """Set the model's arrays to defaults x the task's multipliers (never compounding)."""
        for name, multiplier in task_multipliers()[task].items():
            getattr(self.model, name)[:] = self._default_params[name] * multiplier
        # Recompute the constants MuJoCo derives from masses and inertias (subtree masses,
        # inverse weights used by the constraint solver), as after compiling a model.
        mujoco.mj_setConst(self.model, self.data)
