"""Online SAC (Haarnoja et al. 2018) that trains the behavior agents of the local datasets.

This is a tool, not one of the offline algorithms: it interacts with the environment.
D4RL's recipe (Fu et al. 2020) needs, from one online run, a sequence of policy checkpoints
with their evaluated returns and every transition the run saw. `train_behavior` returns both.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACSettings:
    total_steps: int = 1_000_000  # environment steps, one update per step after start_steps
    start_steps: int = 10_000  # uniform random actions before learning starts
    eval_every: int = 10_000  # a checkpoint (actor + evaluated return) every this many steps
    eval_episodes: int = 5
    stop_return: float = math.inf  # stop when a checkpoint's evaluated return reaches this
    wall_seconds: float = math.inf  # stop after this much wall time
    hidden: int = 256
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    seed: int = 0


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy; the only network the dataset builder needs."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, act_scale: float):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)
        self.act_scale = act_scale

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        h = self.trunk(obs)
        mean = self.mean(h)
        log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        dist = torch.distributions.Normal(mean, log_std.exp())
        u = mean if deterministic else dist.rsample()
        a = torch.tanh(u)
        # log pi(a|s) of the squashed sample: change of variables through tanh
        log_prob = dist.log_prob(u).sum(-1) - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return a * self.act_scale, log_prob

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        a, _ = self(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic)
        return a[0].numpy()


class TwinCritic(nn.Module):
    """Q1 and Q2 as one module with stacked weights (one batched matmul per layer)."""

    def __init__(self, in_dim: int, hidden: int, n: int = 2):
        super().__init__()
        sizes = [in_dim, hidden, hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound)))
        self.n = n

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x.squeeze(-1)  # [n, batch]


class Replay:
    def __init__(self, obs_dim: int, act_dim: int, size: int):
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.act = np.zeros((size, act_dim), np.float32)
        self.rew = np.zeros(size, np.float32)
        self.term = np.zeros(size, np.float32)
        self.trunc = np.zeros(size, bool)
        self.n = 0

    def add(self, o, a, r, o2, term, trunc):
        i = self.n
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i] = o, a, r, o2
        self.term[i], self.trunc[i] = term, trunc
        self.n += 1

    def sample(self, rng: np.random.Generator, batch: int):
        idx = rng.integers(0, self.n, batch)
        return [torch.from_numpy(x[idx]) for x in (self.obs, self.act, self.rew, self.next_obs, self.term)]


def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, deterministic: bool = False) -> float:
    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(actor.act(obs, deterministic))
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def train_behavior(env_id: str, s: SACSettings):
    """Returns (checkpoints, replay): [{step, eval_return, actor}] and the run's transitions."""
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    act_scale = float(env.action_space.high[0])
    actor = Actor(obs_dim, act_dim, s.hidden, act_scale)
    critic = TwinCritic(obs_dim + act_dim, s.hidden)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.zeros((), requires_grad=True)
    target_entropy = -float(act_dim)
    actor_opt = torch.optim.Adam(actor.parameters(), s.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), s.lr)
    alpha_opt = torch.optim.Adam([log_alpha], s.lr)
    replay = Replay(obs_dim, act_dim, s.total_steps)
    checkpoints = []

    def update():
        o, a, r, o2, term = replay.sample(rng, s.batch_size)
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = actor(o2)
            q_next = critic_target(o2, a2).min(0).values - alpha * logp2
            y = r + s.gamma * (1 - term) * q_next
        critic_loss = (critic(o, a) - y).pow(2).mean(1).sum()
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        a_pi, logp = actor(o)
        actor_loss = (alpha * logp - critic(o, a_pi).min(0).values).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        alpha_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        with torch.no_grad():
            for p, tp in zip(critic.parameters(), critic_target.parameters()):
                tp.lerp_(p, s.tau)

    start = time.time()
    obs, _ = env.reset(seed=s.seed)
    bar = tqdm(range(1, s.total_steps + 1), desc=f"SAC {env_id}", mininterval=5)
    for step in bar:
        if step <= s.start_steps:
            action = env.action_space.sample()
        else:
            action = actor.act(obs)
        next_obs, r, term, trunc, _ = env.step(action)
        replay.add(obs, action, r, next_obs, term, trunc)
        obs = next_obs
        if term or trunc:
            obs, _ = env.reset()
        if step > s.start_steps:
            update()
        if step % s.eval_every == 0:
            ret = evaluate(actor, env_id, s.eval_episodes, seed=10_000 + step)
            state = {k: v.clone() for k, v in actor.state_dict().items()}
            checkpoints.append({"step": step, "eval_return": ret, "actor": state})
            bar.set_postfix(eval_return=f"{ret:.1f}")
            tqdm.write(f"step {step}: eval return {ret:.1f} ({time.time() - start:.0f}s)")
            if ret >= s.stop_return or time.time() - start > s.wall_seconds:
                break
    replay.trunc[replay.n - 1] = not replay.term[replay.n - 1]  # the run stops mid-episode
    return checkpoints, replay, dict(obs_dim=obs_dim, act_dim=act_dim, hidden=s.hidden, act_scale=act_scale)
