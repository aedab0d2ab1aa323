# TD3+BC (Fujimoto, Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning").
# Chapter: 21.3.3 "TD3+BC" and the robotics document's "TD3+BC" section.
#
#   critic:  y = r + gamma min_{i=1,2} Q_theta'_i(s', pi_phi'(s') + eps),  eps = clip(N(0, sigma^2), -c, c)
#            L(theta_i) = E_{(s,a,r,s')~D} ( Q_theta_i(s, a) - y )^2
#   actor:   pi = argmax_pi E_{(s,a)~D} [ lambda Q_1(s, pi(s)) - w (pi(s) - a)^2 ],
#            lambda = alpha / ( (1/N) sum_{(s_i,a_i)} |Q(s_i, a_i)| ),  w = 1 in the paper
#
# TD3 (twin critics, target policy smoothing, delayed actor and target updates) plus one BC term, states
# standardized: the whole algorithm.  With w = 0 (bc_coef 0), TD3 on a fixed dataset, the chapter's extrapolation-
# error example: evaluation logs Q_1(s0, pi(s0)) at the initial states beside their discounted return.
# Online fine-tuning (--online_steps; the chapter's "Offline-to-Online Fine-tuning"): the same losses on mixed
# batches, exploring with a = pi_phi(s) + N(0, (expl_noise max_action)^2) as TD3 does (Fujimoto et al. 2018).
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
from tqdm import trange


@dataclass
class TrainConfig:
    """Common fields (the same in every script), then the method's: TD3+BC."""
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
    alpha: float = 2.5  # alpha in lambda = alpha / mean |Q|
    bc_coef: float = 1.0  # w, weight of the BC term (the paper: 1; 0: plain TD3, the extrapolation-error ablation)
    policy_noise: float = 0.2  # sigma of the target policy smoothing noise, in units of max_action
    noise_clip: float = 0.5  # c, clip of that noise, in units of max_action
    expl_noise: float = 0.1  # sigma of the online phase's exploration noise, in units of max_action (TD3's 0.1)
    policy_freq: int = 2  # policy delay: the actor and the targets are updated once per this many critic updates
    gamma: float = 0.99  # gamma, discount
    tau: float = 0.005  # Polyak rate of the target networks
    hidden_dim: int = 256  # width of the two hidden layers of every network
    actor_lr: float = 3e-4  # Adam learning rate of pi_phi
    critic_lr: float = 3e-4  # Adam learning rate of Q_theta


# mlp, fit and the rest of the plumbing: the appendix (# --- shared) at the end of the file; the blocks right
# after train(): EnsembleCritic, soft_update, transition_buffer, reward_scale, make_evaluator, FineTuning (online).


class Actor(nn.Module):
    """Deterministic policy pi_phi(s) = max_action * tanh(MLP(s))."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float):
        super().__init__()
        self.net = mlp(state_dim, action_dim, hidden_dim)
        self.max_action = max_action

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(state))

    def sample(self, state: torch.Tensor, sigma: float) -> torch.Tensor:
        """a = pi_phi(s) + N(0, (sigma max_action)^2), clipped to the action bounds: the online phase's exploration."""
        action = self(state)
        return (action + sigma * self.max_action * torch.randn_like(action)).clamp(-self.max_action, self.max_action)


def td3_target(critic_target: "EnsembleCritic", actor_target: Actor, batch: dict, gamma: float, sigma: float,
               c: float, max_action: float) -> torch.Tensor:
    """y = r + gamma (1 - d) min_i Q_theta'_i(s', pi_phi'(s') + eps),  eps = clip(N(0, sigma^2), -c, c), the
    smoothed action clipped to [-max_action, max_action] (target policy smoothing, Fujimoto et al. 2018)."""
    next_states = batch["next_observations"]
    next_actions = actor_target(next_states)
    noise = (torch.randn_like(next_actions) * sigma).clamp(-c, c)
    next_actions = (next_actions + noise).clamp(-max_action, max_action)
    next_q = critic_target(next_states, next_actions).min(0).values
    return batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_q


def critic_loss(critic: "EnsembleCritic", batch: dict, y: torch.Tensor) -> torch.Tensor:
    """sum_i L(theta_i) = sum_i E_{(s,a)~D} ( Q_theta_i(s, a) - y )^2."""
    return (critic(batch["observations"], batch["actions"]) - y).pow(2).mean(1).sum()


def bc_lambda(q: torch.Tensor, alpha: float) -> torch.Tensor:
    """lambda = alpha / ( (1/N) sum_i |Q(s_i, pi(s_i))| ), treated as a constant (no gradient)."""
    return alpha / q.abs().mean().detach()


def actor_loss(q: torch.Tensor, policy_actions: torch.Tensor, data_actions: torch.Tensor, alpha: float,
               max_action: float, bc_coef: float) -> torch.Tensor:
    """pi = argmax_pi E_{(s,a)~D} [ lambda Q(s, pi(s)) - w (pi(s) - a)^2 ]; we minimize its negative.
    Actions are measured in units of max_action: alpha = 2.5 was tuned on MuJoCo's [-1, 1] actions."""
    bc = ((policy_actions - data_actions) / max_action).pow(2).mean()
    return -bc_lambda(q, alpha) * q.mean() + bc_coef * bc


class TD3BCTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        self.device = device
        self.actor = Actor(state_dim, action_dim, config.hidden_dim, max_action).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = EnsembleCritic(state_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), config.actor_lr, foreach=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), config.critic_lr, foreach=True)
        self.alpha, self.bc_coef, self.policy_freq = config.alpha, config.bc_coef, config.policy_freq
        self.max_action, self.sigma, self.c = max_action, config.policy_noise * max_action, config.noise_clip * max_action
        self.gamma, self.tau = config.gamma, config.tau

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        states = batch["observations"]
        with torch.no_grad():
            y = td3_target(self.critic_target, self.actor_target, batch, self.gamma, self.sigma, self.c,
                           self.max_action)
        q_loss = critic_loss(self.critic, batch, y)
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optimizer.step()
        metrics = {"critic_loss": q_loss.detach(), "q_target": y.mean()}

        if step % self.policy_freq == 0:  # delayed policy update: the actor and the targets move together
            policy_actions = self.actor(states)
            q = self.critic(states, policy_actions)[0]
            pi_loss = actor_loss(q, policy_actions, batch["actions"], self.alpha, self.max_action, self.bc_coef)
            self.actor_optimizer.zero_grad(set_to_none=True)
            pi_loss.backward()
            self.actor_optimizer.step()
            soft_update(self.actor_target, self.actor, self.tau)
            soft_update(self.critic_target, self.critic, self.tau)
            metrics["actor_loss"] = pi_loss.detach()
        return metrics

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "actor_target": self.actor_target.state_dict(),
                "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)

    def policy(self) -> nn.Module:
        """Normalized states -> deterministic actions: what evaluation runs and policy.pt2 exports."""
        return self.actor


def train(config: TrainConfig) -> dict:
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std = transition_buffer(data, config.normalize_states, config.normalize_reward, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = TD3BCTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    policy = trainer.policy()
    q_initial = lambda states: trainer.critic(states, trainer.actor(states))[0]  # noqa: E731 - Q_1(s, pi(s))
    evaluate_policy = make_evaluator(config, dataset, policy, mean, std, device, q_initial)
    scale = reward_scale(data, config.normalize_reward)
    explore = lambda state: trainer.actor.sample(state, config.expl_noise)  # noqa: E731
    tuning = FineTuning(config, dataset, trainer, buffer, explore, mean, std, scale)
    return fit(config, algo="td3_bc", trainer=tuning, sample=tuning.sample, evaluate=evaluate_policy,
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
