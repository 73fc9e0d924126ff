"""Model rollouts of a policy in the task models, batched over tasks (Alg. 1 line 3).

A pure function of (model, policy, start states): ``length`` model steps for every start
state of every task at once, with the environment's known termination function (not a
learned one: ``merpo_envs.get_meta_info(env_id).terminated_torch``). Shapes are fixed: no
row is ever dropped.

Terminated rows: once a row's transition is terminal, its trajectory does not continue; the
row restarts from its own start state at the next step. So every returned transition is a
valid model transition (from a dataset state or from a state the model reached without
terminating) and consumers need no mask; the terminal transition itself is returned with
``terminations = 1``. (MBPO/MOPO instead drop terminated rows, which changes shapes; the
restart keeps the batch full, and with Table 2's rollout length 1 the two are identical.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from merpo_agent.dynamics import DynamicsEnsemble, TransitionBatch

PolicyFn = Callable[[torch.Tensor], torch.Tensor]
TerminatedFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def rollout(
    model: DynamicsEnsemble,
    policy_fn: PolicyFn,
    start_obs: torch.Tensor,
    length: int,
    terminated_fn: TerminatedFn,
    generator: torch.Generator | None = None,
) -> TransitionBatch:
    """Roll ``policy_fn`` in ``model`` for ``length`` steps from ``start_obs`` (T, N, obs_dim).

    ``policy_fn(obs (T, N, obs_dim)) -> actions (T, N, act_dim)`` in env units (it owns its
    own randomness); ``terminated_fn(obs, act, next_obs) -> bool (T, N)`` is the env's
    ``terminated_torch`` (``merpo_envs.get_meta_info(env_id)``). ``generator`` drives the
    model's elite choice and Gaussian noise.

    Returns a :class:`TransitionBatch` of shape (T, length * N, ...), step-major (the N
    transitions of step 0, then of step 1, ...). See the module docstring for terminated rows.
    """
    if start_obs.dim() != 3 or start_obs.shape[0] != model.num_tasks:
        raise ValueError(
            f"rollout start_obs must be (T={model.num_tasks}, N, obs_dim), "
            f"got {tuple(start_obs.shape)}"
        )
    if length < 1:
        raise ValueError(f"rollout length must be >= 1, got {length}")
    obs = start_obs
    steps: list[TransitionBatch] = []
    for _ in range(length):  # loop over rollout steps (sequential by nature), not tasks
        act = policy_fn(obs)
        next_obs, reward = model.step(obs, act, generator=generator)
        done = terminated_fn(obs, act, next_obs).to(torch.bool)
        steps.append(TransitionBatch(obs, act, reward, next_obs, done.to(obs.dtype)))
        obs = torch.where(done.unsqueeze(-1), start_obs, next_obs)
    return TransitionBatch(*(torch.cat(field, dim=1) for field in zip(*steps, strict=True)))
