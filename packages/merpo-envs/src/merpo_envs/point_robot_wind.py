"""Point-Robot-Wind: a 2-D point pushed by a per-task wind (FOCAL's point-robot-wind).

Tasks differ in dynamics only (the paper, Appendix A.1: the wind changes the transitions,
the goal and the reward are shared).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from merpo_envs.meta_info import MetaEnvInfo
from merpo_envs.task_env import DEFAULT_SIZE, TaskEnvMixin

ENV_ID = "merpo/PointRobotWind-v0"
NUM_TASKS = 50
HORIZON = 25
GOAL = np.array([1.0, 0.0])
GOAL_RADIUS = 0.2
MAX_ACTION = 0.1
# The rendered window of the plane: x in [-0.5, 1.5], y in [-1, 1].
VIEW_LOW, VIEW_SIZE = np.array([-0.5, -1.0]), 2.0


def _make_winds() -> np.ndarray:
    # FOCAL's exact values: one RandomState(1337), all x components, then all y components.
    rng = np.random.RandomState(1337)
    wind_x = rng.uniform(-0.05, 0.05, NUM_TASKS)
    wind_y = rng.uniform(-0.05, 0.05, NUM_TASKS)
    return np.stack([wind_x, wind_y], axis=1)


WINDS = _make_winds()
TRAIN_TASKS = tuple(range(0, 40))
TEST_TASKS = tuple(range(40, 50))


def task_params(task: int) -> dict[str, Any]:
    return {"wind": [float(w) for w in WINDS[task]]}


def terminated_np(obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Point-Robot-Wind never terminates (episodes are only truncated at the horizon)."""
    return np.zeros(np.shape(next_obs)[:-1], dtype=bool)


def terminated_torch(obs, act, next_obs):
    import torch

    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


class PointRobotWindEnv(TaskEnvMixin, gym.Env):
    """A point in the plane that must reach (1, 0) against a task-specific wind.

    ## Observation
    ``Box(-inf, inf, (2,), float64)``: the position (x, y).

    ## Action
    ``Box(-0.1, 0.1, (2,), float32)``: a displacement; it is clipped to the box.

    ## Transition
    ``s' = s + clip(a) + wind``; reset puts the point at (0, 0).

    ## Reward
    Dense: ``-||s' - (1, 0)||``. ``info["sparse_reward"]`` carries the sparse form used by
    FOCAL: the dense reward plus 1 inside radius 0.2 of the goal, else 0.

    ## Termination and truncation
    Never terminates; truncated after 25 steps (``max_episode_steps`` of the registration).

    ## Tasks
    50 winds, ``RandomState(1337)``: ``wind_x = uniform(-.05, .05, 50)`` then ``wind_y``
    likewise (FOCAL's values). Train tasks 0-39, test tasks 40-49. ``task`` picks one
    (default 0); ``set_task(j)`` switches at the next reset; ``task_params`` is
    ``{"wind": [wind_x, wind_y]}``.

    ## Rendering
    ``render_mode="rgb_array"``: a ``(height, width, 3)`` uint8 top view of the plane
    ``[-0.5, 1.5] x [-1, 1]``: the goal disc (green), the positions of the episode so far
    (blue) and the point (red).

    ## Arguments
    ``task``, ``render_mode`` (``None`` or ``"rgb_array"``), ``width``, ``height``.

    ## Version History
    * v0: initial version (50 FOCAL winds, dense reward, horizon 25).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: int = TRAIN_TASKS[0],
        render_mode: str | None = None,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
        **unknown_kwargs: Any,
    ):
        self._init_task(META_INFO, task, unknown_kwargs, ("task", "render_mode", "width", "height"))
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"{ENV_ID}: render_mode must be None or 'rgb_array', got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32)
        self._state = np.zeros(2)
        self._path = [self._state.copy()]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._start_pending_task()
        self._state = np.zeros(2)
        self._path = [self._state.copy()]
        self._state = np.zeros(2)
        return self._state.copy(), {"task": self._task}

    def step(self, action):
        action = np.clip(self._check_action(action), -MAX_ACTION, MAX_ACTION)
        self._state = self._state + action + WINDS[self._task]
        dx, dy = (float(v) for v in self._state - GOAL)
        # Plain float arithmetic, not np.linalg.norm: numpy's norm is a BLAS dot whose
        # kernel (and so its last bit) depends on the CPU, and rewards are dataset bits.
        reward = -math.sqrt(dx * dx + dy * dy)
        sparse = reward + 1.0 if reward >= -GOAL_RADIUS else 0.0
        info = {"sparse_reward": sparse, "task": self._task}
        self._path.append(self._state.copy())
        return self._state.copy(), reward, False, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        scale = min(self.width, self.height) / VIEW_SIZE  # pixels per unit, square pixels
        ys, xs = np.mgrid[0 : self.height, 0 : self.width]
        # pixel centres -> plane coordinates (y up), the view centred in the frame
        px = VIEW_LOW[0] + (xs + 0.5 - (self.width - VIEW_SIZE * scale) / 2) / scale
        py = VIEW_LOW[1] + VIEW_SIZE - (ys + 0.5 - (self.height - VIEW_SIZE * scale) / 2) / scale
        frame = np.full((self.height, self.width, 3), 235, dtype=np.uint8)

        def disc(centre, radius, colour):
            frame[(px - centre[0]) ** 2 + (py - centre[1]) ** 2 <= radius**2] = colour

        disc(GOAL, GOAL_RADIUS, (80, 180, 80))
        for point in self._path[:-1]:
            disc(point, 0.015, (60, 90, 200))
        disc(self._state, 0.04, (220, 40, 40))
        return frame


META_INFO = MetaEnvInfo(
    env_id=ENV_ID,
    slug="point-robot-wind",
    num_tasks=NUM_TASKS,
    train_tasks=TRAIN_TASKS,
    test_tasks=TEST_TASKS,
    max_episode_steps=HORIZON,
    obs_dim=2,
    act_dim=2,
    params_fn=task_params,
    terminated_np=terminated_np,
    terminated_torch=terminated_torch,
)
