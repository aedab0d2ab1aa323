# CQL(H): Conservative Q-Learning on SAC (Kumar, Zhou, Tucker, Levine 2020, "Conservative Q-Learning
# for Offline Reinforcement Learning").  Chapter: 21.4 "Conservative Q-Learning (CQL)", the overview's
# "CQL (Conservative Q-Learning)" section and the robotics notes' ConservativeQLearning sketch (their 3.1).
#
#   critic:  min_Q  alpha_cql E_{s~D} [ log sum_a exp Q(s, a) - E_{a~D} Q(s, a) ]   (alpha_cql: the chapter's alpha)
#                   + E_{(s,a,r,s')~D} ( Q(s, a) - B^pi Q_hat(s, a) )^2
#            log sum_a exp Q(s, a) ~ logsumexp_j [ Q(s, a_j) - log mu(a_j|s) ],   a_j from three proposals mu:
#            Unif([-max_action, max_action]^d), pi(.|s) and pi(.|s')  (importance sampling, cql_penalty block)
#            B^pi Q_hat(s, a) = r + gamma (1 - d) min_{i=1,2} Q_target_i(s', a'),  a' ~ pi(.|s')
#            (target_action "mean": a' = max_action tanh(mu(s')), the policy's mean action, as d3rlpy's CQL)
#   Lagrange (optional):  min_Q max_{alpha' >= 0}  alpha' ( alpha_cql gap(Q) - tau ) + TD,  gap(Q) the bracket above
#   actor (SAC):  max_pi E_{s~D, a~pi(.|s)} [ min_i Q_i(s, a) - alpha log pi(a|s) ]
#                 updates before bc_steps clone the data instead:  max_pi E_{(s,a)~D} [ log pi(a|s) ] + alpha H(pi)
#   entropy temperature:  min_alpha E_{a~pi} [ -alpha ( log pi(a|s) + H_target ) ],  H_target = -dim(A)
#   Cal-QL (--calibrated; Nakamoto et al. 2023, "Cal-QL: Calibrated Offline RL Pre-Training for Efficient Online
#   Fine-Tuning", Sec. 5 and Algorithm 1; the chapter's "Offline-to-Online Fine-tuning"):  in the logsumexp,
#   Q(s, a ~ pi) -> max(Q(s, a), G(s)),  G(s) the discounted return-to-go from s of its episode (the dataset's or an
#   online one): Q of the learned policy is pushed down only as far as the value of the reference (behavior) policy
#
# The regularizer pushes Q down on actions the data does not vouch for (uniform ones and the policy's,
# weighted towards the highest Q by the softmax of the logsumexp) and up on the dataset's actions, so
# that the expected value of the learned policy under Q lower-bounds its true value.
# Defaults: the authors' code (aviralkumar2907/CQL, d4rl/examples/cql_mujoco_new.py) as its README runs Gym
# MuJoCo (min_q_weight 5, policy_lr 1e-4, no Lagrange), with the code's own values for what that command does
# not set: three hidden layers of 256, qf_lr 3e-4, 10 sampled actions, no entropy backup, 40k BC steps.
# Online fine-tuning (--online_steps) keeps them and explores with a ~ pi(.|s), as Cal-QL's code does.
#
# License: MIT (the project's LICENSE file); copy this file anywhere, keeping this line.

import copy
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import gymnasium as gym
import numpy as np
import pyrallis
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import trange


@dataclass
class TrainConfig:
    """Common fields (the same in every script), then the method's: CQL(H)."""
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    max_steps: int = 1_000_000  # gradient updates
    batch_size: int = 256  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints, and policy.pt2)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    stop_after: int = 0  # updates this call may run before it checkpoints and exits (0: no limit); rerun to resume
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # torch.compile the update (same results as eager; faster after a warm-up)
    precision: str = "fp32"  # "fp32", or "bf16": the update's hidden layers in bf16 (autocast), outputs and losses fp32
    online_steps: int = 0  # environment steps of fine-tuning after max_steps offline updates (0 = offline only)
    online_ratio: float = 0.5  # share of each online batch drawn from the online episodes, the rest from the dataset
    utd: int = 1  # updates per environment step of the online phase
    warmup_steps: int = 0  # online steps of uniform random actions before the first online update (SAC: 10k)
    normalize_reward: bool = False  # scale rewards by 1000 / (max return - min return), as IQL does
    cql_alpha: float = 5.0  # alpha_cql (the chapter's alpha), weight of the conservative term (the code's min_q_weight)
    num_sampled_actions: int = 10  # actions drawn from each of Unif, pi(.|s), pi(.|s') for the logsumexp
    calibrated: bool = False  # Cal-QL: lower-bound Q(s, a~pi) in the regularizer by the reference policy's return-to-go
    cql_lagrange: bool = False  # learn alpha' by dual descent so that alpha_cql * gap stays near tau (off for Gym)
    target_action_gap: float = 10.0  # tau of the Lagrange version (official code: 10 for Gym, 5 for AntMaze)
    target_action: str = "sample"  # a' in the target: "sample" ~ pi(.|s') (the authors' code) or "mean" (d3rlpy's choice)
    backup_entropy: bool = False  # subtract alpha log pi(a'|s') in a sampled target (off in the paper's eq. 3 and code)
    bc_steps: int = 40_000  # updates 1 .. bc_steps - 1 clone the data (the code's policy_eval_start)
    gamma: float = 0.99  # gamma, discount
    tau: float = 0.005  # Polyak rate of the target critics
    hidden_dim: int = 256  # width of the hidden layers of the actor and the critics
    n_hidden: int = 3  # hidden layers of the actor and the critics (three of 256 for Gym in the official code)
    actor_lr: float = 1e-4  # Adam learning rate of pi_phi and of alpha (official README for Gym; paper: 3e-5)
    critic_lr: float = 3e-4  # Adam learning rate of Q_theta (and of alpha')


# mlp, fit and the rest of the plumbing: the appendix (# --- shared) at the end of the file; EnsembleCritic and
# soft_update, transition_buffer, reward_scale and make_evaluator, the SAC pieces (TanhGaussianPolicy,
# soft_q_target, td_loss, actor_loss, temperature_loss), logsumexp_q (cql_penalty) and FineTuning (online): the
# blocks right after train().


def conservative_gap(logsumexp_q: torch.Tensor, q_data: torch.Tensor) -> torch.Tensor:
    """gap_i = E_{s~D} [ log sum_a exp Q_i(s, a) - Q_i(s, a_data) ], one value per critic: minimizing it pushes
    Q down on the sampled actions and up on the dataset's."""
    # The robotics notes' sketch subtracts alpha (Q(s, a_unif) - Q(s, pi(s))) from the TD loss: the sign is
    # reversed there; this follows the paper (eq. 4), which adds the logsumexp and subtracts Q(s, a_data).
    return (logsumexp_q - q_data).mean(-1)


def lagrange_terms(alpha_prime: torch.Tensor, gap: torch.Tensor, cql_alpha: float,
                   target_action_gap: float) -> torch.Tensor:
    """alpha' ( alpha_cql gap_i - tau ), one per critic: the critic minimizes their sum, alpha' maximizes their mean."""
    return alpha_prime * (cql_alpha * gap - target_action_gap)


def mean_action_target(critic_target: "EnsembleCritic", actor: "TanhGaussianPolicy",
                       batch: dict[str, torch.Tensor], gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - d) min_i Q_target_i(s', a'),  a' = max_action tanh(mu(s')), the policy's mean next action,
    and no entropy term: d3rlpy's CQL target (cql_impl.py, _compute_deterministic_target)."""
    next_states = batch["next_observations"]
    next_q = critic_target(next_states, actor(next_states)).min(0).values
    return batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_q


def behavior_cloning_loss(log_pi: torch.Tensor, log_pi_data: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E [ alpha log pi(a|s) - log pi(a_data|s) ],  a ~ pi(.|s): the warm start's actor loss (the authors'
    rlkit/torch/sac/cql.py, while _current_epoch < policy_eval_start)."""
    return (alpha * log_pi - log_pi_data).mean()


class CQLTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        self.device = device
        self.actor = TanhGaussianPolicy(state_dim, action_dim, config.hidden_dim, config.n_hidden, max_action).to(device)
        self.critic = EnsembleCritic(state_dim, action_dim, config.hidden_dim, n_hidden=config.n_hidden).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros((), device=device))  # log alpha, SAC's temperature
        self.lagrange = config.cql_lagrange
        if self.lagrange:
            self.log_alpha_prime = nn.Parameter(torch.zeros((), device=device))  # log alpha'
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), config.actor_lr, foreach=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), config.critic_lr, foreach=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], config.actor_lr, foreach=True)
        if self.lagrange:
            self.alpha_prime_optimizer = torch.optim.Adam([self.log_alpha_prime], config.critic_lr, foreach=True)
        self.target_entropy = -float(action_dim)
        self.action_dim, self.n = action_dim, config.num_sampled_actions
        self.cql_alpha, self.target_action_gap, self.bc_steps = config.cql_alpha, config.target_action_gap, config.bc_steps
        self.calibrated = config.calibrated
        self.target_action, self.backup_entropy = config.target_action, config.backup_entropy
        self.gamma, self.tau = config.gamma, config.tau

    def conservative_penalty(self, gap: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """alpha_cql sum_i gap_i, or with Lagrange sum_i alpha' (alpha_cql gap_i - tau), after a step of alpha' that
        raises it when alpha_cql gap > tau and lowers it otherwise."""
        if not self.lagrange:
            return self.cql_alpha * gap.sum(), {}
        alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
        alpha_prime_loss = -lagrange_terms(alpha_prime, gap.detach(), self.cql_alpha, self.target_action_gap).mean()
        self.alpha_prime_optimizer.zero_grad(set_to_none=True)
        alpha_prime_loss.backward()
        self.alpha_prime_optimizer.step()
        penalty = lagrange_terms(alpha_prime.detach(), gap, self.cql_alpha, self.target_action_gap).sum()
        return penalty, {"alpha_prime": alpha_prime.detach()}

    def regularizer(self, batch: dict[str, torch.Tensor], q_data: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The conservative penalty on the critic and its diagnostics.  update() skips it when alpha_cql = 0 without
        Lagrange: the script is then SAC, the from-scratch learner of the fine-tuning comparison."""
        returns_to_go = batch["returns_to_go"] if self.calibrated else None
        logsumexp, q_random = logsumexp_q(self.critic, self.actor, batch["observations"], batch["next_observations"],
                                          self.n, self.action_dim, returns_to_go)
        gap = conservative_gap(logsumexp, q_data)
        penalty, metrics = self.conservative_penalty(gap)
        return penalty, {"cql_gap": gap.detach().mean(), "q_random": q_random.detach().mean(), **metrics}

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        states, actions = batch["observations"], batch["actions"]
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            if self.target_action == "mean":
                y = mean_action_target(self.critic_target, self.actor, batch, self.gamma)
            else:
                y = soft_q_target(self.critic_target, self.actor, batch, alpha, self.gamma, self.backup_entropy)
        q_data = self.critic(states, actions)
        penalty, metrics = self.regularizer(batch, q_data) if self.cql_alpha > 0 or self.lagrange else (0.0, {})
        q_loss = td_loss(q_data, y)
        self.critic_optimizer.zero_grad(set_to_none=True)
        (q_loss + penalty).backward()
        self.critic_optimizer.step()

        policy_actions, log_pi = self.actor.sample(states)
        # The warm start of the authors' code: its counter is 1 at the first update when it tests
        # `_current_epoch < policy_eval_start`, so updates 1 .. bc_steps - 1 clone the data.
        if step < self.bc_steps:
            pi_loss = behavior_cloning_loss(log_pi, self.actor.log_prob(states, actions), alpha)
        else:
            pi_loss = actor_loss(self.critic(states, policy_actions).min(0).values, log_pi, alpha)
        self.actor_optimizer.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.actor_optimizer.step()
        alpha_loss = temperature_loss(self.log_alpha, log_pi, self.target_entropy)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        soft_update(self.critic_target, self.critic, self.tau)
        return {"critic_loss": q_loss.detach(), "q_target": y.mean(), "actor_loss": pi_loss.detach(), "alpha": alpha,
                "entropy": -log_pi.detach().mean(), "q_data": q_data.detach().mean(), **metrics}

    def state_dict(self) -> dict:
        state = {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                 "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach()}
        if self.lagrange:
            state["log_alpha_prime"] = self.log_alpha_prime.detach()
        state.update(actor_optimizer=self.actor_optimizer.state_dict(),
                     critic_optimizer=self.critic_optimizer.state_dict(),
                     alpha_optimizer=self.alpha_optimizer.state_dict())
        if self.lagrange:
            state["alpha_prime_optimizer"] = self.alpha_prime_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                with torch.no_grad():
                    getattr(self, name).copy_(value)
            else:
                getattr(self, name).load_state_dict(value)

    def policy(self) -> nn.Module:
        """Normalized states -> deterministic actions: what evaluation runs and policy.pt2 exports."""
        return self.actor


@torch.no_grad()
def initial_q_and_return(critic: "EnsembleCritic", policy: nn.Module, episodes: dict[str, np.ndarray],
                         mean: np.ndarray, std: np.ndarray, reward_scale: float) -> dict[str, float]:
    """min_i Q_i(s_0, pi(s_0)) at the initial states of the evaluation's episodes (normalized as in training, divided
    by the reward scale), and its excess over their mean discounted return sum_t gamma^t r_t, which the evaluation
    logs as discounted_return: CQL claims the first lower-bounds the second (the paper's Theorem 3.2), so the excess
    should be negative.  The returns are discounted by EVAL_DISCOUNT, gamma's default, and cut at the time limit,
    which matters only when gamma^T is not small (Pendulum: 0.99^200 = 0.13)."""
    device = next(critic.parameters()).device
    states = (torch.as_tensor(episodes["initial_states"], device=device) - torch.as_tensor(mean, device=device)) \
        / torch.as_tensor(std, device=device)
    q = float(critic(states, policy(states)).min(0).values.mean()) / reward_scale
    return {"q_initial": q, "q_initial_minus_return": q - float(episodes["discounted_returns"].mean())}


def train(config: TrainConfig) -> dict:
    if config.target_action not in ("sample", "mean"):
        fail(f"target_action must be sample or mean, got {config.target_action!r}.")
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std = transition_buffer(data, config.normalize_states, config.normalize_reward, device,
                                          config.gamma if config.calibrated else None)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = CQLTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    policy = trainer.policy()
    evaluate_returns = make_evaluator(config, dataset, policy, mean, std, device)
    scale = reward_scale(data, config.normalize_reward)

    def evaluate_policy() -> dict:  # one pass of episodes gives the score and the lower-bound check
        measured = evaluate_returns()
        return {**measured, **initial_q_and_return(trainer.critic, policy, measured["episodes"], mean, std, scale)}

    def explore(state: torch.Tensor) -> torch.Tensor:  # a ~ pi(.|s), without its log-probability
        return trainer.actor.sample(state)[0]

    tuning = FineTuning(config, dataset, trainer, buffer, explore, mean, std, scale)
    return fit(config, algo="cql", trainer=tuning, sample=tuning.sample, evaluate=evaluate_policy,
               export=lambda path: export_policy(path, policy, mean, std), extra={"state_mean": mean, "state_std": std},
               fixed=("max_steps",) if config.online_steps else (), steps=tuning.steps)


# --- critic: begin
class VectorizedLinear(nn.Module):
    """n independent linear layers applied in one batched matmul: x [n, B, in] -> [n, B, out]."""

    def __init__(self, in_features: int, out_features: int, n: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # the same initialization as nn.Linear
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class OutputVectorizedLinear(VectorizedLinear):
    """The ensemble's output layer: fp32 under --precision bf16, as OutputLinear (appendix), so the Q-values that
    feed targets, losses and logsumexp are not bf16; under fp32 it is VectorizedLinear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class EnsembleCritic(nn.Module):
    """Q_1..Q_n(s, a) as one module with stacked weights: returns [n, B]."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, n: int = 2, n_hidden: int = 2):
        super().__init__()
        dims = [state_dim + action_dim] + [hidden_dim] * n_hidden
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [VectorizedLinear(d_in, d_out, n), nn.ReLU()]
        self.net = nn.Sequential(*layers, OutputVectorizedLinear(dims[-1], 1, n))
        self.n = n

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([state, action], -1)
        x = x.unsqueeze(0).expand(self.n, *x.shape) if x.dim() == 2 else x
        return self.net(x).squeeze(-1)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging of a target network: theta' <- tau theta + (1 - tau) theta'."""
    for target_param, param in zip(target.parameters(), source.parameters()):
        target_param.lerp_(param, tau)
# --- critic: end


# --- transitions: begin
class DeviceBuffer:
    """Arrays of equal length as tensors on the training device; batch indices are drawn there too."""

    def __init__(self, data: dict[str, np.ndarray], device: torch.device):
        self.data = {k: torch.as_tensor(np.asarray(v, np.float32), device=device) for k, v in data.items()}
        self.size = len(next(iter(self.data.values())))
        self.device = device

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


def reward_scale(data: dict[str, np.ndarray], enabled: bool) -> float:
    """1000 / (max return - min return) over trajectories (Kostrikov et al. 2022, appendix B)."""
    if not enabled:
        return 1.0
    returns = data["episode_returns"][data["episode_ends"] > 0]
    return 1000.0 / max(float(returns.max() - returns.min()), 1e-6)


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma (1 - end_t) G_{t+1}: the discounted Monte Carlo return from each transition to the end of
    its episode.  An episode cut by a time limit counts nothing after the cut, like one that terminated, as Cal-QL's
    code does (nakamotoo/Cal-QL, JaxCQL/replay_buffer.py, calc_return_to_go with its dones, no bootstrap)."""
    r, end = rewards.tolist(), episode_ends.tolist()
    values, following = np.zeros(len(r), np.float64), 0.0
    for t in reversed(range(len(r))):
        following = r[t] + gamma * (1.0 - end[t]) * following
        values[t] = following
    return values.astype(np.float32)


def transitions(data: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, scale: float,
                gamma: Optional[float] = None) -> dict[str, np.ndarray]:
    """(s, a, r, s', done) with normalized states and rewards scaled by `scale`; with gamma, also the discounted
    return-to-go G of each transition, from its scaled rewards (what Cal-QL bounds Q with)."""
    out = {"observations": (data["observations"] - mean) / std, "actions": data["actions"],
           "rewards": data["rewards"] * scale, "next_observations": (data["next_observations"] - mean) / std,
           "terminals": data["terminals"]}
    if gamma is not None:
        out["returns_to_go"] = returns_to_go(out["rewards"], data["episode_ends"], gamma)
    return out


def transition_buffer(data: dict[str, np.ndarray], normalize_states: bool, normalize_reward: bool,
                      device: torch.device, gamma: Optional[float] = None):
    """DeviceBuffer of the dataset's transitions (with G when gamma is given), and the state statistics
    (mean, std) that the policy needs at evaluation time."""
    mean, std = state_statistics(data["observations"], normalize_states)
    scale = reward_scale(data, normalize_reward)
    return DeviceBuffer(transitions(data, mean, std, scale, gamma), device), mean, std


def make_evaluator(config, dataset, policy: nn.Module, mean: np.ndarray, std: np.ndarray, device: torch.device,
                   q_initial: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Callable[[], dict]:
    """Evaluation of `policy` (normalized states -> deterministic actions) in the dataset's eval env.
    run() returns the logged metrics and, under "episodes", what evaluate() measured per episode.  With
    q_initial (normalized states -> the critic's Q(s, pi(s))), also its mean over the episodes' initial states:
    the critic's own estimate of the discounted_return beside it (extrapolation error)."""
    env = dataset.recover_environment(eval_env=True)
    mean_t, std_t = torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        state = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean_t) / std_t
        return policy(state[None])[0].cpu().numpy()

    def run() -> dict:
        episodes = evaluate(env, act, config.eval_episodes, seed=config.seed + 10_000)
        result = {"return": episodes["returns"].mean(), "discounted_return": episodes["discounted_returns"].mean(),
                  "normalized_score": normalized_score(dataset, episodes["returns"]), "episodes": episodes}
        if q_initial is not None:
            with torch.no_grad():
                states = (torch.as_tensor(episodes["initial_states"], device=device) - mean_t) / std_t
                result["q_initial"] = q_initial(states).mean()
        return result

    return run
# --- transitions: end


# --- sac: begin
# SAC's pieces, the same in cql.py, mopo.py and combo.py (source: tools/shared/sac.py).
#   y    = r + gamma (1 - d) [ min_i Q_target_i(s', a') - alpha log pi(a'|s') ],  a' ~ pi(.|s')  (alpha: backup_entropy)
#   J_Q  = sum_i E ( Q_i(s, a) - y )^2
#   J_pi = E_{a~pi(.|s)} [ alpha log pi(a|s) - min_i Q_i(s, a) ]
#   J_alpha = -E [ log alpha ( log pi(a|s) + H_target ) ],  H_target = -dim(A)


def td_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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


def soft_q_target(critic_target: nn.Module, actor: TanhGaussianPolicy, batch: dict[str, torch.Tensor],
                  alpha: torch.Tensor, gamma: float, backup_entropy: bool) -> torch.Tensor:
    """y = r + gamma (1 - d) [ min_i Q_target_i(s', a') - alpha log pi(a'|s') ], a' ~ pi(.|s'); without the
    alpha term when not backup_entropy (CQL's eq. 3 and code, deterministic_backup)."""
    next_actions, next_log_pi = actor.sample(batch["next_observations"])
    next_q = critic_target(batch["next_observations"], next_actions).min(0).values
    if backup_entropy:
        next_q = next_q - alpha * next_log_pi
    return batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_q
# --- sac: end


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


# --- online: begin
# Offline-to-online fine-tuning (the chapter's "Offline-to-Online Fine-tuning"), the same in iql, cql, td3_bc and awac
# (source: tools/shared/online.py).  After max_steps offline updates come online_steps environment steps with utd
# updates per step, episode by episode as in Cal-QL's code (nakamotoo/Cal-QL, JaxCQL/conservative_sac_main.py: one
# trajectory of the stochastic policy, then len(trajectory) * online_utd_ratio updates).  An episode enters the online
# buffer when it ends, with its returns-to-go; a checkpoint, taken between updates, therefore always falls between
# episodes, and a resume never restarts one midway.  Batches: online_ratio of them from the online buffer, the rest
# from the dataset, each drawn uniformly: the fixed-ratio "symmetric sampling" of RLPD (Ball et al. 2023) that Cal-QL
# fine-tunes with (its scripts pass --mixing_ratio=0.5), not the prioritized balanced replay of Lee et al. 2021.
# warmup_steps > 0 starts the online phase with that many environment steps of uniform random actions and no updates
# (SAC's start_steps, 10k in Haarnoja et al. and tools/behavior_sac.py), for SAC from scratch.
# Evaluations stay every eval_every updates (and at max_steps): eval_every <= online_steps * utd / 15 puts at least
# three of them in the first fifth of the online phase.

ONLINE_SEEDS = 20_000  # online episode i starts from env.reset(seed=seed + ONLINE_SEEDS + i); evaluations: seed + 10_000


class OnlineBuffer:
    """Room for online_steps transitions with the keys of the dataset's DeviceBuffer, on its device, sampled like it;
    filled episode by episode."""

    def __init__(self, like: "DeviceBuffer", capacity: int):
        self.data = {k: torch.zeros((capacity, *v.shape[1:]), device=like.device) for k, v in like.data.items()}
        self.size, self.device = 0, like.device

    def add(self, episode: dict) -> None:
        n = len(episode["rewards"])
        for k, v in self.data.items():
            v[self.size:self.size + n] = torch.as_tensor(episode[k], device=self.device)
        self.size += n

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


def training_environment(dataset) -> gym.Env:
    try:
        return dataset.recover_environment()
    except Exception as e:  # noqa: BLE001 - a dataset without an environment spec, or one gymnasium cannot make
        fail(f"online_steps needs the environment of dataset {dataset.spec.dataset_id!r}, which cannot be recovered "
             f"({' '.join(str(e).split()) or type(e).__name__}).")


@torch.no_grad()
def collect_episode(env: gym.Env, explore: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor,
                    std: torch.Tensor, seed: int, max_length: int) -> dict[str, np.ndarray]:
    """One episode of `explore` (normalized states -> sampled actions) from env.reset(seed=seed), cut after max_length
    steps (the end of the online budget), in flatten_episodes' columns: terminals from terminations only."""
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals")}
    obs, _ = env.reset(seed=seed)
    for _ in range(max_length):
        state = (torch.as_tensor(obs, dtype=torch.float32, device=mean.device) - mean) / std
        action = explore(state[None])[0].cpu().numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for column, value in zip(columns.values(), (obs, action, reward, next_obs, terminated)):
            column.append(value)
        obs = next_obs
        if terminated or truncated:
            break
    episode = {k: np.asarray(v, np.float32) for k, v in columns.items()}
    episode["episode_ends"] = (np.arange(len(episode["rewards"])) == len(episode["rewards"]) - 1).astype(np.float32)
    return episode


class FineTuning:
    """What fit() drives when online_steps > 0, around the method's trainer (whose update it runs unchanged):
    periodic(step) collects the next episode once the online updates have used up the collected steps, sample()
    draws the mixed batch, counters() gives env_steps, and the checkpoint adds the online episodes.  With
    online_steps 0 it only passes the dataset's batches and the trainer's state through."""

    def __init__(self, config, dataset, trainer, buffer: "DeviceBuffer",
                 explore: Callable[[torch.Tensor], torch.Tensor], mean: np.ndarray, std: np.ndarray, scale: float):
        self.trainer, self.update, self.device = trainer, trainer.update, trainer.device
        self.buffer, self.online_buffer = buffer, OnlineBuffer(buffer, config.online_steps)
        self.offline_steps, self.online_steps, self.utd = config.max_steps, config.online_steps, config.utd
        self.warmup_steps = config.warmup_steps
        if self.warmup_steps > self.online_steps:
            fail(f"warmup_steps ({self.warmup_steps}) must not exceed online_steps ({self.online_steps}).")
        self.steps = config.max_steps + (config.online_steps - config.warmup_steps) * config.utd  # the run's updates
        self.batch_size, self.online_batch = config.batch_size, round(config.online_ratio * config.batch_size)
        self.explore, self.mean, self.std, self.scale, self.gamma = explore, mean, std, scale, config.gamma
        self.seed, self.episodes, self.online = config.seed + ONLINE_SEEDS, 0, False
        self.env = training_environment(dataset) if config.online_steps else None

    def periodic(self, step: int) -> None:
        self.online = step > self.offline_steps
        if not self.online:
            return
        while self.online_buffer.size < self.warmup_steps:  # SAC's start_steps: uniform random actions, no updates
            self.collect(self.uniform_actions(), self.warmup_steps)
        if step - self.offline_steps > (self.online_buffer.size - self.warmup_steps) * self.utd:
            self.collect(self.explore, self.online_steps)

    def collect(self, explore: Callable[[torch.Tensor], torch.Tensor], until: int) -> None:
        """One episode of explore into the online buffer, cut when the buffer holds `until` transitions."""
        mean, std = (torch.as_tensor(x, device=self.device) for x in (self.mean, self.std))
        episode = collect_episode(self.env, explore, mean, std, self.seed + self.episodes,
                                  until - self.online_buffer.size)
        self.online_buffer.add(transitions(episode, self.mean, self.std, self.scale, self.gamma))
        self.episodes += 1

    def uniform_actions(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """a ~ Unif(action space), from a generator seeded by the episode's number (a resume draws the same)."""
        rng, space = np.random.default_rng(self.seed + self.episodes), self.env.action_space
        return lambda state: torch.as_tensor(rng.uniform(space.low, space.high), dtype=torch.float32)[None]

    def sample(self) -> dict[str, torch.Tensor]:
        if not self.online:
            return self.buffer.sample(self.batch_size)
        offline = self.buffer.sample(self.batch_size - self.online_batch)
        online = self.online_buffer.sample(self.online_batch)
        return {k: torch.cat([offline[k], online[k]]) for k in offline}

    def counters(self) -> dict:
        return {"env_steps": self.online_buffer.size} if self.online_steps else {}

    def state_dict(self) -> dict:
        state = self.trainer.state_dict()
        if self.online_steps:  # clone(): a slice alone would save the whole preallocated tensor
            buffer = {k: v[:self.online_buffer.size].clone() for k, v in self.online_buffer.data.items()}
            state["online"] = {"episodes": self.episodes, "buffer": buffer}
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        online = state.pop("online", None)
        self.trainer.load_state_dict(state)
        if online is not None:
            self.episodes, self.online_buffer.size = online["episodes"], 0
            self.online_buffer.add(online["buffer"])
# --- online: end


# --- shared: begin
# The plumbing every script shares, byte-identical in all of them: the command line, seeding and device,
# Minari loading and checks, normalization, mlp, evaluation, the deployable policy, the run directory, logging,
# checkpoints and the training loop fit().  Its one source is tools/shared/appendix.py: edit it there, then run
# tools/sync_shared.py.

EVAL_DISCOUNT = 0.99  # gamma of the discounted returns that evaluation logs beside the returns (for OPE)
MAX_MAGNITUDE = 1e6  # no observation, action or reward of these environments comes near it: a corrupt file
# Fields that do not change what is learned: a run may resume under other values of these.
RUN_FIELDS = ("eval_every", "eval_episodes", "checkpoints_path", "resume", "stop_after", "logging", "project",
              "device", "compile")


def fail(message: str) -> None:
    """Bad input ends the run with one sentence and a non-zero exit status, not a stack trace."""
    raise SystemExit(f"error: {message}")


def decode(name: str, kind, value):
    """The value of one TrainConfig field of type `kind`, from YAML (typed) or from the command line (text)."""
    text = str(value).strip()
    optional = {Optional[str]: str, Optional[int]: int, Optional[float]: float}.get(kind)
    if optional is not None:
        return None if value is None or text.lower() in ("none", "null") else decode(name, optional, value)
    if kind is bool and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    if kind is int and not isinstance(value, (bool, float)) and text.lstrip("+-").isdigit():
        return int(text)
    if kind is float and not isinstance(value, bool):
        try:
            if math.isfinite(float(text)):  # also refuses 1e999, which float() reads as inf
                return float(text)
        except ValueError:
            pass
    if kind is str:
        return text
    if kind == list[float]:
        import yaml

        try:
            items = yaml.safe_load(text) if isinstance(value, str) else value
        except yaml.YAMLError:
            items = None
        if isinstance(items, list):
            return [decode(name, float, item) for item in items]
    what = {bool: "true or false", int: "an integer", float: "a finite number"}.get(kind, "a list of numbers")
    fail(f"{name} must be {what}, got {value!r}.")


def parse_config(config_class):
    """TrainConfig from the YAML file(s) of --config_path, then --name value pairs; bad input is one sentence."""
    argv, fields = sys.argv[1:], {f.name: f for f in dataclasses.fields(config_class)}
    if {"-h", "--help"} & set(argv):
        pyrallis.parse(config_class=config_class)  # prints every field with its comment, then exits
    given, values = [], {}
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            given.append(tuple(arg[2:].split("=", 1)))
        elif arg.startswith("--"):
            given.append((arg[2:], argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None))
        elif i == 0 or not argv[i - 1].startswith("--") or "=" in argv[i - 1]:
            fail(f"unexpected argument {arg!r}; use --<field> <value>.")
    for name, value in given:
        if name not in (*fields, "config_path"):
            fail(f"unknown argument --{name}; valid: --config_path and --{', --'.join(fields)}.")
        if value is None:
            fail(f"--{name} needs a value.")
    for path in [value for name, value in given if name == "config_path"]:
        values.update(config_file_values(path, fields))
    values.update((name, value) for name, value in given if name != "config_path")
    config = config_class(**{name: decode(name, fields[name].type, value) for name, value in values.items()})
    check_config(config)
    return config


def config_file_values(path: str, fields: dict) -> dict:
    import yaml

    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}  # an empty file: every default
    except OSError:
        fail(f"config file {path} does not exist or cannot be read.")
    except yaml.YAMLError as e:
        fail(f"config file {path} is not valid YAML ({' '.join(str(e).split())}).")
    if not isinstance(values, dict) or set(values) - set(fields):
        fail(f"config file {path} must map TrainConfig fields to values; unknown key(s): "
             f"{', '.join(sorted(set(values) - set(fields)) if isinstance(values, dict) else [])}; valid keys: {', '.join(fields)}.")
    return values


# Ranges of fields that several scripts name alike (one vocabulary); other integers are sizes or counts (>= 1)
# and other floats weights, scales or rates (>= 0).  Checked before anything is written.
UNIT = {"tau": ("in (0, 1]", lambda v: 0 < v <= 1), "gamma": ("in [0, 1)", lambda v: 0 <= v < 1),
        "expectile": ("in (0, 1)", lambda v: 0 < v < 1), "frac": ("in (0, 1]", lambda v: 0 < v <= 1),
        "dropout": ("in [0, 1)", lambda v: 0 <= v < 1), "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
        "holdout_ratio": ("in [0, 1)", lambda v: 0 <= v < 1), "real_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1),
        "td_lambda": ("in [0, 1]", lambda v: 0 <= v <= 1), "lmbda": ("in [0, 1]", lambda v: 0 <= v <= 1),
        "online_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1)}
COUNTS_FROM_ZERO = ("seed", "stop_after", "bc_steps", "online_steps", "warmup_steps")


def check_config(config) -> None:
    for field in dataclasses.fields(config):
        name, value = field.name, getattr(config, field.name)
        what, ok = UNIT.get(name, (None, None))
        from_zero = name in COUNTS_FROM_ZERO or (name == "max_steps" and getattr(config, "online_steps", 0) > 0)
        if what is None and field.type is int:
            what, ok = ("0 or more", lambda v: v >= 0) if from_zero else ("at least 1", lambda v: v >= 1)
        elif what is None and field.type is float:
            what, ok = ("above 0", lambda v: v > 0) if name.endswith("_lr") else ("0 or more", lambda v: v >= 0)
        if ok is not None and not ok(value):
            fail(f"{name} must be {what}, got {value!r}.")
    if config.logging not in ("offline", "online", "disabled"):
        fail(f"logging must be offline, online or disabled, got {config.logging!r}.")
    if config.precision not in ("fp32", "bf16"):
        fail(f"precision must be fp32 or bf16, got {config.precision!r}.")
    if getattr(config, "embed_dim", 0) % getattr(config, "n_heads", 1):
        fail(f"embed_dim ({config.embed_dim}) must be a multiple of n_heads ({config.n_heads}).")
    if getattr(config, "bc_steps", 0) >= max(config.max_steps, 1):
        fail(f"bc_steps ({config.bc_steps}) must be below max_steps ({config.max_steps}): the run would be pure BC.")
    pick_device(config.device)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"unknown device {name!r}; use auto, cpu, cuda or cuda:<index>.")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        fail(f"device {name!r} is not available on this machine ({torch.cuda.device_count()} CUDA devices).")
    if device.type not in ("cpu", "cuda"):
        fail(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:<index>.")
    return device


def load_dataset(dataset_id: str):
    """Minari dataset from disk, else downloaded; a missing one is one clear sentence.  From here on, MuJoCo's
    warnings go to the run directory (MUJOCO_WARNINGS), not to the working directory."""
    import minari
    from minari.storage import get_dataset_path

    MUJOCO_WARNINGS.install()
    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        pass
    except Exception as e:  # noqa: BLE001 - a malformed id or a broken dataset directory
        fail(f"could not load dataset {dataset_id!r}: {' '.join(str(e).split())}")
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception:  # noqa: BLE001 - no network, or an id the remote does not know
        fail(f"dataset {dataset_id!r} is not in {get_dataset_path(dataset_id)} and could not be downloaded; "
             f"build the local datasets with: python tools/make_datasets.py")


def check_continuous(dataset) -> None:
    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(act_space, gym.spaces.Box) or not isinstance(obs_space, gym.spaces.Box) \
            or len(obs_space.shape) != 1 or len(act_space.shape) != 1:
        fail(f"this script handles flat continuous observations and actions (Box vectors); "
             f"the dataset has observations {obs_space} and actions {act_space}.")


def flatten_episodes(dataset) -> dict[str, np.ndarray]:
    """Episodes -> transitions.  terminals come from terminations only (a time-limit truncation
    is not a terminal); next_observations come from the same episode; episode_ids and
    episode_returns let methods work per trajectory."""
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals",
                               "episode_ends", "episode_ids", "episode_returns")}
    try:
        for i, ep in enumerate(dataset.iterate_episodes()):
            length = len(ep.rewards)
            columns["observations"].append(ep.observations[:-1])
            columns["next_observations"].append(ep.observations[1:])
            columns["actions"].append(ep.actions)
            columns["rewards"].append(ep.rewards)
            columns["terminals"].append(ep.terminations)
            columns["episode_ends"].append(np.arange(length) == length - 1)
            columns["episode_ids"].append(np.full(length, i))
            columns["episode_returns"].append(np.full(length, np.sum(ep.rewards, dtype=np.float64)))
    except Exception as e:  # noqa: BLE001 - a truncated or corrupted data file
        fail(f"dataset {dataset.spec.dataset_id!r} cannot be read ({type(e).__name__}); rebuild or download it again.")
    if not columns["rewards"] or sum(map(len, columns["rewards"])) == 0:
        fail(f"dataset {dataset.spec.dataset_id!r} holds no transitions.")
    data = {k: np.concatenate(v) for k, v in columns.items()}
    for key in ("observations", "actions", "rewards", "next_observations"):
        values = np.asarray(data[key], np.float64).reshape(len(data[key]), -1)
        bad = np.flatnonzero(~(np.abs(values) <= MAX_MAGNITUDE).all(1))
        if len(bad):
            fail(f"dataset {dataset.spec.dataset_id!r} has a non-finite or absurd value (beyond {MAX_MAGNITUDE:g}) "
                 f"in {key} at transition {bad[0]}.")
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends",
              "episode_returns"):
        data[k] = data[k].astype(np.float32)
    return data


def state_statistics(observations: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the observations, computed in float64 so that large values cannot overflow."""
    if not enabled:
        return np.zeros(observations.shape[1], np.float32), np.ones(observations.shape[1], np.float32)
    values = np.asarray(observations, np.float64)
    return values.mean(0).astype(np.float32), (values.std(0) + 1e-3).astype(np.float32)


class OutputLinear(nn.Linear):
    """A network's output layer: fp32 even under --precision bf16, where autocast runs only the hidden layers in bf16
    (CPU autocast would keep exp, logsumexp, tanh, ... in bf16 once fed bf16), so Q- and V-values, means and
    log-stds, and all that is computed from them (targets, losses, weights, log-probabilities) stay fp32.  The same
    parameters as nn.Linear: under fp32 it is nn.Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int = 2) -> nn.Sequential:
    layers, dim = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU()]
        dim = hidden_dim
    return nn.Sequential(*layers, OutputLinear(dim, out_dim))


def evaluate(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded episodes of the deterministic policy `act`, one after another: per episode the return,
    the return discounted by EVAL_DISCOUNT and the initial state."""
    returns, discounted, initial_states = [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        initial_states.append(obs)
        done, total, total_discounted, discount = False, 0.0, 0.0, 1.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            total_discounted += discount * float(reward)
            discount *= EVAL_DISCOUNT
            done = terminated or truncated
        returns.append(total)
        discounted.append(total_discounted)
    return {"returns": np.asarray(returns), "discounted_returns": np.asarray(discounted),
            "initial_states": np.asarray(initial_states, np.float32)}


def normalized_score(dataset, returns: np.ndarray) -> float:
    """D4RL score: 100 * (return - random) / (expert - random); NaN when the dataset has no references."""
    import minari

    try:
        return float(100 * np.mean(minari.get_normalized_score(dataset, returns)))
    except Exception:  # noqa: BLE001 - datasets without ref_min_score / ref_max_score
        return math.nan


class DeployablePolicy(nn.Module):
    """Raw observations -> deterministic actions: the state normalization and the policy in one program."""

    def __init__(self, policy: nn.Module, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.policy = copy.deepcopy(policy).cpu().eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.policy((observations - self.mean) / self.std)


def export_program(path: Path, module: nn.Module, example_inputs: tuple, dynamic_shapes) -> None:
    """A torch.export program that `torch.export.load(path).module()` runs with torch alone (.pt2 is
    torch.export's suffix).  Loading a .pt2 runs code its author chose: load only files you trust."""
    with torch.no_grad():
        program = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes)
    tmp = path.with_name(path.stem + ".partial.pt2")
    torch.export.save(program, tmp)
    os.replace(tmp, path)


def export_policy(path: Path, policy: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """policy.pt2: a batch of raw observations [B, state_dim] -> deterministic actions [B, action_dim]."""
    example = torch.zeros(2, len(mean))
    export_program(path, DeployablePolicy(policy, mean, std), (example,), ({0: torch.export.Dim.DYNAMIC},))


def run_directory(config, algo: str) -> Path:
    path = config.checkpoints_path or os.path.join("runs", algo, config.dataset_id, f"seed{config.seed}")
    return Path(path)


def learning_fields(config, fixed: tuple[str, ...]) -> dict:
    """The fields that decide what is learned (max_steps only where a schedule depends on it: `fixed`)."""
    return {k: v for k, v in asdict(config).items() if k not in RUN_FIELDS and (k != "max_steps" or k in fixed)}


def open_run(config, algo: str, fixed: tuple[str, ...]) -> tuple[Path, object]:
    """The locked run directory and its run.json, the record of the config the run started with: a resume
    under other learning fields is refused; with --resume false an earlier run there is moved aside whole."""
    run_dir = run_directory(config, algo)
    lock = lock_run(run_dir)
    record, learning = run_dir / "run.json", learning_fields(config, fixed)
    if not config.resume and (record.exists() or (run_dir / "checkpoint.pt").exists()):
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(run_dir, aside)
        print(f"--resume false: the earlier run in {run_dir} was moved to {aside}.")
        lock.close()
        lock = lock_run(run_dir)
    elif record.exists():
        before = json.loads(record.read_text())["config"]
        changed = [f"{k}: {before[k]!r} there, {v!r} now" for k, v in learning.items() if before.get(k, v) != v]
        if changed:
            lock.close()
            fail(f"{run_dir} holds a run of another config ({'; '.join(changed)}); pass --resume false to "
                 f"start it over, or another --checkpoints_path.")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, text=True,
                                capture_output=True).stdout.strip() or None
    except OSError:
        commit = None
    write_atomic(record, json.dumps({"algo": algo, "config": asdict(config), "commit": commit, "torch": torch.__version__,
                                     "command": [Path(sys.executable).name, *sys.argv]}, indent=1))
    print(f"run directory: {run_dir}", flush=True)
    return run_dir, lock


def lock_run(run_dir: Path):
    """An exclusive lock on run_dir/run.lock, held until the process ends (kill -9 releases it too)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / "run.lock", "w")
    except OSError as e:
        fail(f"cannot write the run directory {run_dir} ({e.strerror or type(e).__name__}); pass another --checkpoints_path.")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another run is writing {run_dir}; wait for it, or pass another --checkpoints_path.")
    return lock


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class MujocoWarnings:
    """MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory.  Once installed (by
    load_dataset, before any environment is made) they come here instead: kept until fit() knows the run
    directory, then written to its mujoco_warnings.txt."""

    def __init__(self):
        self.messages, self.path = [], None

    def install(self) -> None:
        try:
            import mujoco
        except ImportError:  # environments without MuJoCo (Pendulum) need no handler
            return
        mujoco.set_mju_user_warning(self)

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        if self.path is not None:
            self.write_to(self.path)

    def write_to(self, path: Path) -> None:
        self.path = path
        with open(path, "a") as f:
            f.writelines(m + "\n" for m in self.messages)
        self.messages = []


MUJOCO_WARNINGS = MujocoWarnings()


class RunLog:
    """A JSON-lines file beside the checkpoints, plus wandb unless logging is "disabled".  wall_time counts
    the seconds of the whole run: a resumed run starts its clock at the `elapsed` its checkpoint carried,
    and the rows written after that checkpoint (by an interrupted call) are dropped."""

    def __init__(self, config, algo: str, run_dir: Path, start_step: int, elapsed: float, fixed: tuple[str, ...],
                 counters: Callable[[], dict] = dict):
        path = run_dir / "log.jsonl"
        rows = [r for r in (path.read_text().splitlines() if path.exists() else []) if json.loads(r)["step"] <= start_step]
        write_atomic(path, "".join(r + "\n" for r in rows))
        self.last = json.loads(rows[-1]) if rows else {}
        self.file = open(path, "a")
        self.start, self.counters = time.time() - elapsed, counters
        self.wandb = None
        if config.logging != "disabled":
            import wandb

            identity = hashlib.sha1(json.dumps(learning_fields(config, fixed), sort_keys=True).encode()).hexdigest()
            name = f"{algo}-{config.dataset_id}-seed{config.seed}"
            self.wandb = wandb.init(mode=config.logging, project=config.project, dir=str(run_dir),
                                    config=asdict(config), name=name, group=algo, resume="allow",
                                    id=f"{name}-{identity[:8]}".replace("/", "-"), settings=wandb.Settings(silent=True))

    def write(self, step: int, metrics: dict) -> dict:
        values, counters = {k: float(v) for k, v in metrics.items()}, self.counters()  # the only host sync: log time
        self.file.write(json.dumps({"step": step, **counters, "wall_time": self.elapsed(), **values}) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log({**counters, **values}, step=step)
        return values

    def elapsed(self) -> float:
        return time.time() - self.start

    def close(self) -> None:
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish()


def save_checkpoint(path: Path, step: int, trainer, config, extra: dict, wall_time: float) -> None:
    """What trainer.state_dict() declares, the RNG states, `extra` and the seconds trained so far, in plain
    types and tensors only (so that loading can refuse anything else); written to a temporary file then
    renamed, so an interrupted save never replaces a good checkpoint."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"step": step, "trainer": trainer.state_dict(), "config": asdict(config), "wall_time": wall_time,
             "extra": {k: torch.as_tensor(v) for k, v in extra.items()},
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), position, has_gauss, gauss],
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """The checkpoint's tensors and plain values; a file holding anything else (objects whose loading
    could run code, as checkpoints of the older, pickled format do) is refused."""
    if not path.exists():
        fail(f"no checkpoint at {path}.")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or unsafe files
        fail(f"checkpoint {path} is corrupt, of an older format, or holds objects other than tensors and plain "
             f"values ({type(e).__name__}); it was not loaded: delete it or pass --resume false.")


def resume(path: Path, trainer, device: torch.device) -> tuple[int, float]:
    """Loads the trainer and the RNG states; returns the update and the seconds trained so far."""
    state = load_checkpoint(path, device)
    try:
        trainer.load_state_dict(state["trainer"])
        rng = state["rng"]
        kind, keys, position, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in rng["python"]))
        torch.set_rng_state(rng["torch"].cpu())
    except (KeyError, RuntimeError, ValueError, AttributeError, TypeError, IndexError) as e:
        fail(f"checkpoint {path} does not match this script and config ({type(e).__name__}); "
             f"delete it or pass --resume false.")
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return state["step"], state["wall_time"]


class StopRequest:
    """SIGINT (Ctrl-C) or SIGTERM asks the loop to checkpoint after the current update and exit."""

    def __init__(self):
        self.signal = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request)

    def request(self, signum, frame) -> None:
        self.signal = signum


def fit(config, *, algo: str, trainer, sample: Callable[[], dict], evaluate: Callable[[], dict],
        export: Optional[Callable[[Path], None]] = None, extra: Optional[dict] = None,
        fixed: tuple[str, ...] = (), steps: Optional[int] = None) -> dict:
    """The loop every script shares.  The trainer's contract: update(batch, step) -> dict of detached
    tensors (step = 1, 2, ... counts updates, for host-side schedules), state_dict() / load_state_dict()
    (what a checkpoint holds), an attribute `device`, and optionally periodic(step), called before
    every update for work outside it (refreshing returns, model rollouts, online episodes), and counters(), host
    numbers written in every log row beside step (env_steps).  The update runs under bf16 autocast when
    config.precision is bf16; periodic work, evaluation and export run in fp32.  `steps`: the run's updates,
    max_steps unless an online phase adds its own.  Every eval_every updates, at max_steps and at the end:
    evaluate, log, checkpoint, and export(run_dir / "policy.pt2").  `fixed`: fields besides the learning
    ones that a resume may not change (max_steps, where a schedule depends on it).  stop_after or a
    signal ends the call early with a checkpoint that the same command resumes.  A finished run writes
    finished.json (its last evaluation); returns the last evaluation."""
    run_dir, lock = open_run(config, algo, fixed)
    with lock:  # released when this call ends, however it ends
        MUJOCO_WARNINGS.write_to(run_dir / "mujoco_warnings.txt")
        checkpoint, finished = run_dir / "checkpoint.pt", run_dir / "finished.json"
        start, elapsed = resume(checkpoint, trainer, trainer.device) if checkpoint.exists() else (0, 0.0)
        total = config.max_steps if steps is None else steps
        if start >= total and finished.exists():
            print(f"{run_dir}: already trained for {start} updates (of {total}); nothing to do.")
            return json.loads(finished.read_text())
        update = torch.compile(trainer.update) if config.compile else trainer.update
        periodic = getattr(trainer, "periodic", None)
        log = RunLog(config, algo, run_dir, start, elapsed, fixed, getattr(trainer, "counters", dict))
        log_every = max(1, min(1000, config.eval_every))
        last = min(total, start + config.stop_after) if config.stop_after else total
        stop = StopRequest()
        step, result = start, {}
        for step in trange(start + 1, last + 1, desc=f"{algo} {config.dataset_id}", mininterval=5):
            if periodic is not None:
                periodic(step)
            with torch.autocast(trainer.device.type, torch.bfloat16, enabled=config.precision == "bf16"):
                metrics = update(sample(), step)  # hidden layers in bf16 under bf16; outputs fp32 (OutputLinear)
            if step % log_every == 0 and step % config.eval_every != 0 and step not in (config.max_steps, total):
                values = log.write(step, {f"train/{k}": v for k, v in metrics.items()})
                check_finite(values, step, run_dir, log)
            elif step % config.eval_every == 0 or step in (config.max_steps, total):
                result = evaluate_and_save(step, metrics, trainer, config, log, evaluate, export, extra or {}, run_dir)
            if stop.signal or (step == last < total):
                save_checkpoint(checkpoint, step, trainer, config, extra or {}, log.elapsed())
                log.close()
                print(f"stopped at update {step} of {total}; the same command resumes from {checkpoint}.")
                if stop.signal:
                    raise SystemExit(128 + stop.signal)
                return result
        if start >= total:  # the last update and its evaluation were done; the call ended before this
            result = {k: v for k, v in log.last.items() if k.startswith("eval/")}
            if export is not None:
                export(run_dir / "policy.pt2")
        log.close()
        write_atomic(finished, json.dumps({"step": total, **result}))
        return result


def check_finite(values: dict, step: int, run_dir: Path, log: RunLog) -> None:
    if not all(math.isfinite(v) for k, v in values.items() if k.startswith("train/")):
        log.close()
        fail(f"a loss became NaN or infinite at update {step}; the last good checkpoint is kept in {run_dir}.")


def evaluate_and_save(step: int, metrics: dict, trainer, config, log: RunLog, evaluate: Callable[[], dict],
                      export: Optional[Callable[[Path], None]], extra: dict, run_dir: Path) -> dict:
    """Evaluate, log, checkpoint and export the policy; returns the evaluation's metrics."""
    values = {f"train/{k}": v for k, v in metrics.items()}
    values.update({f"eval/{k}": v for k, v in evaluate().items() if k != "episodes"})
    values = log.write(step, values)
    check_finite(values, step, run_dir, log)
    save_checkpoint(run_dir / "checkpoint.pt", step, trainer, config, extra, log.elapsed())
    if export is not None:
        export(run_dir / "policy.pt2")
    result = {k: v for k, v in values.items() if k.startswith("eval/")}
    print(f"step {step}: " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in result.items()), flush=True)
    return result
# --- shared: end


if __name__ == "__main__":
    train(parse_config(TrainConfig))
