"""Soft actor-critic with a task axis on every parameter: one behavior policy per task.

The paper collects each task's data with a stochastic SAC policy trained on that task's
real environment (App. A.2.2, "Data collection"). Here all tasks of an env train together:
actor ``(T,)``, twin critics ``(T, 2)`` with targets, entropy temperature ``log_alpha (T,)``
(auto-tuned to a target entropy of ``-act_dim``, Haarnoja et al. 2018b), and a replay
buffer ``(T, capacity, ...)`` on the device. One iteration steps ``envs_per_task`` sub-envs
per task through one vector env and takes ``updates_per_step`` batched gradient steps; the
tasks never interact (each task's loss only reaches its own parameters), so the per-task
losses are summed.

Policy actions live in (-1, 1); the env sees ``center + scale * a`` (the action box).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from merpo_data.networks import StackedMLP, StackedTanhGaussianPolicy
from merpo_data.rollouts import Episode, collect_episodes, make_task_vector_env


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (one value for all tasks of an env)."""

    hidden: int = 64
    hidden_layers: int = 2
    iterations: int = 3000  # env steps per sub-env; a task sees iterations * envs_per_task
    envs_per_task: int = 1
    random_iterations: int = 250  # uniform actions first, to fill the buffer
    updates_per_step: int = 1
    batch_size: int = 128
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 0.2
    gamma: float = 0.99
    tau: float = 0.005
    buffer_size: int = 100_000  # per task
    checkpoint_every: int = 250  # iterations between behavior-policy checkpoints
    eval_episodes: int = 10  # stochastic episodes per task per checkpoint
    eval_envs_per_task: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


class StackedSAC(nn.Module):
    """Actor ``(T,)``, twin critics and targets ``(T, 2)``, temperature ``(T,)``."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dim: int, cfg: SACConfig):
        super().__init__()
        self.num_tasks, self.obs_dim, self.act_dim = num_tasks, obs_dim, act_dim
        self.actor = StackedTanhGaussianPolicy(
            (num_tasks,), obs_dim, act_dim, cfg.hidden, cfg.hidden_layers
        )
        self.critic = StackedMLP(
            (num_tasks, 2), obs_dim + act_dim, 1, cfg.hidden, cfg.hidden_layers
        )
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((num_tasks,), float(np.log(cfg.init_alpha))))
        self.target_entropy = -float(act_dim)

    def q_values(self, critic: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Both critics' values ``(T, 2, B)`` for ``obs (T, B, .)`` and ``act (T, B, .)``."""
        x = torch.cat([obs, act], dim=-1).unsqueeze(1).expand(-1, 2, -1, -1)
        return critic(x).squeeze(-1)


class ReplayBuffer:
    """A FIFO buffer per task, stored as ``(T, capacity, ...)`` tensors on the device.

    All tasks receive the same number of transitions per step, so one write pointer and
    one size serve every task.
    """

    def __init__(
        self, num_tasks: int, capacity: int, obs_dim: int, act_dim: int, device: torch.device
    ):
        self.capacity, self.size, self.ptr = capacity, 0, 0
        shape = (num_tasks, capacity)
        self.data = {
            "observations": torch.zeros(*shape, obs_dim, device=device),
            "actions": torch.zeros(*shape, act_dim, device=device),
            "rewards": torch.zeros(*shape, device=device),
            "next_observations": torch.zeros(*shape, obs_dim, device=device),
            "terminations": torch.zeros(*shape, device=device),
        }

    def add(self, **rows: torch.Tensor) -> None:
        """Append ``K`` transitions per task: each row tensor is ``(T, K, ...)``."""
        k = next(iter(rows.values())).shape[1]
        index = (self.ptr + torch.arange(k)) % self.capacity
        for name, value in rows.items():
            self.data[name][:, index.to(value.device)] = value
        self.ptr = (self.ptr + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions per task, indices drawn on the device."""
        obs = self.data["observations"]
        index = torch.randint(
            self.size, (obs.shape[0], batch_size), device=obs.device, generator=generator
        )
        out = {}
        for name, value in self.data.items():
            idx = index.view(*index.shape, *([1] * (value.dim() - 2)))
            out[name] = torch.take_along_dim(value, idx, dim=1)
        return out

    def state_dict(self) -> dict:
        return {
            "size": self.size,
            "ptr": self.ptr,
            **{k: v[:, : self.size].clone() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.size, self.ptr = int(state["size"]), int(state["ptr"])
        for name, value in self.data.items():
            value[:, : self.size] = state[name].to(value.device)


def sac_losses(model: StackedSAC, batch: dict[str, torch.Tensor], gamma: float, generator=None):
    """Per-task critic, actor and temperature losses, each ``(T,)`` (SAC, Haarnoja et al. 2018b).

    critic: E[(Q_i(s,a) - y)^2],
            y = r + gamma (1 - term) (min_i Q'_i(s',a') - alpha log pi(a'|s')), a' ~ pi(.|s')
    actor:  E[alpha log pi(a|s) - min_i Q_i(s,a)], a ~ pi(.|s) reparameterised
    alpha:  -E[log alpha (log pi(a|s) + target_entropy)]
    """
    obs, act, rew = batch["observations"], batch["actions"], batch["rewards"]
    next_obs, term = batch["next_observations"], batch["terminations"]
    alpha = model.log_alpha.exp().detach().unsqueeze(-1)  # (T, 1)
    with torch.no_grad():
        next_act, next_logp = model.actor.sample(next_obs, generator)
        next_q = model.q_values(model.target_critic, next_obs, next_act).min(dim=1).values
        target = rew + gamma * (1.0 - term) * (next_q - alpha * next_logp)
    q = model.q_values(model.critic, obs, act)  # (T, 2, B)
    critic_loss = ((q - target.unsqueeze(1)) ** 2).mean(dim=(1, 2))

    new_act, logp = model.actor.sample(obs, generator)
    # This loss also reaches the critic's weights; the trainer steps it only into the actor.
    q_new = model.q_values(model.critic, obs, new_act).min(dim=1).values
    actor_loss = (alpha * logp - q_new).mean(dim=-1)
    alpha_loss = -(model.log_alpha.unsqueeze(-1) * (logp.detach() + model.target_entropy)).mean(
        dim=-1
    )
    return critic_loss, actor_loss, alpha_loss


class SACTrainer:
    """Trains one stacked SAC over ``tasks`` of ``env_id``; resumable via ``state_dict``.

    ``train(on_checkpoint)`` runs to ``cfg.iterations`` and calls
    ``on_checkpoint(iteration, returns (T,) ndarray)`` at iteration 0 and every
    ``checkpoint_every`` iterations (and at the end), after evaluating the current
    stochastic policy on ``eval_episodes`` episodes per task.
    """

    def __init__(
        self, env_id: str, tasks: Sequence[int], cfg: SACConfig, device="cpu", seed: int = 0
    ):
        self.env_id, self.tasks, self.cfg = env_id, tuple(tasks), cfg
        self.device = torch.device(device)
        self.seed = seed
        self.num_tasks = len(self.tasks)
        self.envs = make_task_vector_env(env_id, self.tasks, cfg.envs_per_task)
        self.eval_envs = make_task_vector_env(env_id, self.tasks, cfg.eval_envs_per_task)
        space = self.envs.single_action_space
        self.obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        self.act_dim = int(np.prod(space.shape))
        self.action_center = torch.tensor(
            (space.high + space.low) / 2, dtype=torch.float32, device=self.device
        )
        self.action_scale = torch.tensor(
            (space.high - space.low) / 2, dtype=torch.float32, device=self.device
        )
        torch.manual_seed(seed)
        self.model = StackedSAC(self.num_tasks, self.obs_dim, self.act_dim, cfg).to(self.device)
        self.critic_opt = torch.optim.Adam(self.model.critic.parameters(), lr=cfg.critic_lr)
        self.actor_opt = torch.optim.Adam(self.model.actor.parameters(), lr=cfg.actor_lr)
        self.alpha_opt = torch.optim.Adam([self.model.log_alpha], lr=cfg.alpha_lr)
        self.buffer = ReplayBuffer(
            self.num_tasks, cfg.buffer_size, self.obs_dim, self.act_dim, self.device
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.iteration = 0
        self._obs: np.ndarray | None = None
        # The episodes in flight, per sub-env, so that a resume continues them exactly
        # (see ``state_dict``): how the episode started (its reset seed, or the env RNG's
        # state just before its reset) and the env actions taken in it so far.
        self._starts: list[str] = []
        self._episode_actions: list[list[np.ndarray]] = []
        # True once the checkpoint of the current iteration is recorded (a trainer resumed
        # from a checkpoint must not record that checkpoint a second time).
        self._checkpointed = False

    # ---- acting -------------------------------------------------------------------------
    def to_env_action(self, action: torch.Tensor) -> torch.Tensor:
        return self.action_center + self.action_scale * action

    def policy_act_fn(self, deterministic: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        return make_act_fn(
            self.model.actor, self.action_center, self.action_scale, self.generator, deterministic
        )

    def evaluate(self, episodes: int | None = None) -> np.ndarray:
        """Mean stochastic-policy return per task ``(T,)`` over ``episodes`` whole episodes."""
        episodes = episodes or self.cfg.eval_episodes
        seed = self.seed * 1_000_003 + 7919 * (self.iteration + 1)
        result = collect_episodes(
            self.eval_envs, self.num_tasks, self.policy_act_fn(), episodes, seed
        )
        return mean_returns(result)

    # ---- training -----------------------------------------------------------------------
    def _env_step(self) -> None:
        cfg, n = self.cfg, self.num_tasks
        if self._obs is None:
            seeds = [self.seed * 10_000 + self.iteration + i for i in range(self.envs.num_envs)]
            self._obs, _ = self.envs.reset(seed=seeds)
            self._starts = [json.dumps({"seed": s}) for s in seeds]
            self._episode_actions = [[] for _ in seeds]
        obs = torch.as_tensor(np.asarray(self._obs, dtype=np.float32), device=self.device).view(
            n, cfg.envs_per_task, -1
        )
        if self.iteration < cfg.random_iterations:
            action = (
                torch.rand(
                    obs.shape[:-1] + (self.act_dim,), device=self.device, generator=self.generator
                )
                * 2
                - 1
            )
        else:
            with torch.no_grad():
                action, _ = self.model.actor.sample(obs, self.generator)
        env_action = self.to_env_action(action).reshape(n * cfg.envs_per_task, -1).cpu().numpy()
        next_obs, rew, term, trunc, _ = self.envs.step(env_action)
        to = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)  # noqa: E731
        self.buffer.add(
            observations=obs,
            actions=action,
            rewards=to(rew).view(n, -1),
            next_observations=to(next_obs).view(n, cfg.envs_per_task, -1),
            # Truncation is not termination: the bootstrap stays on at the time limit.
            terminations=to(term).view(n, -1),
        )
        done = np.logical_or(term, trunc)
        self._obs = next_obs
        for i, action_i in enumerate(env_action):
            self._episode_actions[i].append(action_i)
        if done.any():
            for i in np.flatnonzero(done):
                self._starts[i] = json.dumps({"rng": _env_rng(self.envs, i).bit_generator.state})
                self._episode_actions[i] = []
            self._obs, _ = self.envs.reset(options={"reset_mask": done})

    def update(self) -> None:
        cfg = self.cfg
        batch = self.buffer.sample(cfg.batch_size, self.generator)
        critic_loss, actor_loss, alpha_loss = sac_losses(
            self.model, batch, cfg.gamma, self.generator
        )
        self.critic_opt.zero_grad(set_to_none=True)
        self.actor_opt.zero_grad(set_to_none=True)
        self.alpha_opt.zero_grad(set_to_none=True)
        # The actor loss also reaches the critic's weights; only the critic loss may move them.
        critic_loss.sum().backward(inputs=list(self.model.critic.parameters()))
        actor_loss.sum().backward(inputs=list(self.model.actor.parameters()))
        alpha_loss.sum().backward(inputs=[self.model.log_alpha])
        self.critic_opt.step()
        self.actor_opt.step()
        self.alpha_opt.step()
        with torch.no_grad():
            for target, source in zip(
                self.model.target_critic.parameters(), self.model.critic.parameters(), strict=True
            ):
                target.lerp_(source, cfg.tau)

    def train(self, on_checkpoint: Callable[[int, np.ndarray], None], progress=None) -> None:
        cfg = self.cfg
        if self.iteration == 0 and not self._checkpointed:
            self._checkpoint(on_checkpoint)
        while self.iteration < cfg.iterations:
            self._env_step()
            self.iteration += 1
            if self.iteration >= cfg.random_iterations or self.buffer.size >= cfg.batch_size:
                for _ in range(cfg.updates_per_step):
                    self.update()
            if progress is not None:
                progress.update(1)
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
                self._checkpoint(on_checkpoint)

    def _checkpoint(self, on_checkpoint: Callable[[int, np.ndarray], None]) -> None:
        returns = self.evaluate()
        self._checkpointed = True  # before the callback: the state it saves says so
        on_checkpoint(self.iteration, returns)
        self._checkpointed = False

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue training exactly (tensors, numbers, strings only).

        Besides the networks, optimizers, buffer and generator, the episodes in flight:
        per sub-env the observation, how its episode started and the actions taken since.
        A resume replays those actions from the same start, so the run goes on as if never
        stopped: a dataset is a function of its recipe, interrupted or not. (Checkpoints
        fall mid-episode wherever ``checkpoint_every`` is no multiple of the episode
        length, or episodes end early.)
        """
        state = {
            "tasks": torch.tensor(self.tasks),
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "generator": self.generator.get_state(),
            "checkpointed": self._checkpointed,
        }
        if self._obs is not None:
            num_envs = self.envs.num_envs
            state["episodes"] = {
                "obs": torch.from_numpy(np.array(self._obs)),
                "starts": list(self._starts),
                "actions": [
                    torch.from_numpy(np.array(a, dtype=np.float32).reshape(len(a), self.act_dim))
                    for a in self._episode_actions
                ],
                "rng": [
                    json.dumps(_env_rng(self.envs, i).bit_generator.state)
                    for i in range(num_envs)
                ],
            }
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s state; :class:`InexactResume` if it cannot be exact.

        A state without the episodes in flight (saved by an older merpo-data, or before
        the first step) is exact only before the first env step.
        """
        iteration = int(state["iteration"])
        if "episodes" not in state and iteration > 0:
            raise InexactResume(
                f"the saved SAC state at iteration {iteration} does not hold its episodes "
                "in flight (an older merpo-data wrote it)"
            )
        self.iteration = iteration
        self.model.load_state_dict(state["model"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"])
        self._checkpointed = bool(state.get("checkpointed", True))
        self._obs = None
        if "episodes" in state:
            self._restore_episodes(state["episodes"])

    def _restore_episodes(self, saved: dict) -> None:
        """Bring every sub-env back to the saved point of its episode: same start (reset
        seed, or the env RNG's state before the reset), the saved actions replayed, then
        the env RNG's state at the checkpoint. The replayed observation must equal the
        saved one bit for bit, else :class:`InexactResume`."""
        starts = [json.loads(s) for s in saved["starts"]]
        envs = self.envs
        envs.reset(seed=[int(s.get("seed", 0)) for s in starts])
        rng_started = np.array(["rng" in s for s in starts])
        if rng_started.any():
            for i in np.flatnonzero(rng_started):
                _env_rng(envs, i).bit_generator.state = starts[i]["rng"]
            envs.reset(options={"reset_mask": rng_started})
        obs = saved["obs"].numpy()
        for i, actions in enumerate(saved["actions"]):
            sub_env = envs.envs[i]
            last = None
            for action in actions.numpy():
                last, *_ = sub_env.step(action)
            if last is not None and not np.array_equal(np.asarray(last), obs[i]):
                raise InexactResume(
                    f"sub-env {i}: replaying its episode did not reach the saved state "
                    "(the env is not deterministic given its seed)"
                )
            _env_rng(envs, i).bit_generator.state = json.loads(saved["rng"][i])
        self._starts = list(saved["starts"])
        self._episode_actions = [list(a.numpy()) for a in saved["actions"]]
        self._obs = obs.copy()

    def close(self) -> None:
        self.envs.close()
        self.eval_envs.close()


class InexactResume(RuntimeError):
    """A saved SAC state from which training cannot continue exactly as it would have."""


def _env_rng(envs, index: int) -> np.random.Generator:
    """Sub-env ``index``'s own RNG (its resets' noise); it exists once the env was reset."""
    return envs.envs[index].unwrapped.np_random


def make_act_fn(actor, center, scale, generator=None, deterministic: bool = False):
    """Stacked actor -> rollout ``act_fn``: obs ``(T, K, obs_dim)`` -> env actions ``(T, K, A)``."""
    device = center.device

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            if deterministic:
                action = actor.deterministic(obs_t)
            else:
                action, _ = actor.sample(obs_t, generator)
            return (center + scale * action).cpu().numpy()

    return act


def mean_returns(episodes: list[list[Episode]]) -> np.ndarray:
    return np.array([np.mean([e.episode_return for e in task]) for task in episodes])
