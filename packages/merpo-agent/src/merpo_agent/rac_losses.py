"""RAC's losses as pure functions of tensors (no modules, no optimisers, no randomness).

Shapes: a leading task axis ``T`` everywhere; ``2`` is the twin-critic axis; ``N`` / ``B``
are rows of a batch; ``K`` is the sampled-actions axis of the CQL(H) estimate.

Every function returns PER-TASK values of shape (T,) (or a sum over tasks, said so in its
docstring). The learner sums per-task losses over the task axis, never averages them, so
that each task's gradient equals its single-task gradient (Adam is per-element, so one
optimizer over stacked parameters then behaves exactly like T separate ones).

Equations (paper numbering):
- Eq. 1 (COMBO conservative policy evaluation): ``soft_bellman_target``,
  ``importance_sampled_logsumexp``, ``conservative_gap``, ``critic_loss``.
- App. A.2.2 "Tune beta": ``beta_dual_loss``.
- Eq. 9 (regularized policy improvement): ``actor_loss`` with
  ``behavior_divergence`` (D_beta) and ``diagonal_gaussian_kl`` (D_meta).
- App. A.2.2 "Tune lambda": ``behavior_divergence_estimate`` (D_beta') and ``lambda_dual_loss``.
- SAC temperature: ``entropy_temperature_loss``.
"""

from __future__ import annotations

import torch
from merpo_data.networks import tanh_gaussian_log_prob


def diagonal_gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p || q) of two diagonal Gaussians, summed over the last (action) axis.

    tanh is a bijection, so this is also the KL of the two tanh-squashed policies built on
    these Gaussians: the Jacobian terms cancel inside the log-ratio.
    """
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = ((mean_p - mean_q) * torch.exp(-log_std_q)) ** 2
    return 0.5 * (var_ratio + mean_term - 1.0).sum(-1) + (log_std_q - log_std_p).sum(-1)


def soft_bellman_target(
    rewards: torch.Tensor,
    terminations: torch.Tensor,
    next_q_target: torch.Tensor,
    next_log_prob: torch.Tensor,
    entropy_temperature: torch.Tensor,
    discount: float,
) -> torch.Tensor:
    """SAC soft target ``r + gamma (1 - term) (min_i Q'_i(s', a') - alpha_ent log pi(a'|s'))``.

    rewards, terminations, next_log_prob: (T, N); next_q_target: (T, 2, N) (twin target
    critics at a' ~ pi(.|s')); entropy_temperature: (T,). Returns (T, N), no gradient.
    """
    soft_value = next_q_target.min(dim=1).values - entropy_temperature[:, None] * next_log_prob
    return (rewards + discount * (1.0 - terminations) * soft_value).detach()


def importance_sampled_logsumexp(
    q_samples: torch.Tensor, log_density: torch.Tensor
) -> torch.Tensor:
    """CQL(H)'s estimate of ``log integral exp Q(s, a) da`` from K sampled actions per state.

    q_samples: (T, 2, N, K), Q of each twin critic at K actions per state (the last axis is
    the sampled-actions axis); log_density: (T, 1 or 2, N, K), log density of the proposal
    each action came from (uniform: -act_dim log 2; policy: log pi(a|s)). Returns (T, 2, N).

    ``logsumexp_k (Q_k - log p_k)`` over the concatenated, importance-corrected samples,
    WITHOUT subtracting log K: the convention of CQL's and COMBO's code, with which the
    paper's Q difference threshold tau (Table 2) was tuned, so the gap fed to the beta dual
    (App. A.2.2) uses it too. The critic's gradient is the same either way (log K is a
    constant). The reduction MUST run over the sampled-actions axis (K, last): reducing over
    states or critics is the known CQL trap (a dropped reshape) and gives another number.
    """
    return torch.logsumexp(q_samples - log_density, dim=-1)


def conservative_gap(logsumexp_q: torch.Tensor, data_q: torch.Tensor) -> torch.Tensor:
    """Eq. 1's penalty ``E_{s~model}[logsumexp_a Q(s,a)] - E_{(s,a)~D}[Q(s,a)]`` per critic.

    logsumexp_q: (T, 2, N_pen) at the penalty states (model-buffer states; dataset states
    without a model); data_q: (T, 2, N_real) at dataset (s, a). Returns (T, 2).
    """
    return logsumexp_q.mean(-1) - data_q.mean(-1)


def bellman_error(q_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 1's Bellman term ``1/2 E_{d_f}(Q_i - B Q)^2`` per task and twin -> (T, 2).

    q_pred: (T, 2, B) twin critics on the mixed batch (fraction f real, 1 - f model);
    target: (T, B) soft target (``soft_bellman_target``).
    """
    return 0.5 * (q_pred - target[:, None, :]).square().mean(-1)


def critic_loss(bellman: torch.Tensor, gap: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Eq. 1 per task: ``sum_i [ 1/2 E_{d_f}(Q_i - B Q)^2 + beta * gap_i ]`` -> (T,).

    bellman: (T, 2) from ``bellman_error``; gap: (T, 2) from ``conservative_gap``; beta:
    (T,) (detached: beta has its own dual step, which App. A.2.2 takes between the two
    terms and this loss). The twin critics are summed (independent networks).
    """
    return (bellman + beta.detach()[:, None] * gap).sum(-1)


def beta_dual_loss(log_beta: torch.Tensor, gap: torch.Tensor, threshold: float) -> torch.Tensor:
    """App. A.2.2 "Tune beta": ``-beta (gap - tau)``, SUMMED over tasks (a scalar).

    Minimising over log_beta raises beta when the Q gap (mean of the twin critics' gaps)
    exceeds the threshold tau, and lowers it otherwise (dual gradient descent on
    ``max_{beta >= 0} beta (gap - tau)``, beta = exp(log_beta) >= 0).
    """
    return -(log_beta.exp() * (gap.detach().mean(-1) - threshold)).sum()


def behavior_divergence(dataset_log_prob: torch.Tensor) -> torch.Tensor:
    """D_beta = -E_{(s,a)~D}[log pi_n(a|s)] (Eq. 9, reverse-KL surrogate). (T, N) -> (T,)."""
    return -dataset_log_prob.mean(-1)


def behavior_divergence_estimate(
    behavior_log_prob: torch.Tensor, dataset_log_prob: torch.Tensor
) -> torch.Tensor:
    """D_beta' = E_D[log pi_hat_beta(a|s) - log pi_n(a|s)], (T, N) -> (T,): our estimate
    of the divergence from the behavior policy for the lambda dual of App. A.2.2.

    Zero when pi_n equals the behavior-cloning model pi_hat_beta; used by the lambda dual
    and by MerPO-Adp (Eq. 11). No gradient.
    """
    return (behavior_log_prob - dataset_log_prob).mean(-1).detach()


def actor_loss(
    log_prob: torch.Tensor,
    q_min: torch.Tensor,
    entropy_temperature: torch.Tensor,
    d_beta: torch.Tensor,
    d_meta: torch.Tensor,
    lam: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """Eq. 9 (negated, minimised) per task -> (T,):

    ``E_s[alpha_ent log pi(a|s) - min_i Q_i(s,a)] + lam alpha D_beta + lam (1-alpha) D_meta``

    log_prob, q_min: (T, N) at a ~ pi_n(.|s), s from the mixed batch; d_beta, d_meta: (T,);
    entropy_temperature, lam, alpha: (T,) (treated as constants here).
    """
    sac = (entropy_temperature.detach()[:, None] * log_prob - q_min).mean(-1)
    lam = lam.detach()
    return sac + lam * alpha * d_beta + lam * (1.0 - alpha) * d_meta


def lambda_constraint(
    d_beta_prime: torch.Tensor, d_meta: torch.Tensor, alpha: torch.Tensor, target: float
) -> torch.Tensor:
    """``alpha (D_beta' - D_target) + (1 - alpha)(D_meta - D_target)`` per task (T,)."""
    return alpha * (d_beta_prime - target) + (1.0 - alpha) * (d_meta - target)


def lambda_dual_loss(lam: torch.Tensor, constraint: torch.Tensor) -> torch.Tensor:
    """App. A.2.2 "Tune lambda": ``-lam * constraint``, SUMMED over tasks (a scalar).

    A descent step raises lam when the weighted divergence exceeds D_target (constraint > 0)
    and lowers it otherwise. lam itself is kept >= 0 by projection after the step.
    """
    return -(lam * constraint.detach()).sum()


def entropy_temperature_loss(
    log_temperature: torch.Tensor, log_prob: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """SAC's temperature loss ``-log_alpha_ent (log pi + H_target)``, SUMMED over tasks.

    log_temperature: (T,); log_prob: (T, N). The temperature rises when the policy's
    entropy ``-E log pi`` is below the target (-act_dim) and falls when above.
    """
    return -(log_temperature * (log_prob.detach() + target_entropy).mean(-1)).sum()


def conservative_critic_terms(
    q_all: torch.Tensor, target: torch.Tensor, log_density: torch.Tensor, n_real: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 1's two terms from ONE twin-critic evaluation on [mixed batch; CQL(H) samples].

    q_all: (T, 2, B + N K): Q on the mixed batch's B rows (the n_real dataset rows first),
    then on K sampled actions at each of N penalty states (state-major); target: (T, B);
    log_density: (T, 1, N, K). Returns the Bellman term ``1/2 E (Q_i - B Q)^2`` (T, 2), the
    conservative gap (T, 2) (both with gradients) and the mean data Q (T,) (detached):
    ``critic_loss(bellman, gap, beta)`` is Eq. 1.
    """
    t, twins, _ = q_all.shape
    batch = target.shape[1]
    p, k = log_density.shape[-2:]
    q_pred, q_ood = q_all[..., :batch], q_all[..., batch:]
    logsumexp_q = importance_sampled_logsumexp(q_ood.reshape(t, twins, p, k), log_density)
    q_data = q_pred[..., :n_real]
    gap = conservative_gap(logsumexp_q, q_data)
    return bellman_error(q_pred, target), gap, q_data.detach().mean((1, 2))


def regularized_actor_terms(
    mean: torch.Tensor,
    log_std: torch.Tensor,
    log_prob: torch.Tensor,
    q_policy: torch.Tensor,
    data_actions: torch.Tensor,
    meta_mean: torch.Tensor | None,
    meta_log_std: torch.Tensor | None,
    bc_log_prob: torch.Tensor | None,
    entropy_temperature: torch.Tensor,
    lam: torch.Tensor,
    alpha: torch.Tensor,
    seeds: int = 1,
) -> tuple[torch.Tensor, ...]:
    """Eq. 9 per task from the actor's outputs on the mixed batch (dataset rows first).

    mean, log_std: (T, B, act) pi_n's pre-tanh Gaussian; log_prob: (T, B) of a ~ pi_n;
    q_policy: (T, 2, B) twin critics at those actions; data_actions: (T, n_real, act);
    meta_mean, meta_log_std: pi_c at the batch (None: D_meta = 0); bc_log_prob: (T, n_real)
    log pi_hat_beta of the data (None: D_beta' = 0). Returns ``actor_loss`` (T,) with
    gradients, then detached: mean min-Q (T,), D_beta (T,), D_meta (T,), D_beta' (T,).
    ``seeds``: the slots' seed blocks (``merpo_data.networks.by_seed``).
    """
    n_real = data_actions.shape[1]
    q_min = q_policy.min(dim=1).values
    dataset_log_prob = tanh_gaussian_log_prob(
        mean[:, :n_real], log_std[:, :n_real], data_actions, seeds
    )
    d_beta = behavior_divergence(dataset_log_prob)
    if meta_mean is not None:
        d_meta = diagonal_gaussian_kl(mean, log_std, meta_mean, meta_log_std).mean(-1)
    else:
        d_meta = torch.zeros_like(d_beta)
    loss = actor_loss(log_prob, q_min, entropy_temperature, d_beta, d_meta, lam, alpha)
    if bc_log_prob is not None:
        d_beta_prime = behavior_divergence_estimate(bc_log_prob, dataset_log_prob)
    else:
        d_beta_prime = torch.zeros_like(d_beta)
    return loss, q_min.detach().mean(-1), d_beta.detach(), d_meta.detach(), d_beta_prime


__all__ = [
    "actor_loss",
    "conservative_critic_terms",
    "regularized_actor_terms",
    "behavior_divergence",
    "behavior_divergence_estimate",
    "bellman_error",
    "beta_dual_loss",
    "conservative_gap",
    "critic_loss",
    "diagonal_gaussian_kl",
    "entropy_temperature_loss",
    "importance_sampled_logsumexp",
    "lambda_constraint",
    "lambda_dual_loss",
    "soft_bellman_target",
]
