"""Matmul FLOPs of one RAC update, counted analytically (benchmark 2).

Every linear layer evaluated in ``TaskLearners.update`` (Section 4.2.2, Eq. 1 and Eq. 9), with
n rows through a layer of i inputs and o outputs costing 2 n i o FLOPs per matmul:
forward once; backward twice where both the weight gradient and the input gradient are
needed, once where only one is (the critics inside the actor step give input gradients
only; no layer computes the gradient of the raw data). Bias adds and activations are not
counted (they are not matmuls). ``count_executed_flops`` runs the update under
``torch.utils.flop_counter.FlopCounterMode`` to check the formula against what actually runs.
"""

from __future__ import annotations

from collections.abc import Callable

from merpo_agent.rac_config import RACConfig


def mlp_layer_sizes(d_in: int, d_out: int, hidden: int, hidden_layers: int) -> list[int]:
    return [d_in] + [hidden] * hidden_layers + [d_out]


def macs_per_row(sizes: list[int]) -> int:
    """Multiply-accumulates of one row through the MLP."""
    return sum(i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))


def rac_update_flops(
    config: RACConfig,
    obs_dim: int,
    act_dim: int,
    num_tasks: int = 1,
    meta_policy: bool = True,
    bc_policy: bool = True,
) -> dict[str, float]:
    """Matmul FLOPs of one ``TaskLearners.update`` for ``num_tasks`` tasks, by part."""
    c = config
    actor = mlp_layer_sizes(obs_dim, 2 * act_dim, c.hidden, c.hidden_layers)
    critic = mlp_layer_sizes(obs_dim + act_dim, 1, c.hidden, c.hidden_layers)
    bc = mlp_layer_sizes(obs_dim, 2 * act_dim, c.bc_hidden, c.bc_hidden_layers)
    a, q, b = macs_per_row(actor), macs_per_row(critic), macs_per_row(bc)
    a_first, q_first = actor[0] * actor[1], critic[0] * critic[1]
    rows = c.batch_size  # the mixed batch: f real + (1 - f) model rows
    real = c.real_batch_size
    penalty = c.model_batch_size if c.use_model else real
    k = c.cql_uniform_actions + c.cql_policy_actions
    twin = 2
    critic_rows = twin * (rows + penalty * k)  # Q on the batch and on the CQL(H) samples
    parts = {
        # Soft Bellman target: a' ~ pi(.|s') and the twin target critics (no gradient).
        "target": 2 * rows * a + 2 * twin * rows * q,
        # CQL(H) policy proposals at the penalty states (no gradient).
        "cql_proposals": 2 * penalty * a,
        # Critic step (Eq. 1): forward, weight gradients, input gradients above layer 1.
        "critic_step": 2 * critic_rows * (q + q + (q - q_first)),
        # Actor step (Eq. 9): actor forward + weight/input gradients; the twin critics at
        # the policy's actions: forward + input gradients (down to the action input).
        "actor_step": 2 * rows * (a + a + (a - a_first)) + 2 * twin * rows * (q + q),
        "meta_policy": 2 * rows * a if meta_policy else 0,  # pi_c at the batch states (D_meta)
        "bc_policy": 2 * real * b if bc_policy else 0,  # pi_hat_beta at the data (D_beta')
    }
    parts = {name: float(value * num_tasks) for name, value in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def count_executed_flops(fn: Callable[[], object]) -> float:
    """FLOPs of the matmuls ``fn`` actually runs (forward and backward), by dispatch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())
