# BCQ: Batch-Constrained deep Q-learning, continuous actions (Fujimoto, Meger, Precup 2019, "Off-Policy
# Deep Reinforcement Learning without Exploration").  Chapter: 21.3.1 "BCQ (Batch-Constrained Q-learning)"
# and the robotics document's BCQAgent sketch.
#
#   pi(s) = argmax_{a_i + xi_phi(s, a_i, Phi)} Q_theta1(s, a_i + xi_phi(s, a_i, Phi)),   {a_i ~ G_omega(s)}_{i=1..n}
#   G_omega:  L(omega) = E_{(s,a)~D} [ ||a - D_omega(s, z)||^2 + 1/2 D_KL( N(mu, sigma^2) || N(0, I) ) ],
#             (mu, sigma) = E_omega(s, a),  z = mu + sigma eps;  sampling: z ~ N(0, I) clipped to [-0.5, 0.5]
#   critics:  y = r + gamma (1 - d) max_{a_i} [ lambda min_{j=1,2} Q_theta'_j(s', a_i) + (1 - lambda) max_{j=1,2} Q_theta'_j(s', a_i) ],
#             {a_i = a + xi_phi'(s', a, Phi), a ~ G_omega(s')}_{i=1..n};   L(theta_j) = E ( Q_theta_j(s, a) - y )^2
#   actor:    L(phi) = -E_{s~D, a~G_omega(s)} Q_theta1(s, a + xi_phi(s, a, Phi)),   |xi_phi| <= Phi max_action
#
# The chapter's sketch stops at "sample from the VAE, keep the best by Q"; the paper adds the perturbation
# model xi_phi and the soft clipped double-Q target over n sampled actions, which this file follows.  The
# policy only ever picks actions the VAE finds likely under the data, moved by at most Phi.

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
    """Common fields (the same in every script), then the method's.

    BCQ (defaults: Fujimoto et al. 2019, supplementary material, and the authors' code)
    """
    seed: int = 0  # seeds python, numpy, torch and the evaluation episodes
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dataset_id: str = "local/pendulum/medium-replay-v0"  # Minari dataset id
    normalize_states: bool = True  # standardize observations with the dataset's mean and std
    normalize_reward: bool = False  # scale rewards by 1000 / (max return - min return), as IQL does
    max_steps: int = 1_000_000  # gradient updates
    batch_size: int = 100  # transitions per update
    eval_every: int = 5_000  # updates between evaluations (and checkpoints)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoints_path: Optional[str] = None  # run directory; default runs/<algo>/<dataset_id>/seed<seed>
    resume: bool = True  # continue from <run directory>/checkpoint.pt when it exists
    logging: str = "offline"  # wandb mode: "offline", "online" or "disabled" (the JSON-lines log is always written)
    project: str = "offline-rl"  # wandb project
    compile: bool = False  # capture the update with torch.compile
    phi: float = 0.05  # Phi, largest perturbation xi_phi(s, a, Phi), in units of max_action
    lmbda: float = 0.75  # lambda, weight of min_j Q'_j against max_j Q'_j in the soft clipped double-Q target
    n_actions: int = 10  # n, actions sampled from G_omega per next state (target) and per state (acting)
    kl_weight: float = 0.5  # weight of D_KL in the VAE loss
    latent_clip: float = 0.5  # z ~ N(0, I) is clipped to [-latent_clip, latent_clip] when sampling G_omega(s)
    gamma: float = 0.99  # gamma, discount
    tau: float = 0.005  # Polyak rate of the target critics and the target perturbation network
    hidden_dim: int = 256  # width of both hidden layers of the critics and of xi_phi (256-256, as td3_bc and iql; the paper: 400-300)
    vae_hidden_dim: int = 750  # width of the two hidden layers of the VAE's encoder and of its decoder
    actor_lr: float = 1e-3  # Adam learning rate of xi_phi
    critic_lr: float = 1e-3  # Adam learning rate of Q_theta
    vae_lr: float = 1e-3  # Adam learning rate of G_omega


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


class VAE(nn.Module):
    """G_omega(s): a conditional VAE of the behavior policy.  Encoder E_omega(s, a) -> (mu, log sigma) of z,
    decoder D_omega(s, z) -> max_action * tanh(.); latent_dim = 2 * action_dim, as the paper."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float, latent_clip: float):
        super().__init__()
        self.latent_dim = 2 * action_dim
        self.encoder = mlp(state_dim + action_dim, 2 * self.latent_dim, hidden_dim)
        self.decoder = mlp(state_dim + self.latent_dim, action_dim, hidden_dim)
        self.max_action = max_action
        self.latent_clip = latent_clip

    def encode(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(torch.cat([state, action], -1)).chunk(2, -1)
        return mean, log_std.clamp(-4.0, 15.0)  # bounded so that exp(log sigma) stays finite

    def decode(self, state: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """D_omega(s, z); without z, a sample of G_omega(s) with z ~ N(0, I) clipped, which keeps the samples
        where the decoder was trained (the prior's tails are rarely hit by the encoder)."""
        if z is None:
            z = torch.randn(state.shape[0], self.latent_dim, device=state.device)
            z = z.clamp(-self.latent_clip, self.latent_clip)
        return self.max_action * torch.tanh(self.decoder(torch.cat([state, z], -1)))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_std = self.encode(state, action)
        z = mean + log_std.exp() * torch.randn_like(mean)  # reparameterized sample of q(z | s, a)
        return self.decode(state, z), mean, log_std


class Perturbation(nn.Module):
    """The perturbed action a + xi_phi(s, a, Phi), xi_phi = Phi * max_action * tanh(MLP(s, a)), clipped to the
    action bounds."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float, phi: float):
        super().__init__()
        self.net = mlp(state_dim + action_dim, action_dim, hidden_dim)
        self.max_action = max_action
        self.phi = phi

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        xi = self.phi * self.max_action * torch.tanh(self.net(torch.cat([state, action], -1)))
        return (action + xi).clamp(-self.max_action, self.max_action)


def sample_actions(vae: VAE, perturbation: Perturbation, states: torch.Tensor,
                   n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n perturbed samples a_i + xi(s, a_i, Phi), a_i ~ G_omega(s), of every state, in one batch: returns the
    states repeated [B * n, S] (each state n times in a row) and the actions [B * n, A]."""
    repeated = states.repeat_interleave(n, 0)
    return repeated, perturbation(repeated, vae.decode(repeated))


def vae_loss(recon: torch.Tensor, actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
             kl_weight: float) -> torch.Tensor:
    """L(omega) = ||a - D_omega(s, z)||^2 + kl_weight * D_KL( N(mu, sigma^2) || N(0, I) ),
    D_KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2); both terms averaged over the elements, as the authors."""
    reconstruction = (recon - actions).pow(2).mean()
    kl = 0.5 * (mean.pow(2) + (2.0 * log_std).exp() - 1.0 - 2.0 * log_std).mean()
    return reconstruction + kl_weight * kl


def soft_clipped_target(next_q: torch.Tensor, rewards: torch.Tensor, terminals: torch.Tensor, gamma: float,
                        lmbda: float) -> torch.Tensor:
    """y = r + gamma (1 - d) max_i [ lambda min_j Q'_j(s', a_i) + (1 - lambda) max_j Q'_j(s', a_i) ],
    next_q = Q'_j(s', a_i) as [2, B, n]."""
    soft = lmbda * next_q.min(0).values + (1.0 - lmbda) * next_q.max(0).values
    return rewards + gamma * (1.0 - terminals) * soft.max(-1).values


def critic_loss(critic: EnsembleCritic, batch: dict, target: torch.Tensor) -> torch.Tensor:
    """sum_j E ( Q_theta_j(s, a) - y )^2."""
    return (critic(batch["observations"], batch["actions"]) - target).pow(2).mean(1).sum()


def perturbation_loss(critic: EnsembleCritic, perturbation: Perturbation, vae: VAE,
                      states: torch.Tensor) -> torch.Tensor:
    """L(phi) = -E_{s~D, a~G_omega(s)} Q_theta1(s, a + xi_phi(s, a, Phi)); gradients reach phi only."""
    with torch.no_grad():
        sampled = vae.decode(states)
    return -critic(states, perturbation(states, sampled))[0].mean()


class BCQTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        self.device = device
        self.vae = VAE(state_dim, action_dim, config.vae_hidden_dim, max_action, config.latent_clip).to(device)
        self.actor = Perturbation(state_dim, action_dim, config.hidden_dim, max_action, config.phi).to(device)
        self.actor_target = Perturbation(state_dim, action_dim, config.hidden_dim, max_action, config.phi).to(device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic = EnsembleCritic(state_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target = EnsembleCritic(state_dim, action_dim, config.hidden_dim).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.vae_optimizer = torch.optim.Adam(self.vae.parameters(), lr=config.vae_lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.config = config

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        states = batch["observations"]
        recon, mean, log_std = self.vae(states, batch["actions"])
        g_loss = vae_loss(recon, batch["actions"], mean, log_std, c.kl_weight)
        self.vae_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.vae_optimizer.step()

        with torch.no_grad():
            next_states, next_actions = sample_actions(self.vae, self.actor_target, batch["next_observations"],
                                                       c.n_actions)
            next_q = self.critic_target(next_states, next_actions).view(2, -1, c.n_actions)
            target = soft_clipped_target(next_q, batch["rewards"], batch["terminals"], c.gamma, c.lmbda)
        q_loss = critic_loss(self.critic, batch, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optimizer.step()

        actor_loss = perturbation_loss(self.critic, self.actor, self.vae, states)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        with torch.no_grad():
            for net, target_net in ((self.critic, self.critic_target), (self.actor, self.actor_target)):
                for p, p_target in zip(net.parameters(), target_net.parameters()):
                    p_target.lerp_(p, c.tau)
        return {"vae_loss": g_loss.detach(), "critic_loss": q_loss.detach(), "actor_loss": actor_loss.detach(),
                "q_target": target.mean()}

    @torch.no_grad()
    def act(self, state: torch.Tensor) -> torch.Tensor:
        """pi(s): the best by Q_theta1 of n perturbed VAE samples.  Random through the samples, as in the paper:
        BCQ has no deterministic policy to fall back on."""
        n = self.config.n_actions
        states, actions = sample_actions(self.vae, self.actor, state, n)
        q1 = self.critic(states, actions)[0].view(-1, n)
        best = q1.argmax(1)
        return actions.view(-1, n, actions.shape[-1])[torch.arange(len(best), device=best.device), best]


@pyrallis.wrap()
def train(config: TrainConfig) -> dict:
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std = transition_buffer(data, config, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = BCQTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    evaluate_policy = make_evaluator(config, dataset, trainer.act, mean, std, device)
    return fit(config, "bcq", trainer, lambda: buffer.sample(config.batch_size), evaluate_policy,
               {"state_mean": mean, "state_std": std})


if __name__ == "__main__":
    check_config_file(TrainConfig)
    train()
