"""MerPO-Adp (Eq. 11): per-task alpha adapted once per meta-iteration.

Eq. 11 minimises ``(1 - alpha_n)(D(pi_n, pi_beta,n) - D(pi_n, pi_c))`` over alpha_n in
[0.1, 0.5]. Its gradient in alpha_n is ``-(D_beta - D_meta)``, so one projected gradient step is

    alpha_n <- clip(alpha_n + lr_alpha * (D_beta' - D_meta), 0.1, 0.5)

alpha grows when pi_n is closer to the meta-policy than to the behavior policy, and shrinks
otherwise. D_beta' is the behavior-cloning divergence estimate (zero when pi_n
matches pi_hat_beta) and D_meta the closed-form KL(pi_n || pi_c), both as reported by the
last RAC update of the meta-iteration.
"""

from __future__ import annotations

import torch


def adaptive_alpha_step(
    alpha: torch.Tensor,
    d_beta_prime: torch.Tensor,
    d_meta: torch.Tensor,
    lr: float,
    low: float = 0.1,
    high: float = 0.5,
) -> torch.Tensor:
    """One projected gradient step of Eq. 11 on per-task alphas (T,); returns new alphas."""
    return (alpha + lr * (d_beta_prime - d_meta)).clamp(low, high)


__all__ = ["adaptive_alpha_step"]
