"""Online SAC (Haarnoja et al. 2018, "SAC: Algorithms and Applications", automatic temperature)
that trains the behavior agents of the local datasets.

This is a tool, not one of the offline algorithms: it interacts with the environment. D4RL's recipe
(Fu et al. 2020) needs, from one online run, a sequence of policy checkpoints with their evaluated
returns and every transition the run saw. `train_behavior` produces both.

Why SAC, and these settings: D4RL's behavior agents are SAC (rlkit), and SAC with one update per
environment step, 256x256 networks and batch 256 is the learner with the best published return per
gradient update on the three locomotion tasks among the standard ones (TD3 is close); on a CPU the
update is the whole cost (an environment step is ~1% of it), so what saves CPU hours is doing the
update well, not another learner:
  - both critics in one batched module, the replay sampled by index on the tensors it lives in;
  - `torch.compile` of the update where it helps (`compile=True`);
  - stop as soon as the expert is verified: every evaluation that reaches `stop_return` over
    `eval_episodes` is re-evaluated over `verify_episodes` (50, the datasets' reference count), and
    training ends when that mean reaches it.
The run is resumable: its whole state (networks, optimizers, temperature, replay, checkpoints, RNG
states) is written atomically every `eval_every` steps, and `train_behavior` continues from it. A
resumed run starts a new episode (the cut episode is marked truncated, as a time limit would be).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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
    eval_every: int = 10_000  # a checkpoint (actor + evaluated return) and a resume state every this many steps
    eval_episodes: int = 10  # episodes of the stochastic policy per checkpoint
    verify_episodes: int = 50  # episodes that confirm a checkpoint reaching stop_return
    stop_return: float = math.inf  # stop when a checkpoint's verified mean return reaches this
    wall_seconds: float = math.inf  # stop (resumably) after this much wall time in this call
    hidden: int = 256
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    seed: int = 0
    compile: bool = False  # torch.compile the update


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
        std = log_std.exp()
        u = mean if deterministic else mean + std * torch.randn_like(mean)
        a = torch.tanh(u)
        gaussian_log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log pi(a|s) of the squashed sample: change of variables through tanh
        log_prob = gaussian_log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
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
    """Every transition of the run, in preallocated numpy arrays; sampled as torch views."""

    FIELDS = ("obs", "act", "rew", "next_obs", "term", "trunc")

    def __init__(self, obs_dim: int, act_dim: int, size: int):
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.act = np.zeros((size, act_dim), np.float32)
        self.rew = np.zeros(size, np.float32)
        self.term = np.zeros(size, np.float32)
        self.trunc = np.zeros(size, bool)
        self.views = [torch.from_numpy(x) for x in (self.obs, self.act, self.rew, self.next_obs, self.term)]
        self.n = 0

    def add(self, o, a, r, o2, term, trunc):
        i = self.n
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i] = o, a, r, o2
        self.term[i], self.trunc[i] = term, trunc
        self.n += 1

    def sample(self, batch: int) -> list[torch.Tensor]:
        idx = torch.randint(0, self.n, (batch,))
        return [x[idx] for x in self.views]

    def state_dict(self) -> dict:
        """The n transitions; s' is kept only where it is not the next row's s (episode ends, the last row)."""
        state = {name: getattr(self, name)[: self.n].copy() for name in self.FIELDS if name != "next_obs"}
        kept = self.episode_cuts()
        state["next_obs_rows"], state["next_obs"] = kept, self.next_obs[kept].copy()
        return {name: torch.from_numpy(np.asarray(value)) for name, value in state.items()}  # tensors: weights_only

    def load_state_dict(self, state: dict) -> None:
        state = {name: value.numpy() for name, value in state.items()}
        self.n = len(state["rew"])
        for name in self.FIELDS:
            if name != "next_obs":
                getattr(self, name)[: self.n] = state[name]
        self.next_obs[: self.n - 1] = self.obs[1: self.n]
        rows = state.get("next_obs_rows", np.arange(self.n))  # states written before rows were kept hold every s'
        self.next_obs[rows] = state["next_obs"]

    def episode_cuts(self) -> np.ndarray:
        """Rows after which the run reset the environment (or stopped)."""
        ends = (self.term[: self.n] > 0) | self.trunc[: self.n]
        ends[self.n - 1] = True
        return np.flatnonzero(ends)


def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, deterministic: bool = False) -> float:
    return float(np.mean(episode_returns(actor, env_id, episodes, seed, deterministic)))


def episode_returns(actor: Actor, env_id: str, episodes: int, seed: int, deterministic: bool = False) -> list[float]:
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
    return returns


class SAC:
    """The learner: actor, twin critic with a Polyak target, and the temperature alpha."""

    def __init__(self, obs_dim: int, act_dim: int, act_scale: float, s: SACSettings):
        self.s = s
        self.actor = Actor(obs_dim, act_dim, s.hidden, act_scale)
        self.critic = TwinCritic(obs_dim + act_dim, s.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), s.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), s.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], s.lr)
        self.update = torch.compile(self._update) if s.compile else self._update

    def _update(self, o, a, r, o2, term):
        s = self.s
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = self.actor(o2)
            q_next = self.critic_target(o2, a2).min(0).values - alpha * logp2
            y = r + s.gamma * (1 - term) * q_next
        critic_loss = (self.critic(o, a) - y).pow(2).mean(1).sum()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        a_pi, logp = self.actor(o)
        self.critic.requires_grad_(False)  # the actor's loss needs no critic weight gradients
        actor_loss = (alpha * logp - self.critic(o, a_pi).min(0).values).mean()
        self.critic.requires_grad_(True)
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        with torch.no_grad():  # Polyak averaging: theta' <- tau theta + (1 - tau) theta'
            for target_param, param in zip(self.critic_target.parameters(), self.critic.parameters()):
                target_param.lerp_(param, s.tau)

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def run_identity(settings: dict) -> dict:
    """The settings a resumed run must share with its start (how long, and how fast, it may vary)."""
    return {k: v for k, v in settings.items() if k not in ("wall_seconds", "compile")}


def train_behavior(env_id: str, s: SACSettings, state_path: Path):
    """Train (or continue training from `state_path`) until the expert is verified, the step budget
    is spent, or the wall time of this call is up. Returns (finished, checkpoints, replay, dims):
    checkpoints = [{step, eval_return, cpu_seconds, actor, verified_return?}]."""
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    act_scale = float(env.action_space.high[0])
    dims = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=s.hidden, act_scale=act_scale)
    torch.manual_seed(s.seed)
    agent = SAC(obs_dim, act_dim, act_scale, s)
    replay = Replay(obs_dim, act_dim, s.total_steps)
    checkpoints, step, cpu_before = [], 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if run_identity(state["settings"]) != run_identity(asdict(s)) or state["env_id"] != env_id:
            raise ValueError(f"{state_path} was made with other settings; delete it to start over.")
        agent.load_state_dict(state["agent"])
        replay.load_state_dict(state["replay"])
        checkpoints, step, cpu_before = state["checkpoints"], state["step"], state["cpu_seconds"]
        torch.set_rng_state(state["torch_rng"])
        if replay.n:
            replay.trunc[replay.n - 1] = not replay.term[replay.n - 1]  # the episode was cut here
        tqdm.write(f"resumed {env_id} at step {step} from {state_path}")
    if checkpoints and checkpoints[-1].get("verified_return", -math.inf) >= s.stop_return:
        return True, checkpoints, replay, dims
    env.action_space.seed(s.seed + step)
    obs, _ = env.reset(seed=s.seed + step)
    start_wall, start_cpu = time.time(), time.process_time()
    finished = False
    bar = tqdm(range(step + 1, s.total_steps + 1), desc=f"SAC {env_id}", mininterval=10, initial=step,
               total=s.total_steps)
    for step in bar:
        action = env.action_space.sample() if step <= s.start_steps else agent.actor.act(obs)
        next_obs, r, term, trunc, _ = env.step(action)
        replay.add(obs, action, r, next_obs, term, trunc)
        obs = next_obs
        if term or trunc:
            obs, _ = env.reset()
        if step > s.start_steps:
            agent.update(*replay.sample(s.batch_size))
        if step % s.eval_every == 0 or step == s.total_steps:
            cpu = cpu_before + time.process_time() - start_cpu
            ckpt = {"step": step, "eval_return": evaluate(agent.actor, env_id, s.eval_episodes, seed=10_000 + step),
                    "cpu_seconds": cpu, "actor": {k: v.clone() for k, v in agent.actor.state_dict().items()}}
            if ckpt["eval_return"] >= s.stop_return:
                ckpt["verified_return"] = evaluate(agent.actor, env_id, s.verify_episodes, seed=20_000 + step)
                finished = ckpt["verified_return"] >= s.stop_return
            checkpoints.append(ckpt)
            bar.set_postfix(eval_return=f"{ckpt['eval_return']:.0f}")
            tqdm.write(f"{env_id} step {step}: eval return {ckpt['eval_return']:.1f}"
                       + (f", verified {ckpt['verified_return']:.1f}" if "verified_return" in ckpt else "")
                       + f" (cpu {cpu / 60:.1f} min)")
            atomic_save({"env_id": env_id, "settings": asdict(s), "agent": agent.state_dict(),
                         "replay": replay.state_dict(), "checkpoints": checkpoints, "step": step,
                         "cpu_seconds": cpu, "torch_rng": torch.get_rng_state()}, state_path)
            if finished or time.time() - start_wall > s.wall_seconds:
                break
    bar.close()
    finished = finished or step >= s.total_steps
    return finished, checkpoints, replay, dims
