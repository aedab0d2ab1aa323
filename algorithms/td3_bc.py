# TD3+BC (Fujimoto, Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning").
# Chapter: 21.3.3 "TD3+BC" and the robotics document's "TD3+BC" section.
#
#   critic:  y = r + gamma min_{i=1,2} Q_theta'_i(s', pi_phi'(s') + eps),  eps = clip(N(0, sigma^2), -c, c)
#            L(theta_i) = E_{(s,a,r,s')~D} ( Q_theta_i(s, a) - y )^2
#   actor:   pi = argmax_pi E_{(s,a)~D} [ lambda Q_1(s, pi(s)) - (pi(s) - a)^2 ],
#            lambda = alpha / ( (1/N) sum_{(s_i,a_i)} |Q(s_i, a_i)| )
#
# TD3 (twin critics, target policy smoothing, delayed actor and target updates) plus one BC term,
# and states standardized with the dataset's mean and std: the whole algorithm.

import dataclasses
import json
import math
import os
import random
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
    """Common fields (the same in every script), then the method's: TD3+BC."""
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    normalize_reward: bool = False  # scale rewards by 1000 / (max return - min return), as IQL does
    max_steps: int = 1_000_000  # gradient updates
    batch_size: int = 256  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # capture the update with torch.compile
    alpha: float = 2.5  # alpha in lambda = alpha / mean |Q|
    policy_noise: float = 0.2  # sigma of the target policy smoothing noise (times max_action)
    noise_clip: float = 0.5  # c, clip of that noise (times max_action)
    policy_freq: int = 2  # actor and target updates once every this many critic updates
    gamma: float = 0.99  # gamma, discount
    tau: float = 0.005  # Polyak rate of the target networks
    hidden_dim: int = 256  # width of the two hidden layers of the actor and the critics
    actor_lr: float = 3e-4  # Adam learning rate of pi_phi
    critic_lr: float = 3e-4  # Adam learning rate of Q_theta


# --- shared: begin
# Identical in every script of algorithms/ (tests/test_shared_block.py checks it): seeding,
# Minari loading, flattening, normalization, the device-resident buffer, evaluation, logging,
# network building blocks, checkpoints and the training loop.  Edit it in one script, then run tools/sync_shared.py.


def fail(message: str) -> None:
    """Bad input ends the run with one sentence and a non-zero exit status, not a stack trace."""
    raise SystemExit(f"error: {message}")


def check_config_file(config_class) -> None:
    """A YAML key that is not a field of TrainConfig is one sentence (pyrallis would raise)."""
    import yaml

    argv = sys.argv[1:]
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config_path=")]
    paths += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config_path"]
    fields = {f.name for f in dataclasses.fields(config_class)}
    for path in paths:
        if not os.path.isfile(path):
            fail(f"config file {path} does not exist.")
        with open(path) as f:
            keys = set(yaml.safe_load(f) or {})
        if keys - fields:
            fail(f"config {path} has unknown key(s) {', '.join(sorted(keys - fields))}; "
                 f"valid keys: {', '.join(sorted(fields))}.")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_dataset(dataset_id: str):
    """Minari dataset from disk, else downloaded; a missing one is one clear sentence."""
    import minari
    from minari.storage import get_dataset_path

    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        pass
    except Exception as e:  # noqa: BLE001 - a malformed id or a broken dataset directory
        fail(f"could not load dataset {dataset_id!r}: {e}")
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
    for i, ep in enumerate(dataset.iterate_episodes()):
        length = len(ep.rewards)
        ends = np.zeros(length, np.float32)
        ends[-1] = 1.0
        columns["observations"].append(ep.observations[:-1])
        columns["next_observations"].append(ep.observations[1:])
        columns["actions"].append(ep.actions)
        columns["rewards"].append(ep.rewards)
        columns["terminals"].append(ep.terminations)
        columns["episode_ends"].append(ends)
        columns["episode_ids"].append(np.full(length, i))
        columns["episode_returns"].append(np.full(length, ep.rewards.sum()))
    data = {k: np.concatenate(v) for k, v in columns.items()}
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_returns"):
        data[k] = data[k].astype(np.float32)
    return data


def state_statistics(observations: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    if not enabled:
        return np.zeros(observations.shape[1], np.float32), np.ones(observations.shape[1], np.float32)
    return observations.mean(0), observations.std(0) + 1e-3


def reward_scale(data: dict[str, np.ndarray], enabled: bool) -> float:
    """1000 / (max return - min return) over trajectories (Kostrikov et al. 2022, appendix B)."""
    if not enabled:
        return 1.0
    returns = data["episode_returns"][data["episode_ends"] > 0]
    return 1000.0 / max(float(returns.max() - returns.min()), 1e-6)


def transition_buffer(data: dict[str, np.ndarray], config, device: torch.device):
    """DeviceBuffer of (s, a, r, s', done) with normalized states and scaled rewards, and the
    state statistics (mean, std) that the policy needs at evaluation time."""
    mean, std = state_statistics(data["observations"], config.normalize_states)
    transitions = {
        "observations": (data["observations"] - mean) / std,
        "actions": data["actions"],
        "rewards": data["rewards"] * reward_scale(data, config.normalize_reward),
        "next_observations": (data["next_observations"] - mean) / std,
        "terminals": data["terminals"],
    }
    return DeviceBuffer(transitions, device), mean, std


class DeviceBuffer:
    """The whole dataset as tensors on the training device; batch indices are drawn there too."""

    def __init__(self, data: dict[str, np.ndarray], device: torch.device):
        self.data = {k: torch.as_tensor(np.asarray(v, np.float32), device=device) for k, v in data.items()}
        self.size = len(next(iter(self.data.values())))
        self.device = device

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


def evaluate(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of the deterministic policy `act`, one seeded episode after another."""
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return np.asarray(returns)


def normalized_score(dataset, returns: np.ndarray) -> float:
    """D4RL score: 100 * (return - random) / (expert - random); NaN when the dataset has no references."""
    import minari

    try:
        return float(100 * np.mean(minari.get_normalized_score(dataset, returns)))
    except Exception:  # noqa: BLE001 - datasets without ref_min_score / ref_max_score
        return math.nan


def make_evaluator(config, dataset, policy: Callable[[torch.Tensor], torch.Tensor], mean: np.ndarray,
                   std: np.ndarray, device: torch.device) -> Callable[[], dict]:
    """Evaluation of a deterministic policy of normalized states in the dataset's eval env."""
    env = dataset.recover_environment(eval_env=True)
    mean_t, std_t = torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        state = (torch.as_tensor(obs, dtype=torch.float32, device=device) - mean_t) / std_t
        return policy(state[None])[0].cpu().numpy()

    def run() -> dict:
        returns = evaluate(env, act, config.eval_episodes, seed=config.seed + 10_000)
        return {"return": returns.mean(), "normalized_score": normalized_score(dataset, returns)}

    return run


class VectorizedLinear(nn.Module):
    """n independent linear layers applied in one batched matmul: x [n, B, in] -> [n, B, out]."""

    def __init__(self, in_features: int, out_features: int, n: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # the same initialization as nn.Linear
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int = 2) -> nn.Sequential:
    layers, dim = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU()]
        dim = hidden_dim
    return nn.Sequential(*layers, nn.Linear(dim, out_dim))


class EnsembleCritic(nn.Module):
    """Q_1..Q_n(s, a) as one module with stacked weights: returns [n, B]."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, n: int = 2, n_hidden: int = 2):
        super().__init__()
        dims = [state_dim + action_dim] + [hidden_dim] * n_hidden
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [VectorizedLinear(d_in, d_out, n), nn.ReLU()]
        self.net = nn.Sequential(*layers, VectorizedLinear(dims[-1], 1, n))
        self.n = n

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([state, action], -1)
        x = x.unsqueeze(0).expand(self.n, *x.shape) if x.dim() == 2 else x
        return self.net(x).squeeze(-1)


def run_directory(config, algo: str) -> Path:
    path = config.checkpoints_path or os.path.join("runs", algo, config.dataset_id, f"seed{config.seed}")
    return Path(path)


class RunLog:
    """wandb (offline by default) plus a JSON-lines file beside the checkpoints."""

    def __init__(self, config, algo: str, run_dir: Path):
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(run_dir / "log.jsonl", "a")
        self.start = time.time()
        self.wandb = wandb.init(mode=config.logging, project=config.project, dir=str(run_dir), config=asdict(config),
                                name=f"{algo}-{config.dataset_id}-seed{config.seed}", group=algo,
                                id=f"{algo}-{config.dataset_id}-seed{config.seed}".replace("/", "-"),
                                resume="allow", settings=wandb.Settings(silent=True))

    def write(self, step: int, metrics: dict) -> dict:
        values = {k: float(v) for k, v in metrics.items()}  # the only host sync: at log time
        self.file.write(json.dumps({"step": step, "wall_time": time.time() - self.start, **values}) + "\n")
        self.file.flush()
        self.wandb.log(values, step=step)
        return values

    def close(self) -> None:
        self.file.close()
        self.wandb.finish()


def training_state(trainer) -> dict:
    """Every module, optimizer, learning-rate schedule and tensor attribute of the trainer, by name."""
    return {name: (obj.detach().clone() if isinstance(obj, torch.Tensor) else obj.state_dict())
            for name, obj in vars(trainer).items()
            if isinstance(obj, (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.Tensor))}


def restore_training_state(trainer, state: dict) -> None:
    for name, value in state.items():
        obj = getattr(trainer, name)
        if isinstance(obj, torch.Tensor):
            obj.data.copy_(value)
        else:
            obj.load_state_dict(value)


def save_checkpoint(path: Path, step: int, trainer, config, extra: dict) -> None:
    """Written to a temporary file then renamed: an interrupted save never replaces a good checkpoint."""
    state = {"step": step, "trainer": training_state(trainer), "config": asdict(config), "extra": extra,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    if not path.exists():
        fail(f"no checkpoint at {path}.")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated or foreign files
        fail(f"checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}); delete it or pass --resume false.")


def resume(path: Path, trainer, device: torch.device) -> int:
    state = load_checkpoint(path, device)
    try:
        restore_training_state(trainer, state["trainer"])
    except (KeyError, RuntimeError, ValueError, AttributeError) as e:
        fail(f"checkpoint {path} does not match this script and config ({type(e).__name__}); "
             f"delete it or pass --resume false.")
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return state["step"]


def fit(config, algo: str, trainer, sample: Callable[[], dict], evaluate_policy: Callable[[], dict],
        extra: dict) -> dict:
    """The loop every script shares: update, log, evaluate, checkpoint, resume.  Returns the last
    evaluation.  `extra` (normalizer statistics and the like) is stored with each checkpoint."""
    run_dir = run_directory(config, algo)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "checkpoint.pt"
    start = resume(checkpoint, trainer, trainer.device) if config.resume and checkpoint.exists() else 0
    if start >= config.max_steps:
        print(f"{run_dir}: already trained for {start} updates (max_steps {config.max_steps}); nothing to do.")
        return {}
    update = torch.compile(trainer.update) if config.compile else trainer.update
    log = RunLog(config, algo, run_dir)
    log_every = max(1, min(1000, config.eval_every))
    result = {}
    for step in trange(start + 1, config.max_steps + 1, desc=f"{algo} {config.dataset_id}", mininterval=5):
        metrics = update(sample())
        if step % log_every == 0 or step % config.eval_every == 0 or step == config.max_steps:
            values = {f"train/{k}": v for k, v in metrics.items()}
            if step % config.eval_every == 0 or step == config.max_steps:
                values.update({f"eval/{k}": v for k, v in evaluate_policy().items()})
            values = log.write(step, values)
            if not all(math.isfinite(v) for k, v in values.items() if k.startswith("train/")):
                log.close()
                fail(f"a loss became NaN or infinite at update {step}; the last good checkpoint is kept in {run_dir}.")
            if step % config.eval_every == 0 or step == config.max_steps:
                save_checkpoint(checkpoint, step, trainer, config, extra)
                result = {k: v for k, v in values.items() if k.startswith("eval/")}
                print(f"step {step}: " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in result.items()), flush=True)
    log.close()
    return result
# --- shared: end


class Actor(nn.Module):
    """Deterministic policy pi_phi(s) = max_action * tanh(MLP(s))."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float):
        super().__init__()
        self.net = mlp(state_dim, action_dim, hidden_dim)
        self.max_action = max_action

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(state))


def td3_target(critic_target: EnsembleCritic, actor_target: Actor, batch: dict, config: TrainConfig,
               max_action: float) -> torch.Tensor:
    """y = r + gamma (1 - d) min_i Q_target_i(s', pi_target(s') + clip(eps, -c, c)),  eps ~ N(0, sigma^2)
    (target policy smoothing and clipped double Q, Fujimoto et al. 2018)."""
    next_states = batch["next_observations"]
    next_actions = actor_target(next_states)
    noise = (torch.randn_like(next_actions) * config.policy_noise * max_action).clamp(
        -config.noise_clip * max_action, config.noise_clip * max_action)
    next_actions = (next_actions + noise).clamp(-max_action, max_action)
    next_q = critic_target(next_states, next_actions).min(0).values
    return batch["rewards"] + config.gamma * (1.0 - batch["terminals"]) * next_q


def critic_loss(critic: EnsembleCritic, batch: dict, target: torch.Tensor) -> torch.Tensor:
    """sum_i E ( Q_i(s, a) - y )^2."""
    return (critic(batch["observations"], batch["actions"]) - target).pow(2).mean(1).sum()


def bc_lambda(q: torch.Tensor, alpha: float) -> torch.Tensor:
    """lambda = alpha / ( (1/N) sum_i |Q(s_i, pi(s_i))| ), treated as a constant (no gradient)."""
    return alpha / q.abs().mean().detach()


def actor_loss(q: torch.Tensor, policy_actions: torch.Tensor, data_actions: torch.Tensor, alpha: float,
               max_action: float) -> torch.Tensor:
    """pi = argmax_pi E_{(s,a)~D} [ lambda Q(s, pi(s)) - (pi(s) - a)^2 ]; we minimize its negative.
    Actions are measured in units of max_action: alpha = 2.5 was tuned on MuJoCo's [-1, 1] actions."""
    bc = ((policy_actions - data_actions) / max_action).pow(2).mean()
    return -bc_lambda(q, alpha) * q.mean() + bc


class TD3BCTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        self.device = device
        self.actor = Actor(state_dim, action_dim, config.hidden_dim, max_action).to(device)
        self.actor_target = Actor(state_dim, action_dim, config.hidden_dim, max_action).to(device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic = EnsembleCritic(state_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target = EnsembleCritic(state_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.updates = torch.zeros((), dtype=torch.long)  # a tensor, so that it is checkpointed
        self.last_actor_loss = torch.zeros((), device=device)
        self.max_action = max_action
        self.config = config

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        with torch.no_grad():
            target = td3_target(self.critic_target, self.actor_target, batch, c, self.max_action)
        q_loss = critic_loss(self.critic, batch, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optimizer.step()

        self.updates += 1
        if int(self.updates) % c.policy_freq == 0:  # delayed policy updates (a CPU counter: no device sync)
            policy_actions = self.actor(batch["observations"])
            q = self.critic(batch["observations"], policy_actions)[0]
            loss = actor_loss(q, policy_actions, batch["actions"], c.alpha, self.max_action)
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_optimizer.step()
            self.last_actor_loss = loss.detach()
            with torch.no_grad():
                for net, target_net in ((self.critic, self.critic_target), (self.actor, self.actor_target)):
                    for p, p_target in zip(net.parameters(), target_net.parameters()):
                        p_target.lerp_(p, c.tau)
        return {"critic_loss": q_loss.detach(), "actor_loss": self.last_actor_loss, "q_target": target.mean()}

    @torch.no_grad()
    def act(self, state: torch.Tensor) -> torch.Tensor:
        return self.actor(state)


@pyrallis.wrap()
def train(config: TrainConfig) -> dict:
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std = transition_buffer(data, config, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = TD3BCTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    evaluate_policy = make_evaluator(config, dataset, trainer.act, mean, std, device)
    return fit(config, "td3_bc", trainer, lambda: buffer.sample(config.batch_size), evaluate_policy,
               {"state_mean": mean, "state_std": std})


if __name__ == "__main__":
    check_config_file(TrainConfig)
    train()
