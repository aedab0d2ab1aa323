"""Canonical source of the `dynamics` block: the probabilistic dynamics ensemble, its training, the
termination functions, model rollouts and the model buffer D_model, carried by mopo.py and combo.py
(tools/sync_shared.py lists them). It uses (Output)VectorizedLinear of the `critic` block and fail
and DeviceBuffer of the shared appendix. What a method does with the rollouts (MOPO's penalized reward) stays
in its script. Edit here, then run `python -m tools.sync_shared dynamics`."""

import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

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
