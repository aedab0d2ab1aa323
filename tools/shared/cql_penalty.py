"""Canonical source of the `cql_penalty` block: CQL(H)'s estimate of log sum_a exp Q(s, a) by importance
sampling (Kumar et al. 2020; the authors' rlkit/torch/sac/cql.py, min_q_version 3), carried by cql.py and
combo.py (tools/sync_shared.py lists them). It uses the actor of the `sac` block. Edit here, then run
`python -m tools.sync_shared cql_penalty`."""

import math
from typing import Optional

import torch
import torch.nn as nn

# --- cql_penalty: begin
# CQL(H)'s soft maximum over actions, the same in cql.py and combo.py (source: tools/shared/cql_penalty.py).
#   log sum_a exp Q(s, a) ~ logsumexp_j [ Q(s, a_j) - log mu(a_j|s) ],  a_j from three proposals mu:
#   Unif([-max_action, max_action]^d), pi(.|s) and pi(.|s'), N of each (importance sampling, temperature 1)
#   Cal-QL (cql.py --calibrated; combo never): Q(s, a ~ pi) enters as max(Q(s, a), G(s)), G the reference policy's
#   Monte Carlo return-to-go (Nakamoto et al. 2023, Sec. 5 and Algorithm 1)


def uniform_log_density(action_dim: int, max_action: float) -> float:
    """log mu(a) of Unif([-max_action, max_action]^d) = -d log(2 max_action)."""
    return -action_dim * math.log(2.0 * max_action)


def importance_sampled_logsumexp(q_random: torch.Tensor, q_policy: torch.Tensor, q_next_policy: torch.Tensor,
                                 log_density_random: float, log_pi: torch.Tensor,
                                 log_pi_next: torch.Tensor) -> torch.Tensor:
    """log sum_a exp Q(s, a) ~ logsumexp over the concatenation of [Q(s, a_unif) - log mu_unif,
    Q(s, a_pi(s)) - log pi(a|s), Q(s, a_pi(s')) - log pi(a|s')] along the last (sample) axis.
    The constant -log(3N) of the average is left out, as in CQL's code: it shifts the gap, not the gradients."""
    return torch.logsumexp(torch.cat([q_random - log_density_random, q_policy - log_pi,
                                      q_next_policy - log_pi_next], -1), -1)


def calibrated(q: torch.Tensor, returns_to_go: torch.Tensor) -> torch.Tensor:
    """max(Q_i(s, a_j), G(s)) for Q [n critics, B, N] and G [B]: Cal-QL's bound on the policy's actions (the authors'
    JaxCQL/conservative_sac.py applies it to the actions of pi(.|s) and of pi(.|s'), both scored at s, not the uniform
    ones), so the regularizer stops pushing Q(s, a ~ pi) down once it is at the reference policy's value."""
    return torch.maximum(q, returns_to_go[:, None])


def sampled_actions(actor: TanhGaussianPolicy, states: torch.Tensor, next_states: torch.Tensor, n: int,
                    d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, 3n, d] actions (n uniform, n from pi(.|s), n from pi(.|s')) and the log-probs [B, n] of the policy's."""
    batch, max_action = states.shape[0], actor.max_action
    random_actions = torch.empty(batch, n, d, device=states.device).uniform_(-max_action, max_action)
    policy_actions, log_pi = actor.sample(states.repeat_interleave(n, 0))
    next_actions, log_pi_next = actor.sample(next_states.repeat_interleave(n, 0))
    actions = torch.cat([random_actions, policy_actions.view(batch, n, d), next_actions.view(batch, n, d)], 1)
    return actions, log_pi.view(batch, n), log_pi_next.view(batch, n)


def logsumexp_q(critic: nn.Module, actor: TanhGaussianPolicy, states: torch.Tensor, next_states: torch.Tensor,
                n: int, action_dim: int,
                returns_to_go: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log sum_a exp Q_i(s, a) [n critics, B] at the states s, and Q_i(s, a_unif) [n critics, B, n] (a diagnostic).
    Every sampled action is scored at s, the policy's actions at s' included (as CQL's code); gradients reach
    the critic only, through Q.  Given returns_to_go G [B], the policy's Q-values are calibrated (Cal-QL)."""
    with torch.no_grad():
        actions, log_pi, log_pi_next = sampled_actions(actor, states, next_states, n, action_dim)
    q = critic(states.repeat_interleave(3 * n, 0), actions.flatten(0, 1)).view(-1, states.shape[0], 3 * n)
    q_random, q_policy, q_next_policy = q.split(n, -1)
    if returns_to_go is not None:
        q_policy, q_next_policy = calibrated(q_policy, returns_to_go), calibrated(q_next_policy, returns_to_go)
    log_density_random = uniform_log_density(action_dim, actor.max_action)
    return importance_sampled_logsumexp(q_random, q_policy, q_next_policy, log_density_random, log_pi,
                                        log_pi_next), q_random
# --- cql_penalty: end
