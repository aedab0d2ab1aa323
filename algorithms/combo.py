# COMBO: Conservative Offline Model-Based Policy Optimization (Yu, Kumar, Rafailov, Rajeswaran, Levine,
# Finn 2021).  Chapter: the overview's "Model Based Offline RL" section (COMBO after MOPO, and COMBO in
# the summary table: "具有类似 CQL 的保守属性,但能利用模型的优势"), the robotics notes' 4 "基于模型的方法".
#
#   model and rollouts: as mopo.py (dynamics block), with no reward penalty and no uncertainty estimate
#   critic:  min_Q  beta ( E_{(s,a)~rho} [Q(s, a)] - E_{(s,a)~D} [Q(s, a)] )
#                   + E_{(s,a,r,s')~d_f} ( Q(s, a) - B^pi Q_hat(s, a) )^2,   d_f = f D + (1 - f) D_model,  f = real_ratio
#            rho(s, a) = d_model(s) pi(a|s) (paper eq. 4): states from the model's rollouts; the push-down term
#            is estimated as in CQL(H), by the soft maximum over actions at those model states (cql_penalty block),
#            E_{s~D_model} log sum_a exp Q(s, a) ~ logsumexp_j [ Q(s, a_j) - log mu(a_j|s) ],
#            a_j from Unif([-max_action, max_action]^d), pi(.|s) and pi(.|s'), s' the model's next state
#            B^pi Q_hat(s, a) = r + gamma (1 - d) min_{j=1,2} Q_target_j(s', a'),  a' ~ pi(.|s')
#   actor (SAC):  max_pi E_{s~d_f, a~pi(.|s)} [ min_j Q_j(s, a) - alpha log pi(a|s) ],  alpha tuned to H = -dim(A)
#
# In the chapter's words: MOPO is purely model-based and changes the reward, r - lambda u(s, a); with COMBO
# "we need not modify the reward function explicitly: we push the Q-values down directly, as CQL does".
# CQL pushes down the Q-values of the actions the policy picks (at dataset states); COMBO pushes down the
# Q-values of the simulated data the model generates: a state-action pair that looks fake, far from the
# data, has its Q lowered, so that the policy is not misled by the model's hallucinations, while the
# dataset's pairs are pushed up.  No uncertainty estimate is needed, and Q on the dataset is less
# conservative than CQL's.
#
# License: MIT (the project's LICENSE file); copy this file anywhere, keeping this line.

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import signal
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
from tqdm import tqdm, trange


@dataclass
class TrainConfig:
    """Common fields (the same in every script), then the method's: COMBO (defaults: the paper's
    hopper-medium values, beta 5, h 5, f 0.5, 1000 epochs of 1000, and CQL's SAC settings), the rollouts' and
    the dynamics model's (rollout_length to dynamics_path, the same in mopo.py), then the SAC tail."""
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
    normalize_reward: bool = False  # scale rewards by 1000 / (max return - min return), as IQL does
    cql_alpha: float = 5.0  # beta, weight of the conservative term (alpha_cql in cql.py)
    num_sampled_actions: int = 10  # actions drawn from each of Unif, pi(.|s), pi(.|s') for the logsumexp
    backup_entropy: bool = False  # subtract alpha log pi(a'|s') in the target (off in CQL's eq. 3 and code)
    rollout_length: int = 5  # h, model steps of each rollout
    rollout_batch_size: int = 50_000  # dataset states the rollouts start from
    rollout_every: int = 1_000  # updates between rollouts
    retain_rollouts: int = 5  # the model buffer holds the last this-many rollouts (5 epochs in MOPO's paper)
    real_ratio: float = 0.5  # f, fraction of each batch from the dataset, the rest from the model buffer
    n_models: int = 7  # N, Gaussian models in the ensemble
    n_elites: int = 5  # members used in rollouts: those with the lowest holdout error
    model_hidden_dim: int = 200  # width of the model's four hidden layers
    model_lr: float = 1e-3  # Adam learning rate of the model
    model_batch_size: int = 256  # transitions per model update (per member)
    holdout_ratio: float = 0.2  # fraction of the transitions held out for early stopping and elite selection
    max_holdout: int = 1_000  # at most this many held out
    model_patience: int = 5  # stop the model after more than this many epochs with no member 1 percent better on holdout
    model_max_epochs: Optional[int] = None  # cap on the model's training epochs; None: until early stopping
    termination_fn: str = "auto"  # d(s') of model transitions: "auto" (from the dataset's env), "none", "hopper", "walker2d"
    dynamics_path: Optional[str] = None  # a dynamics.pt saved by an earlier run, reused instead of training a model
    gamma: float = 0.99  # gamma, discount
    tau: float = 0.005  # Polyak rate of the target critics
    hidden_dim: int = 256  # width of the hidden layers of the actor and the critics
    n_hidden: int = 3  # hidden layers of the actor and the critics (three of 256, as CQL for Gym)
    actor_lr: float = 1e-4  # Adam learning rate of pi_phi and of alpha
    critic_lr: float = 3e-4  # Adam learning rate of Q_theta

    def __post_init__(self):  # check_ranges (appendix): these, and any other int >= 1, float >= 0, *_lr > 0
        check_ranges(self, real_ratio="in [0, 1]", holdout_ratio="in [0, 1)", gamma="in [0, 1)", tau="in (0, 1]",
                     n_elites=f"in [1, {self.n_models}]")


# mlp, fit and the rest of the plumbing: the appendix (# --- shared) at the end of the file; the blocks right after
# train(): EnsembleCritic, soft_update (critic), transition_buffer, make_evaluator, export_policy (transitions),
# TanhGaussianPolicy, bellman_target, critic_loss, actor_loss, temperature_loss (sac), logsumexp_q (cql_penalty),
# EnsembleDynamics, ModelBuffer, ModelRollouts, mixed_batch, prepare_dynamics and termination_function (dynamics).


def conservative_gap(logsumexp_q: torch.Tensor, q_data: torch.Tensor) -> torch.Tensor:
    """gap_i = E_{s~D_model} [ log sum_a exp Q_i(s, a) ] - E_{(s,a)~D} [ Q_i(s, a) ], one value per critic:
    minimizing it pushes Q down on model states and up on the dataset's pairs (COMBO eq. 4)."""
    return logsumexp_q.mean(-1) - q_data.mean(-1)


def conservative_penalty(gap: torch.Tensor, cql_alpha: float) -> torch.Tensor:
    """beta sum_i gap_i, added to the critics' TD loss."""
    return cql_alpha * gap.sum()


class Trainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device,
                 rollouts: "ModelRollouts"):
        self.device = device
        self.actor = TanhGaussianPolicy(state_dim, action_dim, config.hidden_dim, config.n_hidden, max_action).to(device)
        self.critic = EnsembleCritic(state_dim, action_dim, config.hidden_dim, n_hidden=config.n_hidden).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros((), device=device))  # log alpha, SAC's temperature
        self.dynamics = EnsembleDynamics(state_dim, action_dim, config.model_hidden_dim, config.n_models,
                                         config.n_elites).to(device)
        capacity = config.rollout_batch_size * config.rollout_length * config.retain_rollouts
        self.model_buffer = ModelBuffer(capacity, state_dim, action_dim).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), config.actor_lr, foreach=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), config.critic_lr, foreach=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], config.actor_lr, foreach=True)
        self.target_entropy = -float(action_dim)
        self.rollouts, self.rollout_every = rollouts, config.rollout_every
        self.n_real = int(config.batch_size * config.real_ratio)  # the batch is n_real dataset rows, then model rows
        self.action_dim, self.n, self.cql_alpha = action_dim, config.num_sampled_actions, config.cql_alpha
        self.gamma, self.tau, self.backup_entropy = config.gamma, config.tau, config.backup_entropy

    def periodic(self, step: int) -> None:
        """Before updates 1, 1 + rollout_every, ...: rollouts from dataset states into D_model.  No reward penalty
        and so no uncertainty: COMBO's conservatism lives in the critic."""
        if (step - 1) % self.rollout_every:
            return
        rollout, valid = self.rollouts(self.dynamics, self.actor)
        self.model_buffer.add(self.rollouts.buffer_units(rollout), valid)

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        states, actions = batch["observations"], batch["actions"]
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            y = bellman_target(self.critic_target, self.actor, batch, alpha, self.gamma, self.backup_entropy)
        q = self.critic(states, actions)
        model_states, model_next_states = states[self.n_real:], batch["next_observations"][self.n_real:]
        logsumexp, _ = logsumexp_q(self.critic, self.actor, model_states, model_next_states, self.n, self.action_dim)
        gap = conservative_gap(logsumexp, q[:, :self.n_real])
        penalty = conservative_penalty(gap, self.cql_alpha)
        q_loss = critic_loss(q, y)
        self.critic_optimizer.zero_grad(set_to_none=True)
        (q_loss + penalty).backward()
        self.critic_optimizer.step()

        policy_actions, log_pi = self.actor.sample(states)
        pi_loss = actor_loss(self.critic(states, policy_actions).min(0).values, log_pi, alpha)
        self.actor_optimizer.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.actor_optimizer.step()
        alpha_loss = temperature_loss(self.log_alpha, log_pi, self.target_entropy)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        soft_update(self.critic_target, self.critic, self.tau)
        q_data, q_model = q.detach()[:, :self.n_real], q.detach()[:, self.n_real:]
        return {"critic_loss": q_loss.detach(), "q_target": y.mean(), "cql_gap": gap.detach().mean(),
                "actor_loss": pi_loss.detach(), "alpha": alpha, "entropy": -log_pi.detach().mean(),
                "q_data": q_data.mean(), "q_model": q_model.mean(),
                "model_reward": batch["rewards"][self.n_real:].mean(),
                "rollout_length": self.model_buffer.added / self.rollouts.n_rollouts,
                "model_holdout_mse": self.dynamics.elite_mse()}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach(),
                "dynamics": self.dynamics.state_dict(), "model_buffer": self.model_buffer.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "alpha_optimizer": self.alpha_optimizer.state_dict()}

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


def train(config: TrainConfig) -> dict:
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    termination = termination_function(config.termination_fn, dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std, scale = transition_buffer(data, config.normalize_states, config.normalize_reward, device)
    rollouts = ModelRollouts(buffer, mean, std, scale, termination, config.rollout_batch_size, config.rollout_length)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = Trainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device, rollouts)
    trainer.prepare = lambda run_dir: prepare_dynamics(config, trainer.dynamics, data, run_dir)  # fit() calls it
    policy = trainer.policy()

    def sample() -> dict[str, torch.Tensor]:  # does not change the trainer: rollouts happen in trainer.periodic
        return mixed_batch(buffer, trainer.model_buffer, config.batch_size, config.real_ratio)

    return fit(config, algo="combo", data=data, trainer=trainer, sample=sample,
               evaluate=make_evaluator(config, dataset, policy, mean, std, device),
               export=lambda path: export_policy(path, policy, mean, std),
               extra={"state_mean": mean, "state_std": std})


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
    """1000 / (max return - min return) over trajectories (Kostrikov et al. 2022, appendix B); refused when all
    returns are equal (a one-episode dataset)."""
    if not enabled:
        return 1.0
    returns = data["episode_returns"][data["episode_ends"] > 0]
    if not returns.max() - returns.min() > 1e-3:  # one episode, or all of one return: the scale would be absurd
        fail(f"normalize_reward scales rewards by 1000 / (max return - min return), but the dataset's {len(returns)} "
             f"episode(s) all return {returns.max():.6g}; pass --normalize_reward false.")
    return 1000.0 / float(returns.max() - returns.min())


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
    """DeviceBuffer of the dataset's transitions (with G when gamma is given), the state statistics (mean, std)
    that the policy needs at evaluation time, and the reward scale (what online episodes and model rollouts need)."""
    mean, std = state_statistics(data["observations"], normalize_states)
    scale = reward_scale(data, normalize_reward)
    return DeviceBuffer(transitions(data, mean, std, scale, gamma), device), mean, std, scale


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
            total, total_discounted = total + float(reward), total_discounted + discount * float(reward)
            discount, done = discount * EVAL_DISCOUNT, terminated or truncated
        returns.append(total)
        discounted.append(total_discounted)
    return {"returns": np.asarray(returns), "discounted_returns": np.asarray(discounted),
            "initial_states": np.asarray(initial_states, np.float32)}


def checked_environment(dataset_id: str, dataset) -> gym.Env:
    """The dataset's evaluation environment, before training: a dataset without one (no environment spec), or whose
    observations or actions have another shape than the environment's, is one sentence."""
    try:
        env = dataset.recover_environment(eval_env=True)
    except Exception as e:  # noqa: BLE001 - no environment spec, or one this machine cannot make
        fail(f"dataset {dataset_id!r} names no environment that can be made here ({' '.join(str(e).split())}); "
             f"these scripts evaluate their policy in it.")
    for what, env_space, data_space in (("observations", env.observation_space, dataset.observation_space),
                                        ("actions", env.action_space, dataset.action_space)):
        if env_space.shape != data_space.shape:
            fail(f"dataset {dataset_id!r} has {what} of shape {data_space.shape}, but its environment "
                 f"{env.spec.id} has {env_space.shape}.")
    return env


def make_evaluator(config, dataset, policy: nn.Module, mean: np.ndarray, std: np.ndarray, device: torch.device,
                   q_initial: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Callable[[], dict]:
    """Evaluation of `policy` (normalized states -> deterministic actions) in the dataset's eval env.
    run() returns the logged metrics and, under "episodes", what evaluate() measured per episode.  With
    q_initial (normalized states -> the critic's Q(s, pi(s))), also its mean over the episodes' initial states:
    the critic's own estimate of the discounted_return beside it (extrapolation error)."""
    env = checked_environment(config.dataset_id, dataset)
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


class DeployablePolicy(nn.Module):
    """Raw observations -> deterministic actions: the state normalization and the policy in one program."""

    def __init__(self, policy: nn.Module, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.policy = copy.deepcopy(policy).cpu().eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.policy((observations - self.mean) / self.std)


def export_policy(path: Path, policy: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """policy.pt2: a batch of raw observations [B, state_dim] -> deterministic actions [B, action_dim]; beside it,
    policy_weights.pt (policy_weights) when the policy is a tanh-squashed MLP, what fqe.py and tools read."""
    example = torch.zeros(2, len(mean))
    export_program(path, DeployablePolicy(policy, mean, std), (example,), ({0: torch.export.Dim.DYNAMIC},))
    weights = policy_weights(policy, mean, std)
    if weights is not None:
        torch.save(weights, path.with_name("policy_weights.partial.pt"))
        os.replace(path.with_name("policy_weights.partial.pt"), path.with_name(POLICY_WEIGHTS))


POLICY_WEIGHTS, WEIGHTS_FORMAT = "policy_weights.pt", "tanh-mlp-policy/1"


def policy_weights(policy: nn.Module, mean: np.ndarray, std: np.ndarray) -> Optional[dict]:
    """The policy as tensors and plain values only (torch.load(weights_only=True) reads them, and no code): the
    layers of policy.net, ReLU between them, the squashing max_action * tanh of the first action_dim outputs (the
    mean of a TanhGaussianPolicy's [mean, log_std]) and the state normalizer.  None when the policy is not such an
    MLP (bcq's), checked by comparing weights_policy's actions with the policy's own."""
    net, max_action = getattr(policy, "net", None), getattr(policy, "max_action", None)
    layers_ok = isinstance(net, nn.Sequential) and len(net) % 2 == 1 and all(
        isinstance(m, nn.Linear) if i % 2 == 0 else type(m) is nn.ReLU for i, m in enumerate(net))
    if not layers_ok or not isinstance(max_action, float):
        return None
    linears = [m for m in net if isinstance(m, nn.Linear)]
    probe = torch.randn(64, len(mean), generator=torch.Generator().manual_seed(0))  # the global RNG is not touched
    with torch.no_grad():
        actions = policy(probe.to(linears[0].weight.device)).float().cpu()
        weights = {"format": WEIGHTS_FORMAT, "activation": "relu",
                   "squashing": "max_action * tanh(outputs[:, :action_dim])", "action_dim": actions.shape[-1],
                   "max_action": max_action, "weights": [m.weight.detach().float().cpu().clone() for m in linears],
                   "biases": [m.bias.detach().float().cpu().clone() for m in linears],
                   "state_mean": torch.as_tensor(mean, dtype=torch.float32).clone(),
                   "state_std": torch.as_tensor(std, dtype=torch.float32).clone()}
        raw = probe * weights["state_std"] + weights["state_mean"]
        same = torch.allclose(weights_policy(weights)(raw), actions, atol=1e-5)
    return weights if same else None


def weights_policy(weights: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """policy_weights' dict -> raw observations [B, state_dim] -> actions [B, action_dim], a plain MLP."""
    def act(observations: torch.Tensor) -> torch.Tensor:
        x = (observations - weights["state_mean"]) / weights["state_std"]
        for i, (weight, bias) in enumerate(zip(weights["weights"], weights["biases"], strict=True)):
            x = nn.functional.linear(x, weight, bias)
            x = torch.relu(x) if i < len(weights["weights"]) - 1 else x
        return weights["max_action"] * torch.tanh(x[:, :weights["action_dim"]])

    return act
# --- transitions: end


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


# --- dynamics: begin
# The probabilistic ensemble of PETS/MBPO (Chua et al. 2018; Janner et al. 2019) trained as MOPO's code trains
# it, termination functions, model rollouts and the model buffer, the same in mopo.py and combo.py (source:
# tools/shared/dynamics.py).
#
#   loss = sum_i E_{(s,a,r,s')~D_i} mean_k [ (mu_ik - y_k)^2 / sigma_ik^2 + log sigma_ik^2 ],  y = (r, s' - s)
#          + sum_l w_l ||W_l||^2 / 2 + 0.01 ( sum max_logvar - sum min_logvar )
#   log sigma^2 = min_logvar + softplus( max_logvar - softplus(max_logvar - o) - min_logvar ),  o the raw output
#
# D_i is member i's bootstrap of the training split; inputs (s, a) are standardized inside the model.
# This is MBPO's model; MOPO's code adds spectral normalization and a separate variance head, left out here.

MODEL_WEIGHT_DECAY = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # w_l of the four hidden layers and the output (MBPO)
MODEL_STATE_EVERY_SECONDS = 60.0  # the model's training state is saved after the first epoch ending this long after the last save


def bounded_logvar(raw: torch.Tensor, min_logvar: torch.Tensor, max_logvar: torch.Tensor) -> torch.Tensor:
    """log sigma^2 softly kept inside the learned [min_logvar, max_logvar] (PETS, appendix A.1): the
    variance cannot collapse or explode on inputs far from the data."""
    logvar = max_logvar - F.softplus(max_logvar - raw)
    return min_logvar + F.softplus(logvar - min_logvar)


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per member [N]: E_batch mean_k [ (mu_k - y_k)^2 exp(-log sigma_k^2) + log sigma_k^2 ], the Gaussian
    negative log-likelihood without its constant and its factor 1/2 (as MBPO)."""
    return ((mean - target).pow(2) * torch.exp(-logvar) + logvar).mean((-2, -1))


class EnsembleDynamics(nn.Module):
    """N Gaussian models of (r, s' - s) given (s, a) with stacked weights: inputs [B, in] (shared by the
    members) or [N, B, in] (one batch each) -> mean, log-variance [N, B, 1 + state_dim]."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, n_models: int, n_elites: int):
        super().__init__()
        dims = [state_dim + action_dim] + [hidden_dim] * 4
        self.layers = nn.ModuleList([VectorizedLinear(d_in, d_out, n_models) for d_in, d_out in zip(dims[:-1], dims[1:])]
                                    + [OutputVectorizedLinear(hidden_dim, 2 * (1 + state_dim), n_models)])
        self.max_logvar = nn.Parameter(torch.full((1 + state_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1 + state_dim,), -10.0))
        self.register_buffer("input_mean", torch.zeros(state_dim + action_dim))
        self.register_buffer("input_std", torch.ones(state_dim + action_dim))
        self.register_buffer("elites", torch.arange(n_elites))
        self.register_buffer("holdout_mse", torch.zeros(n_models))
        self.n_models = n_models

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (inputs - self.input_mean) / self.input_std
        x = x.expand(self.n_models, *x.shape) if x.dim() == 2 else x
        for layer in self.layers[:-1]:
            x = F.silu(layer(x))
        mean, raw_logvar = self.layers[-1](x).chunk(2, -1)
        return mean, bounded_logvar(raw_logvar, self.min_logvar, self.max_logvar)

    def weight_decay(self) -> torch.Tensor:
        return sum(w * layer.weight.pow(2).sum() / 2 for w, layer in zip(MODEL_WEIGHT_DECAY, self.layers))

    def elite_mse(self) -> torch.Tensor:
        """The elites' mean holdout MSE: how well the members that roll out fit unseen transitions."""
        return self.holdout_mse[self.elites].mean()

    @torch.no_grad()
    def step(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """s' and r sampled from the Gaussian of one random elite per row, and every member's log sigma^2 [N, B, k]."""
        mean, logvar = self(torch.cat([states, actions], -1))
        rows = torch.arange(len(states), device=states.device)
        member = self.elites[torch.randint(len(self.elites), (len(states),), device=states.device)]
        sample = mean[member, rows] + torch.exp(0.5 * logvar[member, rows]) * torch.randn_like(mean[0])
        return states + sample[:, 1:], sample[:, 0], logvar


def dynamics_loss(model: EnsembleDynamics, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    mean, logvar = model(inputs)
    bounds = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
    return gaussian_nll(mean, logvar, targets).sum() + model.weight_decay() + bounds


@torch.no_grad()
def holdout_mse(model: EnsembleDynamics, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per member [N]: mean squared error of mu_i on held-out transitions."""
    return (model(inputs)[0] - targets).pow(2).mean((-2, -1))


@torch.no_grad()
def choose_elites(model: EnsembleDynamics, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The n_elites members with the lowest holdout MSE become the elites; returns their mean holdout MSE."""
    model.holdout_mse.copy_(holdout_mse(model, inputs, targets))
    model.elites.copy_(torch.argsort(model.holdout_mse)[:len(model.elites)])
    return float(model.elite_mse())


def model_data(data: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = np.concatenate([data["observations"], data["actions"]], 1)
    targets = np.concatenate([data["rewards"][:, None], data["next_observations"] - data["observations"]], 1)
    return torch.as_tensor(inputs, device=device), torch.as_tensor(targets, device=device)


def save_model_training(path: str, model: EnsembleDynamics, optimizer: torch.optim.Optimizer, best_weights: list,
                        best_mse: torch.Tensor, order: torch.Tensor, bootstrap: torch.Tensor, epoch: int,
                        stale: int) -> None:
    """Everything train_dynamics needs to go on after `epoch`, the random state included, as tensors and plain
    values (loaded with weights_only=True), written through a temporary file (an interrupted write leaves the
    previous state)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best_weights": best_weights,
             "best_mse": best_mse, "order": order, "bootstrap": bootstrap, "epoch": epoch, "stale": stale,
             "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if order.is_cuda else None}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_model_training(path: str, model: EnsembleDynamics, optimizer: torch.optim.Optimizer,
                        best_weights: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Restores what save_model_training wrote; returns best_mse, order, bootstrap, epoch and stale."""
    try:
        state = torch.load(path, map_location=model.input_mean.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            for best, saved in zip(best_weights, state["best_weights"], strict=True):
                best.copy_(saved)
    except Exception as e:  # noqa: BLE001 - corrupt or unsafe files and states of another model
        fail(f"{path} is not the training state of this dynamics model ({type(e).__name__}); delete it to train "
             f"the model from the start.")
    torch.set_rng_state(state["rng"].cpu())
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    print(f"dynamics model training resumed after epoch {state['epoch']} from {path}", flush=True)
    return state["best_mse"], state["order"], state["bootstrap"], state["epoch"], state["stale"]


def train_dynamics(model: EnsembleDynamics, data: dict[str, np.ndarray], config, state_path: Optional[str] = None,
                   min_improvement: float = 0.01) -> tuple[float, int]:
    """MBPO's recipe as MOPO runs it: hold out holdout_ratio of the transitions (at most max_holdout), train
    each member on its own bootstrap of the rest, keep each member's weights from its best holdout epoch,
    stop once more than model_patience epochs in a row passed in which no member improved its holdout MSE
    by `min_improvement` (relative), then choose the elites.  A progress bar counts the model's updates and
    shows the holdout MSE of the last epoch.  With state_path, the training state is saved there about every
    MODEL_STATE_EVERY_SECONDS, and a state found there is resumed (to the same model as an uninterrupted run).
    Returns the elites' mean holdout MSE and the epochs run."""
    device = model.input_mean.device
    inputs, targets = model_data(data, device)
    n_holdout = max(1, min(int(config.holdout_ratio * len(inputs)), config.max_holdout))
    order = torch.randperm(len(inputs), device=device)
    holdout, train = order[:n_holdout], order[n_holdout:]
    model.input_mean.copy_(inputs[train].mean(0))
    model.input_std.copy_(torch.where(inputs[train].std(0) < 1e-12, 1.0, inputs[train].std(0)))
    optimizer = torch.optim.Adam(model.parameters(), config.model_lr, foreach=True)
    members = [p for layer in model.layers for p in layer.parameters()]  # every one has the member axis first
    best_weights = [p.detach().clone() for p in members]
    best_mse = torch.full((model.n_models,), 1e10, device=device)
    bootstrap = train[torch.randint(len(train), (model.n_models, len(train)), device=device)]
    epoch, stale = 0, 0
    if state_path is not None and os.path.exists(state_path):
        best_mse, order, bootstrap, epoch, stale = load_model_training(state_path, model, optimizer, best_weights)
        holdout, train = order[:n_holdout], order[n_holdout:]
    batches = math.ceil(len(train) / config.model_batch_size)
    bar = tqdm(total=None if config.model_max_epochs is None else config.model_max_epochs * batches,
               initial=epoch * batches, desc="dynamics model", unit="update", mininterval=5)
    saved_at = time.monotonic()
    while stale <= config.model_patience and (config.model_max_epochs is None or epoch < config.model_max_epochs):
        shuffled = bootstrap.gather(1, torch.argsort(torch.rand(bootstrap.shape, device=device), 1))
        for start in range(0, len(train), config.model_batch_size):
            rows = shuffled[:, start:start + config.model_batch_size]
            loss = dynamics_loss(model, inputs[rows], targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
        epoch += 1
        mse = holdout_mse(model, inputs[holdout], targets[holdout])
        improved = (best_mse - mse) / best_mse > min_improvement
        with torch.no_grad():
            for p, best in zip(members, best_weights):
                best[improved] = p[improved]
        best_mse = torch.where(improved, mse, best_mse)
        stale = 0 if bool(improved.any()) else stale + 1  # a host sync per epoch, outside the policy updates
        bar.set_postfix(epoch=epoch, holdout_mse=f"{float(mse.mean()):.5f}", epochs_without_gain=stale, refresh=False)
        if state_path is not None and time.monotonic() - saved_at >= MODEL_STATE_EVERY_SECONDS:
            save_model_training(state_path, model, optimizer, best_weights, best_mse, order, bootstrap, epoch, stale)
            saved_at = time.monotonic()
    bar.close()
    with torch.no_grad():
        for p, best in zip(members, best_weights):
            p.copy_(best)
    return choose_elites(model, inputs[holdout], targets[holdout]), epoch


def no_termination(states: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(states), dtype=torch.bool, device=states.device)


def hopper_termination(states: torch.Tensor) -> torch.Tensor:
    """Hopper-v5's health check on s' (its observation drops x, so s[0] is the height z and s[1] the torso
    angle): healthy iff z > 0.7, |angle| < 0.2 and |s[1:]| < 100."""
    return ~((states[:, 0] > 0.7) & (states[:, 1].abs() < 0.2) & (states[:, 1:].abs() < 100).all(-1))


def walker2d_termination(states: torch.Tensor) -> torch.Tensor:
    """Walker2d-v5's health check on s': healthy iff 0.8 < z = s[0] < 2 and -1 < angle = s[1] < 1."""
    return ~((states[:, 0] > 0.8) & (states[:, 0] < 2.0) & (states[:, 1].abs() < 1.0))


TERMINATIONS = {"none": no_termination, "hopper": hopper_termination, "walker2d": walker2d_termination}
ENV_TERMINATIONS = {"Hopper": "hopper", "Walker2d": "walker2d", "HalfCheetah": "none", "Pendulum": "none"}


def termination_function(name: str, dataset) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model cannot predict episode ends, so each environment's termination rule is written out."""
    if name == "auto":
        env_id = dataset.env_spec.id if dataset.env_spec is not None else "unknown"
        name = ENV_TERMINATIONS.get(env_id.split("/")[-1].split("-v")[0])
        if name is None:
            fail(f"no termination function is known for environment {env_id!r}; pass --termination_fn none if its "
                 f"episodes only end by time limit, or add its health check to TERMINATIONS.")
    if name not in TERMINATIONS:
        fail(f"termination_fn {name!r} is not one of auto, {', '.join(TERMINATIONS)}.")
    return TERMINATIONS[name]


@torch.no_grad()
def model_rollout(model: EnsembleDynamics, policy: Callable[[torch.Tensor], torch.Tensor], states: torch.Tensor,
                  horizon: int, termination: Callable[[torch.Tensor], torch.Tensor],
                  uncertainty: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> tuple[dict, torch.Tensor]:
    """h steps a ~ pi(.|s), (s', r) ~ T_theta(.|s, a) from every start state, in the dataset's raw units.
    A rollout ends at a termination, and, in every environment, at a step whose s' or r is not finite: that
    step is dropped and the rollout continues no further (a diverging model must not fill D_model with inf).
    An ended rollout stays in the batch (fixed shapes: no host sync) and its later steps are marked invalid.
    Returns the h * B transitions, with uncertainty(log sigma^2) per transition when a method asks for it,
    and the validity mask."""
    alive = torch.ones(len(states), dtype=torch.bool, device=states.device)
    steps = []
    for _ in range(horizon):
        actions = policy(states)
        next_states, rewards, logvar = model.step(states, actions)
        finite = torch.isfinite(next_states).all(-1) & torch.isfinite(rewards)
        terminals = termination(next_states)
        step = {"observations": states, "actions": actions, "rewards": rewards, "next_observations": next_states,
                "terminals": terminals.float(), "valid": alive & finite}
        if uncertainty is not None:
            step["uncertainty"] = uncertainty(logvar)
        steps.append(step)
        alive = alive & finite & ~terminals
        states = torch.where(finite[:, None], next_states, states)  # ended rows keep stepping from finite states
    transitions = {k: torch.cat([step[k] for step in steps]) for k in steps[0]}
    return transitions, transitions.pop("valid")


class ModelBuffer(nn.Module):
    """D_model: a ring buffer of the last `capacity` model transitions on the device.  Its write position,
    fill level and the rows of the last write are device tensors, so that adding, sampling and logging never
    wait for the device: the invalid rows of a write go to a scratch row past the end, never sampled."""

    KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")

    def __init__(self, capacity: int, state_dim: int, action_dim: int):
        super().__init__()
        shapes = {"observations": (state_dim,), "actions": (action_dim,), "rewards": (),
                  "next_observations": (state_dim,), "terminals": ()}
        for key, shape in shapes.items():
            self.register_buffer(key, torch.zeros(capacity + 1, *shape))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("added", torch.zeros((), dtype=torch.long))  # / n_rollouts: the mean rollout length
        self.capacity = capacity

    def add(self, transitions: dict[str, torch.Tensor], valid: torch.Tensor) -> None:
        rank = torch.cumsum(valid.long(), 0) - 1
        rows = torch.where(valid, (self.position + rank) % self.capacity, self.capacity)
        for key in self.KEYS:
            column = getattr(self, key)
            column[rows] = transitions[key]
            column[self.capacity] = 0.0
        self.added.copy_(valid.sum())
        self.position.copy_((self.position + self.added) % self.capacity)
        self.filled.copy_((self.filled + self.added).clamp(max=self.capacity))

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        rows = torch.randint(0, 2**62, (batch_size,), device=self.filled.device) % self.filled
        return {key: getattr(self, key)[rows] for key in self.KEYS}


class ModelRollouts:
    """What rollouts need besides the model and the policy: n_rollouts start states drawn from the dataset
    buffer, its state statistics (the buffer and D_model hold normalized states and scaled rewards, the
    model raw ones), the reward scale, the environment's termination rule and the horizon h."""

    def __init__(self, dataset: "DeviceBuffer", mean: np.ndarray, std: np.ndarray, reward_scale: float,
                 termination: Callable[[torch.Tensor], torch.Tensor], n_rollouts: int, horizon: int):
        self.mean, self.std = (torch.as_tensor(x, dtype=torch.float32, device=dataset.device) for x in (mean, std))
        self.dataset, self.reward_scale, self.termination = dataset, reward_scale, termination
        self.n_rollouts, self.horizon = n_rollouts, horizon

    @torch.no_grad()
    def __call__(self, model: EnsembleDynamics, actor: nn.Module,
                 uncertainty: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> tuple[dict, torch.Tensor]:
        """model_rollout from n_rollouts dataset states with a ~ pi(.|s) (actor.sample), in raw units."""
        starts = self.dataset.sample(self.n_rollouts)["observations"] * self.std + self.mean
        return model_rollout(model, lambda s: actor.sample((s - self.mean) / self.std)[0], starts, self.horizon,
                             self.termination, uncertainty)

    def buffer_units(self, transitions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"observations": (transitions["observations"] - self.mean) / self.std, "actions": transitions["actions"],
                "rewards": transitions["rewards"] * self.reward_scale,
                "next_observations": (transitions["next_observations"] - self.mean) / self.std,
                "terminals": transitions["terminals"]}


def mixed_batch(dataset: "DeviceBuffer", model_buffer: ModelBuffer, batch_size: int, real_ratio: float) -> dict:
    """int(batch_size * real_ratio) dataset transitions, then the rest of the batch from D_model."""
    n_real = int(batch_size * real_ratio)
    real, fake = dataset.sample(n_real), model_buffer.sample(batch_size - n_real)
    return {k: torch.cat([real[k], fake[k]]) for k in real}


def prepare_dynamics(config, model: EnsembleDynamics, data: dict[str, np.ndarray], run_dir: Path) -> None:
    """The model is trained once, before the policy, by fit's call of trainer.prepare(run_dir), in the run directory
    it has locked (after --resume false moved an earlier run aside, and after run.json refused other learning fields,
    the model's included): not at all when resuming (the checkpoint holds it), loaded when dynamics_path names a saved
    one (or, when resuming, the run saved one before its first checkpoint), else trained and saved to
    <run directory>/dynamics.pt."""
    if config.resume and (run_dir / "checkpoint.pt").exists():
        return
    saved = run_dir / "dynamics.pt"
    path = config.dynamics_path or (str(saved) if config.resume and saved.exists() else None)
    if path is not None:
        if not os.path.isfile(path):
            fail(f"dynamics_path {path} does not exist.")
        try:
            model.load_state_dict(torch.load(path, map_location=model.input_mean.device, weights_only=True))
        except Exception as e:  # noqa: BLE001 - corrupt or unsafe files and models of another shape
            fail(f"{path} is not a dynamics model of this dataset and config ({type(e).__name__}).")
        print(f"dynamics model loaded from {path}: elite holdout MSE {float(model.elite_mse()):.5f}", flush=True)
        return
    state_path = run_dir / "dynamics_training.pt"  # the model's own resume point: its training takes hours on a CPU
    if not config.resume:
        state_path.unlink(missing_ok=True)
    mse, epochs = train_dynamics(model, data, config, str(state_path))
    torch.save(model.state_dict(), saved.with_suffix(".tmp"))
    os.replace(saved.with_suffix(".tmp"), saved)
    state_path.unlink(missing_ok=True)
    print(f"dynamics model trained for {epochs} epochs: elite holdout MSE {mse:.5f}, elites "
          f"{model.elites.tolist()}; saved to {saved}", flush=True)
# --- dynamics: end


# --- shared: begin
# The plumbing every script shares, byte-identical in all of them: the command line, seeding and device, Minari
# loading and checks, normalization, mlp, the normalized score, the exported program, the run directory, logging,
# checkpoints and the training loop fit().  One source: tools/shared/appendix.py; edit it, run `python -m tools.sync_shared`.

EVAL_DISCOUNT = 0.99  # gamma of the discounted returns that evaluation logs beside the returns (for OPE)
MAX_MAGNITUDE = 1e6  # no observation, action or reward of these environments comes near it: a corrupt file
# Fields that do not change what is learned: a run may resume under other values of these.
RUN_FIELDS = ("eval_every", "eval_episodes", "checkpoints_path", "resume", "stop_after", "logging", "project",
              "device", "compile")


def fail(message: str) -> None:
    """Bad input ends the run with one sentence and a non-zero exit status, not a stack trace."""
    raise SystemExit(f"error: {message}")


def decode_bool(value) -> bool:
    """pyrallis's decoder of bool fields (YAML has read the text): true/false, yes/no or 1/0; `maybe` is refused."""
    if not isinstance(value, float) and str(value).lower() in ("true", "false", "yes", "no", "1", "0"):
        return str(value).lower() in ("true", "yes", "1")
    raise ValueError(f"must be true or false, got {value!r}")


def decode_int(value) -> int:
    """pyrallis's decoder of int fields: an integer; 1.5, and 5e9 (which YAML reads as text), are refused."""
    if isinstance(value, int) and not isinstance(value, bool) or str(value).strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError(f"must be an integer, got {value!r}")


def decode_float(value) -> float:
    """pyrallis's decoder of float fields: a finite number; text such as 1e-3 (YAML reads no float without a dot)
    through float(); nan, inf and 1e999 (inf to float()) are refused."""
    try:
        if not isinstance(value, bool) and math.isfinite(float(value)):
            return float(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"must be a finite number, got {value!r}")


for kind, decoder in ((bool, decode_bool), (int, decode_int), (float, decode_float)):
    pyrallis.decode.register(kind, decoder)
pyrallis.decode.register(Optional[int], lambda value: None if value is None else decode_int(value))


def check_ranges(config, **ranges) -> None:
    """Called by each TrainConfig's __post_init__: every field in its range, before anything is written.  `ranges`
    gives the script's own: "0 or more", "at least 1", "above 0", an interval such as "in [0, 1)", or a tuple of the
    allowed strings; any other integer is a count or a size (at least 1), any other float a weight, scale or rate
    (0 or more; a learning rate, *_lr, above 0)."""
    ranges = {"seed": f"in [0, {2 ** 32})", "stop_after": "0 or more", "logging": ("offline", "online", "disabled"),
              "precision": ("fp32", "bf16"), "batch_size": f"in [1, {2 ** 20}]",
              **{field.name: "above 0" for field in dataclasses.fields(config) if field.name.endswith("_lr")}, **ranges}
    for field in dataclasses.fields(config):
        name, value = field.name, getattr(config, field.name)
        what = ranges.get(name, {int: "at least 1", float: "0 or more"}.get(field.type))
        if isinstance(what, tuple):
            ok, what = value in what, f"{', '.join(what[:-1])} or {what[-1]}"
        elif isinstance(what, str) and what.startswith("in "):
            low, high = map(float, what[4:-1].split(","))
            ok = (low <= value, low < value)[what[3] == "("] and (value <= high, value < high)[what[-1] == ")"]
        else:
            ok = what is None or {"0 or more": value >= 0, "at least 1": value >= 1, "above 0": value > 0}[what]
        if not ok:
            fail(f"{name} must be {what}, got {value!r}.")


class ArgumentParser(pyrallis.argparsing.ArgumentParser):
    """pyrallis's parser (--help lists every field with its comment) whose complaints are one line, exit status 2:
    an unknown or abbreviated flag, a flag without its value, a stray word, and those of parse_config."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def parse_config(config_class):
    """TrainConfig through pyrallis: the YAML file of --config_path (an empty file: every default), then the
    --<field> <value> flags, each value through the strict decoders above, then the ranges (TrainConfig's
    __post_init__) and the device.  Bad input is one `error:` line, exit status 2, and nothing written."""
    import yaml

    parser = ArgumentParser(config_class=config_class, allow_abbrev=False)
    path_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    path_parser.add_argument("--config_path")
    try:
        known, argv = path_parser.parse_known_args()
        values = yaml.safe_load(Path(known.config_path).read_text(encoding="utf-8")) if known.config_path else None
    except argparse.ArgumentError as e:  # --config_path without its value
        parser.error(str(e))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        parser.error(f"config file {known.config_path} is not readable UTF-8 YAML ({' '.join(str(e).split())}).")
    names = {field.name: field.type in (str, Optional[str]) for field in dataclasses.fields(config_class)}  # True: text
    unknown = [f"a {type(values).__name__}"] if not isinstance(values, dict) else sorted(set(map(str, values)) - set(
        names)) + [f"{k}: {v}" for k, v in values.items() if names.get(k) and type(v) in (dict, list)]
    if values is not None and unknown:
        parser.error(f"config file {known.config_path} must map TrainConfig fields to values, "
                     f"not {', '.join(unknown)}; fields: {', '.join(names)}.")
    parser.config_path = known.config_path if values else None  # pyrallis reads the file, then the flags over it
    try:
        config = parser.parse_args(argv)
        pick_device(config.device)
    except pyrallis.ParsingError as e:  # '... field "<class ...>.name" of type ... error is "ValueError: why"'
        found = re.search(r'\.(\w+)" of type .*Underlying error is "\w+: (.*)"', str(e), re.S)
        why = found and (found[2] if found[2].startswith("must") else f"cannot be read: {found[2]}")
        parser.error(f"{found[1]} {why}." if found else " ".join(str(e).split()))
    except SystemExit as e:  # a fail() of a range check or of the device
        if not isinstance(e.code, str):  # --help, or the parser's own error()
            raise
        parser.error(e.code.removeprefix("error: "))
    return config


def set_seed(seed: int) -> None:
    for seed_with in (random.seed, np.random.seed, torch.manual_seed):
        seed_with(seed)


def pick_device(name: str) -> torch.device:
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        fail(f"unknown device {name!r}; use auto, cpu, cuda or cuda:<index>.")
    if device.type not in ("cpu", "cuda") or device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        fail(f"device {name!r} is not available on this machine ({torch.cuda.device_count()} CUDA devices); "
             f"use auto, cpu, cuda or cuda:<index>.")
    return device


def load_dataset(dataset_id: str):
    """Minari dataset from disk, else downloaded; a missing one, or one whose observations or actions are not flat
    continuous vectors (what these scripts handle), is one clear sentence."""
    import minari
    from minari.storage import get_dataset_path

    try:
        dataset = minari.load_dataset(dataset_id)
    except FileNotFoundError:
        try:
            dataset = minari.load_dataset(dataset_id, download=True)
        except Exception:  # noqa: BLE001 - no network, or an id the remote does not know
            fail(f"dataset {dataset_id!r} is not in {get_dataset_path(dataset_id)} nor downloadable; build local/ ids "
                 f"with python -m tools.make_datasets in this project's repository, or a Minari id: mujoco/hopper/medium-v0")
    except Exception as e:  # noqa: BLE001 - a malformed id or a broken dataset directory
        fail(f"could not load dataset {dataset_id!r}: {' '.join(str(e).split())}")
    spaces = (dataset.observation_space, dataset.action_space)
    if not all(isinstance(space, gym.spaces.Box) and len(space.shape) == 1 for space in spaces):
        fail(f"this script handles flat continuous observations and actions (Box vectors); "
             f"the dataset has observations {spaces[0]} and actions {spaces[1]}.")
    return dataset


def flatten_episodes(dataset) -> dict[str, np.ndarray]:
    """Episodes -> transitions; each episode's fields must match the dataset's spaces and its step count (the length
    of most of its fields).  terminals come from terminations only (a time-limit truncation is not a terminal);
    next_observations come from the same episode; episode_ids and episode_returns let methods work per trajectory."""
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals",
                               "episode_ends", "episode_ids", "episode_returns")}
    shapes = {"observations": dataset.observation_space.shape, "actions": dataset.action_space.shape, "rewards": (),
              "terminations": (), "truncations": ()}
    try:
        for i, ep in enumerate(dataset.iterate_episodes()):
            n = int(np.median([len(getattr(ep, key)) - (key == "observations") for key in shapes]))
            for key, shape in ((key, (n + (key == "observations"), *shape)) for key, shape in shapes.items()):
                if np.shape(getattr(ep, key)) != shape:
                    fail(f"dataset {dataset.spec.dataset_id!r}: episode {i}'s {key} have shape "
                         f"{np.shape(getattr(ep, key))}, not {shape} (its other fields have {n} steps).")
            for column, value in zip(columns.values(), (
                    ep.observations[:-1], ep.actions, ep.rewards, ep.observations[1:], ep.terminations,
                    np.arange(n) == n - 1, np.full(n, i), np.full(n, np.sum(ep.rewards, dtype=np.float64)))):
                column.append(value)
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
    return {k: v if k == "episode_ids" else v.astype(np.float32) for k, v in data.items()}


def data_summary(dataset_id: str, data: Optional[dict[str, np.ndarray]]) -> Optional[dict]:
    """The id, episodes, transitions and a content hash of flatten_episodes' arrays, for run.json: two builds of a
    dataset id (builds of a collected dataset on two machines have differed) are told apart."""
    digest = hashlib.sha256()
    for key in sorted(data or {}):
        digest.update(key.encode() + np.ascontiguousarray(data[key]).tobytes())
    return data and {"id": dataset_id, "episodes": int(data["episode_ends"].sum()), "transitions": len(data["rewards"]),
                     "sha256": digest.hexdigest()}


def state_statistics(observations: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the observations, computed in float64 so that large values cannot overflow."""
    if not enabled:
        return np.zeros(observations.shape[1], np.float32), np.ones(observations.shape[1], np.float32)
    values = np.asarray(observations, np.float64)
    return values.mean(0).astype(np.float32), (values.std(0) + 1e-3).astype(np.float32)


class OutputLinear(nn.Linear):
    """A network's output layer: fp32 even under --precision bf16, whose autocast runs only the hidden layers in bf16
    (CPU autocast keeps exp, logsumexp, tanh, ... in bf16 once fed bf16), so Q- and V-values, means and log-stds,
    and all computed from them (targets, losses, weights, log-probabilities) stay fp32; under fp32, nn.Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int = 2) -> nn.Sequential:
    dims = [in_dim] + [hidden_dim] * n_hidden
    hidden = [layer for d_in, d_out in zip(dims, dims[1:]) for layer in (nn.Linear(d_in, d_out), nn.ReLU())]
    return nn.Sequential(*hidden, OutputLinear(dims[-1], out_dim))


def normalized_score(dataset, returns: np.ndarray) -> float:
    """D4RL score: 100 * (return - random) / (expert - random); NaN when the dataset has no references."""
    import minari

    try:
        return float(100 * np.mean(minari.get_normalized_score(dataset, returns)))
    except Exception:  # noqa: BLE001 - datasets without ref_min_score / ref_max_score
        return math.nan


def export_program(path: Path, module: nn.Module, example_inputs: tuple, dynamic_shapes) -> None:
    """A torch.export program that `torch.export.load(path).module()` runs with torch alone (.pt2 is
    torch.export's suffix).  Loading a .pt2 runs code its author chose: load only files you trust."""
    with torch.no_grad():
        program = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes)
    tmp = path.with_name(path.stem + ".partial.pt2")
    torch.export.save(program, tmp)
    os.replace(tmp, path)


def run_directory(config, algo: str) -> Path:
    return Path(config.checkpoints_path or os.path.join("runs", algo, config.dataset_id, f"seed{config.seed}"))


def learning_fields(config, fixed: tuple[str, ...]) -> dict:
    """The fields that decide what is learned (max_steps only where a schedule depends on it: `fixed`)."""
    return {k: v for k, v in asdict(config).items() if k not in RUN_FIELDS and (k != "max_steps" or k in fixed)}


def open_run(config, algo: str, fixed: tuple[str, ...], data: Optional[dict]) -> tuple[Path, object]:
    """The locked run directory and its run.json, the record of the config the run started with and of the data it
    read: a resume under other learning fields is refused; with --resume false an earlier run there is moved aside
    whole."""
    run_dir = run_directory(config, algo)
    lock = lock_run(run_dir)
    files = [record := run_dir / "run.json", *(run_dir / n for n in ("checkpoint.pt", "log.jsonl", "finished.json"))]
    learning, kept = learning_fields(config, fixed), [f for f in files if f.exists() and f.stat().st_size]
    if kept and (not config.resume or files[1] not in kept and kept != [record]):  # a run without its checkpoint too
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(run_dir, aside)
        print(f"the earlier run in {run_dir} was moved to {aside}.")
        lock.close()
        lock = lock_run(run_dir)
    elif record.exists():
        before = (read_json(record) or {}).get("config")
        changed = [f"{k}: {before[k]!r} there, {v!r} now" for k, v in learning.items() if before.get(k, v) != v] \
            if isinstance(before, dict) else ["its run.json is not readable"]
        if changed:
            lock.close()
            fail(f"{run_dir} holds a run of another config ({'; '.join(changed)}); pass --resume false to "
                 f"start it over, or another --checkpoints_path.")
    write_atomic(record, json.dumps({"algo": algo, "config": asdict(config), "torch": torch.__version__,
                                     "dataset": data_summary(config.dataset_id, data),
                                     "command": [Path(sys.executable).name, *sys.argv]}, indent=1))
    print(f"run directory: {run_dir}", flush=True)
    return run_dir, lock


def lock_run(run_dir: Path):
    """An exclusive lock on run_dir/run.lock, held until the process ends (kill -9 releases it too); none where the
    OS has no fcntl (Windows)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / "run.lock", "w")
    except OSError as e:
        fail(f"cannot write the run directory {run_dir} ({e.strerror or type(e).__name__}); pass another --checkpoints_path.")
    try:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except BlockingIOError:
        fail(f"another run is writing {run_dir}; wait for it, or pass another --checkpoints_path.")
    return lock


def read_json(path: Path) -> Optional[dict]:
    """The JSON object in path, else None (a missing, cut or foreign file)."""
    try:
        return value if isinstance(value := json.loads(path.read_text()), dict) else None
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLog:
    """A JSON-lines file beside the checkpoints, plus wandb unless logging is "disabled".  wall_time counts
    the seconds of the whole run: a resumed run starts its clock at the `elapsed` its checkpoint carried,
    and the rows written after that checkpoint (by an interrupted call, a last one cut by a kill included) are dropped.
    A non-finite loss ends the run, its row written, the last good checkpoint kept."""

    def __init__(self, config, algo: str, run_dir: Path, start: int, elapsed: float, fixed: tuple[str, ...],
                 counters: Callable[[], dict] = dict):
        path, self.run_dir = run_dir / "log.jsonl", run_dir
        rows = [r for r in path.read_text().split("\n")[:-1] if json.loads(r)["step"] <= start] if path.exists() else []
        write_atomic(path, "".join(r + "\n" for r in rows))
        self.last = json.loads(rows[-1]) if rows else {}
        self.file, self.start, self.counters = open(path, "a"), time.time() - elapsed, counters
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
        if not all(math.isfinite(v) for k, v in values.items() if k.startswith("train/")):
            self.close()
            fail(f"a loss became NaN or infinite at update {step}; the last good checkpoint is kept in {self.run_dir}.")
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
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def resume(path: Path, trainer, device: torch.device) -> tuple[int, float]:
    """Loads the trainer and the RNG states; returns the update and the seconds trained so far.  Only tensors and
    plain values are loaded: a file holding anything else (objects whose loading could run code, as checkpoints of
    the older, pickled format do) is refused."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or unsafe files
        fail(f"checkpoint {path} is corrupt, of an older format, or holds objects other than tensors and plain "
             f"values ({type(e).__name__}); it was not loaded: delete it or pass --resume false.")
    try:
        trainer.load_state_dict(state["trainer"])
        rng, step, wall_time = state["rng"], state["step"], state["wall_time"]
        kind, keys, position, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in rng["python"]))
        torch.set_rng_state(rng["torch"].cpu())
    except (KeyError, RuntimeError, ValueError, AttributeError, TypeError, IndexError) as e:
        fail(f"checkpoint {path} does not match this script and config ({type(e).__name__}); "
             f"delete it or pass --resume false.")
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return step, wall_time


def fit(config, *, algo: str, trainer, sample: Callable[[], dict], evaluate: Callable[[], dict],
        export: Callable[[Path], None] = lambda path: None, extra: Optional[dict] = None,
        fixed: tuple[str, ...] = (), steps: Optional[int] = None, data: Optional[dict] = None) -> dict:
    """The loop every script shares.  The trainer's contract: update(batch, step) -> dict of detached tensors
    (step = 1, 2, ... counts updates, for host-side schedules), state_dict() / load_state_dict() (what a checkpoint
    holds), an attribute `device`, and optionally prepare(run_dir), called in the locked run directory before the
    loop (a dynamics model), periodic(step), before every update (refreshing returns, rollouts, online episodes),
    and counters(), host numbers in every log row beside step (env_steps); the update runs under bf16 autocast when
    config.precision is bf16 (periodic work, evaluation and export in fp32).  `steps`: the run's updates, max_steps
    unless an online phase adds its own.  Every eval_every updates, at max_steps and at the end: evaluate, log,
    checkpoint, and export(run_dir / "policy.pt2").  `fixed`: fields besides the learning ones that a resume may not
    change (max_steps, where a schedule depends on it).  stop_after or a signal ends the call early with a
    checkpoint that the same command resumes.  `data`: flatten_episodes' arrays, whose size and hash run.json
    records.  A finished run writes finished.json (its last evaluation); returns the last evaluation."""
    run_dir, lock = open_run(config, algo, fixed, data)
    with lock:  # released when this call ends, however it ends
        checkpoint, finished = run_dir / "checkpoint.pt", run_dir / "finished.json"
        start, elapsed = resume(checkpoint, trainer, trainer.device) if checkpoint.exists() else (0, 0.0)
        getattr(trainer, "prepare", lambda run_dir: None)(run_dir)
        total = config.max_steps if steps is None else steps
        if start >= total and (done := read_json(finished)) is not None:
            print(f"{run_dir}: already trained for {start} updates (of {total}); nothing to do.")
            return done
        finished.unlink(missing_ok=True)  # a continuation (a larger max_steps): not finished until it ends
        update = torch.compile(trainer.update) if config.compile else trainer.update
        periodic = getattr(trainer, "periodic", lambda step: None)
        log = RunLog(config, algo, run_dir, start, elapsed, fixed, getattr(trainer, "counters", dict))
        log_every = max(1, min(1000, config.eval_every))
        last = min(total, start + config.stop_after) if config.stop_after else total
        stop, result = [], {}  # stop: SIGINT (Ctrl-C) or SIGTERM asks to checkpoint after the current update and exit
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.append(signum))
        for step in trange(start + 1, last + 1, desc=f"{algo} {config.dataset_id}", mininterval=5):
            periodic(step)
            with torch.autocast(trainer.device.type, torch.bfloat16, enabled=config.precision == "bf16"):
                metrics = update(sample(), step)  # hidden layers in bf16 under bf16, outputs fp32 (OutputLinear)
            if step % config.eval_every == 0 or step in (config.max_steps, total):  # evaluate, log, checkpoint, export
                evaluation = {f"eval/{k}": v for k, v in evaluate().items() if k != "episodes"}
                values = log.write(step, {**{f"train/{k}": v for k, v in metrics.items()}, **evaluation})
                save_checkpoint(checkpoint, step, trainer, config, extra or {}, log.elapsed())
                export(run_dir / "policy.pt2")
                result = {k: v for k, v in values.items() if k.startswith("eval/")}
                print(f"step {step}: " + ", ".join([f"{k} {v}" for k, v in log.counters().items()]
                                                   + [f"{k[5:]} {v:.2f}" for k, v in result.items()]), flush=True)
            elif step % log_every == 0:
                log.write(step, {f"train/{k}": v for k, v in metrics.items()})
            if stop or (step == last < total):
                save_checkpoint(checkpoint, step, trainer, config, extra or {}, log.elapsed())
                log.close()
                print(f"stopped at update {step} of {total}; the same command resumes from {checkpoint}.")
                if stop:
                    raise SystemExit(128 + stop[0])
                return result
        if start >= total:  # the last update and its evaluation were done; the call ended before this
            result = {k: v for k, v in log.last.items() if k.startswith("eval/")}
            export(run_dir / "policy.pt2")
        log.close()
        write_atomic(finished, json.dumps({"step": total, **result}))
        return result
# --- shared: end


if __name__ == "__main__":
    train(parse_config(TrainConfig))
