"""A trained policy to take away: ``load_policy(run_dir, task=None, device="cpu")``.

What a run directory's checkpoints hold decides what can be loaded:

- a MerPO run (any ``--algo`` of ``merpo_agent.config.ALGOS``):
  - ``task=None``: the meta-policy pi_c* (§4.2.3, Eq. 10) of ``checkpoints/latest.pt``;
  - ``task=j``: the policy pi_j adapted to unseen test task j at the meta-test (§4.3: RAC
    from pi_c* and Q_meta on task j's data), stored in ``checkpoints/adapted.pt`` by the
    run's final meta-test and by ``merpo-agent evaluate RUN_DIR`` (on the whole test split);
- a baseline run (FOCAL, contextual BCQ, MBML, Batch PEARL; MerPO §5.2): its policy is
  pi(a | s, z), and z is inferred from a task's offline data, so ``task=j`` (any task with a
  dataset of the run's quality) is required.

The policy is deterministic (tanh of the mean for the tanh-Gaussian actors, the meta-test's
action for the baselines) and takes one observation ``(obs_dim,)`` or a batch ``(..., obs_dim)``,
as numpy or a torch tensor, on any device; it returns the action in the env's own action box
(the networks' [-1, 1] rescaled, ``action_scaling``): numpy of the action space's dtype for
numpy input, a tensor on the input's device for tensor input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from merpo_agent.action_scaling import from_unit_actions
from merpo_agent.checkpoint import LATEST, load_checkpoint

# (1, N, obs_dim) observations on the policy's device -> (1, N, act_dim) actions in [-1, 1]
UnitPolicy = Callable[[torch.Tensor], torch.Tensor]


class Policy:
    """A deterministic policy ``obs -> action`` in the env's action box (module docstring)."""

    def __init__(self, act: UnitPolicy, env_id: str, device: str | torch.device,
                 description: str):
        import gymnasium as gym
        import merpo_envs  # noqa: F401  (registers the merpo/* ids)
        from merpo_envs import get_meta_info

        info = get_meta_info(env_id)
        env = gym.make(env_id)
        try:
            self.action_space = env.action_space
            self.observation_space = env.observation_space
        finally:
            env.close()
        self.env_id, self.description = info.env_id, description
        self.obs_dim, self.act_dim = info.obs_dim, info.act_dim
        self.device = torch.device(device)
        self._act = act
        self._low = torch.as_tensor(np.asarray(self.action_space.low), dtype=torch.float32,
                                    device=self.device)
        self._high = torch.as_tensor(np.asarray(self.action_space.high), dtype=torch.float32,
                                     device=self.device)

    @torch.no_grad()
    def __call__(self, obs):
        tensor_in = isinstance(obs, torch.Tensor)
        x = torch.as_tensor(obs, dtype=torch.float32).to(self.device)
        if x.shape[-1:] != (self.obs_dim,):
            raise ValueError(f"{self.env_id} observations have {self.obs_dim} values, got "
                             f"shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):  # a NaN in gives NaN actions out, silently
            raise ValueError(f"{self.env_id} observation holds a NaN or inf: {_shown(obs)}; "
                             "pass a finite observation")
        lead = x.shape[:-1]
        unit = self._act(x.reshape(1, -1, self.obs_dim)).clamp(-1.0, 1.0)
        action = from_unit_actions(unit, self._low, self._high).reshape(*lead, self.act_dim)
        if tensor_in:
            return action.to(obs.device)
        return action.cpu().numpy().astype(self.action_space.dtype)

    def __repr__(self) -> str:
        return f"Policy({self.description}, {self.env_id}, device={self.device})"


def _shown(obs) -> str:
    text = " ".join(str(obs).split())
    return text if len(text) <= 80 else text[:77] + "..."


class PolicyError(RuntimeError):
    """No such policy in the run directory; the message says what to run."""


def load_policy(run_dir: str | Path, task: int | None = None,
                device: str | torch.device = "cpu") -> Policy:
    """The policy of ``run_dir`` as a callable ``obs -> action`` (module docstring)."""
    from merpo_agent.baselines.run import run_algo

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise PolicyError(f"{run_dir} is not a run directory (no config.yaml); train first "
                          "with `merpo-agent train --run-dir ...`")
    from merpo_agent.config import check_device

    check_device(str(device))
    if run_algo(run_dir) is not None:
        return _baseline_policy(run_dir, task, device)
    return _merpo_policy(run_dir, task, device)


def _merpo_policy(run_dir: Path, task: int | None, device) -> Policy:
    from merpo_envs import format_tasks, get_meta_info

    from merpo_agent.config import load_run_config
    from merpo_agent.meta_policy import MetaPolicy
    from merpo_agent.trainer import ADAPTED, ADAPTED_FORMAT, CHECKPOINT_DIR

    cfg = load_run_config(run_dir / "config.yaml")
    info = get_meta_info(cfg.env)
    policy = MetaPolicy(info.obs_dim, info.act_dim, cfg.rac.hidden, cfg.rac.hidden_layers)
    if task is None:
        path = run_dir / CHECKPOINT_DIR / LATEST
        state = load_checkpoint(path, map_location=device)
        module = state.get("meta", {}).get("module") if isinstance(state, dict) else None
        if not isinstance(module, dict) or "iteration" not in state:
            raise PolicyError(
                f"{path} is not a MerPO checkpoint (no meta-policy in it; another algorithm's "
                f"or another program's file?); train {run_dir} again with `merpo-agent train` "
                "or load a run whose config.yaml matches its checkpoint"
            )
        weights = {k.removeprefix("policy."): v for k, v in module.items()
                   if k.startswith("policy.")}
        description = f"meta-policy pi_c*, meta-iteration {int(state['iteration'])}"
    else:
        test_tasks = list(cfg.data.test_tasks or info.test_tasks)
        if task not in test_tasks:
            raise PolicyError(
                f"task {task} is not a test task of {run_dir} ({format_tasks(test_tasks)}); "
                "pass one of them, or task=None for the meta-policy"
            )
        path = run_dir / CHECKPOINT_DIR / ADAPTED
        hint = (f"run `merpo-agent evaluate {run_dir}` (it adapts pi_c* to every test task "
                "and stores the policies)")
        if not path.is_file():
            raise PolicyError(f"{run_dir} holds no adapted policies ({path} is missing); {hint}")
        state = load_checkpoint(path, map_location=device)
        if state.get("format") != ADAPTED_FORMAT or task not in state["tasks"]:
            raise PolicyError(f"{path} holds no adapted policy of task {task}; {hint}")
        row = state["tasks"].index(task)
        weights = {k: v[row : row + 1] for k, v in state["actor"].items()}
        description = (f"pi_{task} adapted to test task {task}, meta-iteration "
                       f"{int(state['iteration'])}")
    policy.load_state_dict(weights)
    policy.to(device).eval()
    return Policy(policy.deterministic, cfg.env, device, description)


def _baseline_policy(run_dir: Path, task: int | None, device) -> Policy:
    from merpo_data import TaskSampler

    from merpo_agent.baselines.context import infer_test_latents
    from merpo_agent.baselines.run import CHECKPOINT_DIR, baseline, read_record

    data = read_record(run_dir)
    spec = baseline(data["algo"])
    if task is None:
        raise PolicyError(
            f"a {spec.label} policy acts for a task it infers from that task's data: pass "
            "task=j (a task with a dataset)"
        )
    path = run_dir / CHECKPOINT_DIR / LATEST
    state = load_checkpoint(path, map_location=device)
    if not isinstance(state, dict) or state.get("algo") != data["algo"] or "agent" not in state:
        raise PolicyError(
            f"{path} is not a {spec.label} checkpoint (config.yaml says {data['algo']}); "
            f"train {run_dir} again with `merpo-agent train` or load another run"
        )
    agent = spec.agent_from_state(state["agent"], device)
    try:
        sampler = TaskSampler(data["env"], [task], data["data"]["quality"], device=device,
                              preset=data["data"]["preset"])
    except (ValueError, FileNotFoundError) as err:
        raise PolicyError(str(err).strip().splitlines()[0]) from None
    seed = int(data["seed"])
    z = infer_test_latents(agent, sampler, None, torch.Generator(device).manual_seed(seed))
    return Policy(agent.meta_test_policy(z, seed), data["env"], device,
                  f"{spec.label} with z inferred from task {task}'s data")


__all__ = ["Policy", "PolicyError", "load_policy"]
