# CQL(H): Conservative Q-Learning on SAC (Kumar, Zhou, Tucker, Levine 2020, "Conservative Q-Learning
# for Offline Reinforcement Learning").  Chapter: 21.4 "Conservative Q-Learning (CQL)", the overview's
# "CQL (Conservative Q-Learning)" section and the robotics notes' ConservativeQLearning sketch (their 3.1).
#
#   critic:  min_Q  alpha E_{s~D} [ log sum_a exp Q(s, a) - E_{a~D} Q(s, a) ]
#                   + E_{(s,a,r,s')~D} ( Q(s, a) - B^pi Q_hat(s, a) )^2
#            log sum_a exp Q(s, a) ~ logsumexp_j [ Q(s, a_j) - log mu(a_j|s) ],   a_j from three proposals mu:
#            Unif([-max_action, max_action]^d), pi(.|s) and pi(.|s')  (importance sampling, as in the paper's code)
#            B^pi Q_hat(s, a) = r + gamma (1 - d) min_{i=1,2} Q_target_i(s', a'),  a' ~ pi(.|s')
#   Lagrange (optional):  min_Q max_{alpha' >= 0}  alpha' ( alpha gap(Q) - tau ) + TD,  gap(Q) the bracket above
#   actor (SAC):  max_pi E_{s~D, a~pi(.|s)} [ min_i Q_i(s, a) - alpha_H log pi(a|s) ]
#   entropy temperature:  min_{alpha_H} E_{a~pi} [ -alpha_H ( log pi(a|s) + H_target ) ],  H_target = -dim(A)
#
# The regularizer pushes Q down on actions the data does not vouch for (uniform ones and the policy's,
# weighted towards the highest Q by the softmax of the logsumexp) and up on the dataset's actions, so
# that the expected value of the learned policy under Q lower-bounds its true value.

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
    """Common fields (the same in every script), then the method's: CQL(H) (defaults: the official README for Gym MuJoCo)."""
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
    cql_alpha: float = 5.0  # alpha, weight of the conservative term (min_q_weight)
    num_sampled_actions: int = 10  # actions drawn from each of Unif, pi(.|s), pi(.|s') for the logsumexp
    cql_lagrange: bool = False  # learn alpha' by dual descent so that alpha * gap stays near tau (off for Gym)
    target_action_gap: float = 10.0  # tau of the Lagrange version (official code: 10 for Gym, 5 for AntMaze)
    backup_entropy: bool = False  # subtract alpha_H log pi(a'|s') in the target (off in the paper's eq. 3 and code)
    gamma: float = 0.99  # gamma, discount
    tau: float = 0.005  # Polyak rate of the target critics
    hidden_dim: int = 256  # width of the hidden layers of the actor and the critics
    n_hidden: int = 3  # hidden layers of the actor and the critics (three of 256 for Gym in the official code)
    critic_lr: float = 3e-4  # Adam learning rate of Q_theta (and of alpha')
    actor_lr: float = 1e-4  # Adam learning rate of pi_phi and of alpha_H (official README for Gym; paper: 3e-5)


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


class TanhGaussianPolicy(nn.Module):
    """pi_phi(a|s): a = max_action * tanh(u), u ~ N(mu(s), diag(sigma(s)^2)), with a state-dependent
    log sigma (SAC); the deterministic action is max_action * tanh(mu(s))."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, n_hidden: int, max_action: float):
        super().__init__()
        self.net = mlp(state_dim, 2 * action_dim, hidden_dim, n_hidden)
        self.max_action = max_action

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(state).chunk(2, -1)
        return mean, log_std.clamp(-20.0, 2.0)

    def sample(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action a = max_action * tanh(mu + sigma eps) and its log pi(a|s)."""
        mean, log_std = self(state)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        return self.max_action * torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std, self.max_action)

    @torch.no_grad()
    def act(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self(state)[0])


def tanh_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                           max_action: float) -> torch.Tensor:
    """log pi(a|s) = log N(u; mu, sigma^2) - sum_j log( max_action (1 - tanh(u_j)^2) ),  a = max_action tanh(u),
    with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (no 1 - tanh^2 underflow for large |u|)."""
    gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(pre_tanh)
    log_jacobian = math.log(max_action) + 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gaussian - log_jacobian).sum(-1)


def soft_q_target(critic_target: EnsembleCritic, actor: TanhGaussianPolicy, batch: dict, alpha: torch.Tensor,
                  config: TrainConfig) -> torch.Tensor:
    """y = r + gamma (1 - d) [ min_i Q_target_i(s', a') (- alpha_H log pi(a'|s') if backup_entropy) ], a' ~ pi(.|s').
    The paper's eq. 3 backs up B^pi Q without the entropy bonus, and so does its code (deterministic_backup)."""
    next_actions, next_log_pi = actor.sample(batch["next_observations"])
    next_q = critic_target(batch["next_observations"], next_actions).min(0).values
    if config.backup_entropy:
        next_q = next_q - alpha * next_log_pi
    return batch["rewards"] + config.gamma * (1.0 - batch["terminals"]) * next_q


def td_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum_i E ( Q_i(s, a) - y )^2: the official code's mean squared error (no 1/2), which alpha = 5 is tuned to."""
    return (q_data - target).pow(2).mean(1).sum()


def uniform_log_density(action_dim: int, max_action: float) -> float:
    """log mu(a) of Unif([-max_action, max_action]^d) = -d log(2 max_action)."""
    return -action_dim * math.log(2.0 * max_action)


def importance_sampled_logsumexp(q_random: torch.Tensor, q_policy: torch.Tensor, q_next_policy: torch.Tensor,
                                 log_density_random: float, log_pi: torch.Tensor,
                                 log_pi_next: torch.Tensor) -> torch.Tensor:
    """log sum_a exp Q(s, a) ~ logsumexp over the concatenation of [Q(s, a_unif) - log mu_unif,
    Q(s, a_pi(s)) - log pi(a|s), Q(s, a_pi(s')) - log pi(a|s')] along the last (sample) axis, temperature 1.
    The constant -log(3N) of the average is left out, as in the official code: it shifts the gap, not the gradients."""
    return torch.logsumexp(torch.cat([q_random - log_density_random, q_policy - log_pi,
                                      q_next_policy - log_pi_next], -1), -1)


def conservative_gap(logsumexp_q: torch.Tensor, q_data: torch.Tensor) -> torch.Tensor:
    """gap_i = E_{s~D} [ log sum_a exp Q_i(s, a) - Q_i(s, a_data) ], one value per critic: minimizing it pushes
    Q down on the sampled actions and up on the dataset's."""
    # The robotics notes' sketch subtracts alpha (Q(s, a_unif) - Q(s, pi(s))) from the TD loss: the sign is
    # reversed there; this follows the paper (eq. 4), which adds the logsumexp and subtracts Q(s, a_data).
    return (logsumexp_q - q_data).mean(-1)


def sampled_actions(actor: TanhGaussianPolicy, states: torch.Tensor, next_states: torch.Tensor, n: int,
                    d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, 3n, d] actions (n uniform, n from pi(.|s), n from pi(.|s')) and the log-probs [B, n] of the policy's."""
    batch, max_action = states.shape[0], actor.max_action
    random_actions = torch.empty(batch, n, d, device=states.device).uniform_(-max_action, max_action)
    policy_actions, log_pi = actor.sample(states.repeat_interleave(n, 0))
    next_actions, log_pi_next = actor.sample(next_states.repeat_interleave(n, 0))
    actions = torch.cat([random_actions, policy_actions.view(batch, n, d), next_actions.view(batch, n, d)], 1)
    return actions, log_pi.view(batch, n), log_pi_next.view(batch, n)


def actor_loss(q_pi: torch.Tensor, log_pi: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """-E [ min_i Q_i(s, a) - alpha_H log pi(a|s) ],  a ~ pi(.|s) reparameterized."""
    return (alpha * log_pi - q_pi).mean()


def temperature_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """-E [ log alpha_H ( log pi(a|s) + H_target ) ] (SAC's automatic entropy tuning, in log alpha)."""
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


class CQLTrainer:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, config: TrainConfig, device: torch.device):
        self.device = device
        width, depth = config.hidden_dim, config.n_hidden
        self.actor = TanhGaussianPolicy(state_dim, action_dim, width, depth, max_action).to(device)
        self.critic = EnsembleCritic(state_dim, action_dim, width, n_hidden=depth).to(device)
        self.critic_target = EnsembleCritic(state_dim, action_dim, width, n_hidden=depth).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.log_alpha = nn.Parameter(torch.zeros((), device=device))  # log alpha_H, a parameter so it is checkpointed
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.actor_lr)
        if config.cql_lagrange:
            self.log_alpha_prime = nn.Parameter(torch.zeros((), device=device))
            self.alpha_prime_optimizer = torch.optim.Adam([self.log_alpha_prime], lr=config.critic_lr)
        self.target_entropy = -float(action_dim)
        self.log_density_random = uniform_log_density(action_dim, max_action)
        self.action_dim = action_dim
        self.config = config

    def conservative_penalty(self, gap: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """alpha sum_i gap_i, or with Lagrange alpha' sum_i (alpha gap_i - tau), after a step of alpha' that
        raises it when alpha gap > tau and lowers it otherwise."""
        c = self.config
        if not c.cql_lagrange:
            return c.cql_alpha * gap.sum(), {}
        alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
        alpha_prime_loss = -(alpha_prime * (c.cql_alpha * gap.detach() - c.target_action_gap)).mean()
        self.alpha_prime_optimizer.zero_grad(set_to_none=True)
        alpha_prime_loss.backward()
        self.alpha_prime_optimizer.step()
        penalty = (alpha_prime.detach() * (c.cql_alpha * gap - c.target_action_gap)).sum()
        return penalty, {"alpha_prime": alpha_prime.detach()}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        states, n = batch["observations"], c.num_sampled_actions
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            target = soft_q_target(self.critic_target, self.actor, batch, alpha, c)
            actions, log_pi_s, log_pi_next = sampled_actions(self.actor, states, batch["next_observations"], n,
                                                             self.action_dim)
        q_data = self.critic(states, batch["actions"])
        # Every sampled action is scored at s, the policy's actions at s' included (the official implementation).
        q_sampled = self.critic(states.repeat_interleave(3 * n, 0), actions.flatten(0, 1))
        q_sampled = q_sampled.view(-1, states.shape[0], 3 * n)
        q_random, q_policy, q_next_policy = q_sampled.split(n, -1)
        logsumexp_q = importance_sampled_logsumexp(q_random, q_policy, q_next_policy, self.log_density_random,
                                                   log_pi_s, log_pi_next)
        gap = conservative_gap(logsumexp_q, q_data)
        penalty, extra = self.conservative_penalty(gap)
        q_loss = td_loss(q_data, target)
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

        with torch.no_grad():
            for p, p_target in zip(self.critic.parameters(), self.critic_target.parameters()):
                p_target.lerp_(p, c.tau)
        return {"q_loss": q_loss.detach(), "cql_gap": gap.detach().mean(), "actor_loss": pi_loss.detach(),
                "alpha": alpha, "entropy": -log_pi.detach().mean(), "q_data": q_data.detach().mean(),
                "q_random": q_random.detach().mean(), **extra}

    @torch.no_grad()
    def act(self, state: torch.Tensor) -> torch.Tensor:
        return self.actor.act(state)


@torch.no_grad()
def initial_q_and_mc_return(env: gym.Env, trainer: CQLTrainer, mean: np.ndarray, std: np.ndarray, episodes: int,
                            seed: int, gamma: float, scale: float) -> dict:
    """min_i Q_i(s_0, pi(s_0)) against the policy's discounted return sum_t gamma^t r_t from s_0 (rewards scaled as
    in training), averaged over the evaluation episodes: CQL claims the first lower-bounds the second.  The return is
    cut at the time limit, which matters only when gamma^T is not small (Pendulum: 0.99^200 = 0.13)."""
    mean_t = torch.as_tensor(mean, device=trainer.device)
    std_t = torch.as_tensor(std, device=trainer.device)

    def normalized(obs: np.ndarray) -> torch.Tensor:
        return ((torch.as_tensor(obs, dtype=torch.float32, device=trainer.device) - mean_t) / std_t)[None]

    q_initial, returns = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        state = normalized(obs)
        q_initial.append(float(trainer.critic(state, trainer.act(state)).min(0).values))
        done, total, discount = False, 0.0, 1.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(trainer.act(normalized(obs))[0].cpu().numpy())
            total += discount * scale * float(reward)
            discount *= gamma
            done = terminated or truncated
        returns.append(total)
    return {"q_initial": float(np.mean(q_initial)), "mc_return_initial": float(np.mean(returns))}


@pyrallis.wrap()
def train(config: TrainConfig) -> dict:
    set_seed(config.seed)
    device = pick_device(config.device)
    dataset = load_dataset(config.dataset_id)
    check_continuous(dataset)
    data = flatten_episodes(dataset)
    buffer, mean, std = transition_buffer(data, config, device)
    state_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
    trainer = CQLTrainer(state_dim, action_dim, float(dataset.action_space.high[0]), config, device)
    evaluate_returns = make_evaluator(config, dataset, trainer.act, mean, std, device)
    env = dataset.recover_environment(eval_env=True)
    scale = reward_scale(data, config.normalize_reward)

    def evaluate_policy() -> dict:  # the same seeded episodes as evaluate_returns, replayed for the lower-bound check
        return {**evaluate_returns(), **initial_q_and_mc_return(env, trainer, mean, std, config.eval_episodes,
                                                                config.seed + 10_000, config.gamma, scale)}

    return fit(config, "cql", trainer, lambda: buffer.sample(config.batch_size), evaluate_policy,
               {"state_mean": mean, "state_std": std})


if __name__ == "__main__":
    check_config_file(TrainConfig)
    train()
