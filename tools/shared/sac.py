"""Canonical source of the `sac` block: the tanh-Gaussian actor of SAC (Haarnoja et al. 2018), its
log-density, the soft Q target and the critic, actor and temperature losses, carried by cql.py, mopo.py
and combo.py (tools/sync_shared.py lists them). It uses `mlp` from the shared appendix. Edit here, then
run `python -m tools.sync_shared sac`."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# --- sac: begin
# SAC's pieces, the same in cql.py, mopo.py and combo.py (source: tools/shared/sac.py).
#   y    = r + gamma (1 - d) [ min_i Q_target_i(s', a') - alpha log pi(a'|s') ],  a' ~ pi(.|s')  (alpha: backup_entropy)
#          (mean_action: a' = max_action tanh(mu(s')), the policy's mean action, and no alpha term)
#   J_Q  = sum_i E ( Q_i(s, a) - y )^2
#   J_pi = E_{a~pi(.|s)} [ alpha log pi(a|s) - min_i Q_i(s, a) ]
#   J_alpha = -E [ log alpha ( log pi(a|s) + H_target ) ],  H_target = -dim(A)


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """J_Q = sum_i E ( Q_i(s, a) - y )^2, q [n critics, B]: CQL's code's mean squared error, without the 1/2 of
    SAC's J_Q (CQL's alpha and COMBO's beta are tuned to it); where it is the critic's only loss (MOPO), a
    constant factor changes nothing under Adam except the weight of its epsilon."""
    return (q - target).pow(2).mean(1).sum()


def actor_loss(q_pi: torch.Tensor, log_pi: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """J_pi = E [ alpha log pi(a|s) - min_i Q_i(s, a) ],  a ~ pi(.|s) reparameterized."""
    return (alpha * log_pi - q_pi).mean()


def temperature_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J_alpha = -E [ log alpha ( log pi(a|s) + H_target ) ] (SAC's automatic entropy tuning, in log alpha)."""
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


def tanh_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                           max_action: float) -> torch.Tensor:
    """log pi(a|s) = log N(u; mu, sigma^2) - sum_j log( max_action (1 - tanh(u_j)^2) ),  a = max_action tanh(u),
    with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (no 1 - tanh^2 underflow for large |u|)."""
    gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(pre_tanh)
    log_jacobian = math.log(max_action) + 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gaussian - log_jacobian).sum(-1)


class TanhGaussianPolicy(nn.Module):
    """pi_phi(a|s): a = max_action * tanh(u), u ~ N(mu(s), diag(sigma(s)^2)), with a state-dependent
    log sigma (SAC); forward gives the deterministic action max_action * tanh(mu(s))."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, n_hidden: int, max_action: float):
        super().__init__()
        self.net = mlp(state_dim, 2 * action_dim, hidden_dim, n_hidden)
        self.max_action = max_action

    def mean_and_log_std(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(state).chunk(2, -1)
        return mean, log_std.clamp(-20.0, 2.0)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.mean_and_log_std(state)[0])

    def sample(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action a = max_action * tanh(mu + sigma eps) and its log pi(a|s)."""
        mean, log_std = self.mean_and_log_std(state)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        return self.max_action * torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std, self.max_action)

    def log_prob(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) of given actions; u = atanh(a / max_action) with |a / max_action| clamped below 1 - 1e-6,
        so that the dataset's actions on the bounds stay finite (as CQL's code, rlkit's policies.py atanh)."""
        mean, log_std = self.mean_and_log_std(state)
        pre_tanh = torch.atanh((action / self.max_action).clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        return tanh_gaussian_log_prob(pre_tanh, mean, log_std, self.max_action)


def bellman_target(critic_target: nn.Module, actor: TanhGaussianPolicy, batch: dict[str, torch.Tensor],
                   alpha: torch.Tensor, gamma: float, backup_entropy: bool,
                   mean_action: bool = False) -> torch.Tensor:
    """y = r + gamma (1 - d) [ min_i Q_target_i(s', a') - alpha log pi(a'|s') ], a' ~ pi(.|s'); without the
    alpha term when not backup_entropy (CQL's eq. 3 and code, deterministic_backup).  mean_action: a' = max_action
    tanh(mu(s')), the policy's mean next action, and no alpha term: d3rlpy's CQL target (cql_impl.py,
    _compute_deterministic_target), cql.py's --target_action mean."""
    next_states = batch["next_observations"]
    if mean_action:
        next_q = critic_target(next_states, actor(next_states)).min(0).values
    else:
        next_actions, next_log_pi = actor.sample(next_states)
        next_q = critic_target(next_states, next_actions).min(0).values
        if backup_entropy:
            next_q = next_q - alpha * next_log_pi
    return batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_q
# --- sac: end
