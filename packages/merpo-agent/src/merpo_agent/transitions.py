"""The transition batch type the agent consumes, owned by merpo-data's task sampler.

``TransitionBatch`` fields: observations (T, B, obs_dim), actions (T, B, act_dim), rewards
(T, B), next_observations (T, B, obs_dim), terminations (T, B), all float32, with a leading
task axis T. The agent's modules import it from here (one place to follow if it moves).
"""

from __future__ import annotations

from merpo_data.sampler import TransitionBatch

__all__ = ["TransitionBatch"]
