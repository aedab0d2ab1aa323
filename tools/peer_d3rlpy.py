"""The peer library on our data: d3rlpy trained on a local Minari dataset, scored like our scripts.

Runs inside the peer environment (d3rlpy 2.8.1 pins gymnasium 1.0.0, so it cannot share ours):

  python -m tools.peer_d3rlpy --setup          # creates .venv-peer/ from requirements-peer.txt
  .venv-peer/bin/python -m tools.peer_d3rlpy --algo iql --dataset_id local/hopper/medium-replay-v0 \
      --seed 0 --max_steps 50000 --eval_every 5000 --eval_episodes 10 --checkpoints_path runs/peer/iql

tools/sweep.py runs it for the variants d3rlpy_bc, d3rlpy_td3_bc, d3rlpy_iql, d3rlpy_cql, d3rlpy_bcq and
d3rlpy_dt. The same dataset (converted in memory), the same budget of updates, the same seeds of the
evaluation episodes (seed + 10000 + episode), the deterministic policy, the same normalization
(minari.get_normalized_score) and the same files (log.jsonl, finished.json, and run.json: the algorithm, the
library and its version, the resolved arguments, the size of the data, the git commit, the command) as
algorithms/, so tools/make_results.py reads both alike. Hyperparameters: d3rlpy's own D4RL reproductions
(reproductions/offline/<algo>.py in takuseno/d3rlpy), except the step budget; for BC (which has no
reproduction script), batch 256 and learning rate 3e-4 as our bc_filtered; and for BCQ, the sampled actions
as the authors' code (sfujim/BCQ) and our bcq: 10 per next state in the target, 100 per state when acting.
d3rlpy has one n_action_samples for both (100 in its reproduction, 0.74 s per update on one core, over
4 h for 20k updates), so the peer sets it per phase. d3rlpy's fit cannot resume: an interrupted peer run
starts again from update 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-peer"
PEER_PYTHON = PEER_VENV / "bin" / "python"
ALGOS = ("bc", "td3_bc", "iql", "cql", "bcq", "dt")
BCQ_TARGET_SAMPLES, BCQ_ACTING_SAMPLES = 10, 100  # n in the BCQ target and in pi(s), as algorithms/bcq.py
EVAL_DISCOUNT = 0.99  # as the appendix of algorithms/


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True, capture_output=True).stdout.strip() or None
    except OSError:
        return None


def run_record(args, library: str, torch_version: str | None, commit: str | None, command: list[str],
               dataset: dict | None) -> dict:
    """run.json of a peer run, the shape algorithms/ write ({"algo", "config", "commit", "torch", "dataset",
    "command"}) and the library that ran it: config is the resolved arguments, dataset the id, episodes and
    transitions of the Minari dataset it read (no content hash: the peer reads the data its own way)."""
    return {"algo": args.algo, "library": library, "config": {k: v for k, v in vars(args).items() if k != "setup"},
            "commit": commit, "torch": torch_version, "dataset": dataset, "command": command}


def setup() -> int:
    """Create the peer environment: torch first (the local CPU build), then requirements-peer.txt."""
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_PYTHON), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "-r", str(ROOT / "requirements-peer.txt")], check=True)
    return 0


def to_mdp_dataset(dataset):
    """Minari episodes -> d3rlpy MDPDataset: terminals from terminations, timeouts from truncations."""
    import d3rlpy
    import numpy as np

    columns = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for ep in dataset.iterate_episodes():
        columns["observations"].append(ep.observations[:-1])
        columns["actions"].append(ep.actions)
        columns["rewards"].append(ep.rewards)
        columns["terminals"].append(ep.terminations)
        timeouts = np.asarray(ep.truncations, bool).copy()
        timeouts[-1] = not ep.terminations[-1]  # every episode ends with a terminal or a timeout
        columns["timeouts"].append(timeouts)
    data = {k: np.concatenate(v) for k, v in columns.items()}
    return d3rlpy.dataset.MDPDataset(data["observations"].astype(np.float32), data["actions"].astype(np.float32),
                                     data["rewards"].astype(np.float32), data["terminals"].astype(np.float32),
                                     data["timeouts"].astype(np.float32))


def make_algo(name: str, max_steps: int, device: str):
    """d3rlpy's reproduction settings for each algorithm (see the module docstring)."""
    import d3rlpy

    standard = d3rlpy.preprocessing.StandardObservationScaler
    if name == "bc":
        return d3rlpy.algos.BCConfig(learning_rate=3e-4, batch_size=256, observation_scaler=standard()).create(device)
    if name == "td3_bc":
        return d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2, observation_scaler=standard()).create(device)
    if name == "iql":
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, weight_temp=3.0, max_weight=100.0,
            expectile=0.7, reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=max_steps)),
            observation_scaler=standard()).create(device)
    if name == "cql":
        encoder = d3rlpy.models.encoders.VectorEncoderFactory([256, 256, 256])
        return d3rlpy.algos.CQLConfig(
            actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4, actor_encoder_factory=encoder,
            critic_encoder_factory=encoder, batch_size=256, n_action_samples=10, alpha_learning_rate=0.0,
            conservative_weight=5.0, observation_scaler=standard()).create(device)
    if name == "bcq":
        return d3rlpy.algos.BCQConfig(
            actor_encoder_factory=d3rlpy.models.encoders.VectorEncoderFactory([400, 300]), actor_learning_rate=1e-3,
            critic_encoder_factory=d3rlpy.models.encoders.VectorEncoderFactory([400, 300]), critic_learning_rate=1e-3,
            imitator_encoder_factory=d3rlpy.models.encoders.VectorEncoderFactory([750, 750]),
            imitator_learning_rate=1e-3, batch_size=100, lam=0.75, action_flexibility=0.05,
            n_action_samples=BCQ_ACTING_SAMPLES,
            observation_scaler=standard()).create(device)
    return d3rlpy.algos.DecisionTransformerConfig(
        batch_size=64, learning_rate=1e-4,
        optim_factory=d3rlpy.optimizers.AdamWFactory(
            weight_decay=1e-4, clip_grad_norm=0.25,
            lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(warmup_steps=min(10_000, max_steps // 10))),
        encoder_factory=d3rlpy.models.VectorEncoderFactory([128], exclude_last_activation=True),
        observation_scaler=standard(), reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(0.001),
        position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE, context_size=20, num_heads=1, num_layers=3,
        max_timestep=1000).create(device)


@contextmanager
def acting_samples(algo, name: str):
    """BCQ only: d3rlpy samples n_action_samples actions per state in the target and when acting alike;
    BCQ_ACTING_SAMPLES inside the block, BCQ_TARGET_SAMPLES (for the updates) after it."""
    if name != "bcq":
        yield
        return
    algo.impl._n_action_samples = BCQ_ACTING_SAMPLES
    try:
        yield
    finally:
        algo.impl._n_action_samples = BCQ_TARGET_SAMPLES


def evaluate(algo, name: str, env, episodes: int, seed: int, target_return: float) -> dict:
    """Returns, discounted returns: the deterministic policy on episodes seeded seed + 10000 + i."""
    import numpy as np

    returns, discounted = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + 10_000 + ep)
        actor = algo.as_stateful_wrapper(target_return=target_return) if name == "dt" else None
        done, total, total_discounted, discount, reward = False, 0.0, 0.0, 1.0, 0.0
        while not done:
            action = actor.predict(obs, reward) if actor is not None else algo.predict(obs[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            total_discounted += discount * float(reward)
            discount *= EVAL_DISCOUNT
            done = terminated or truncated
        returns.append(total)
        discounted.append(total_discounted)
    return {"returns": np.asarray(returns), "discounted": np.asarray(discounted)}


def epochs(algo, name: str, dataset, max_steps: int, eval_every: int):
    """(epoch, training metrics) after every eval_every updates. d3rlpy's Decision Transformer has no
    fitter(): its fit() is called once per epoch, each call continuing the same model and schedules."""
    import d3rlpy
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    quiet = dict(logger_adapter=d3rlpy.logging.NoopAdapterFactory(), show_progress=False)
    if name == "dt":
        for epoch in range(1, max_steps // eval_every + 1):
            algo.fit(dataset, n_steps=eval_every, n_steps_per_epoch=eval_every, save_interval=max_steps + 1, **quiet)
            yield epoch, {}
        return
    if name == "bcq":  # build as fitter() would (it then skips both steps), to set the target's samples first
        build_scalers_with_transition_picker(algo, dataset)
        algo.build_with_dataset(dataset)
        algo.impl._n_action_samples = BCQ_TARGET_SAMPLES
    yield from algo.fitter(dataset, n_steps=max_steps, n_steps_per_epoch=eval_every, save_interval=max_steps + 1,
                           **quiet)


def train(args) -> int:
    import d3rlpy
    import minari
    import numpy as np
    import torch

    torch.set_num_threads(1)
    run_dir = Path(args.checkpoints_path)
    if (run_dir / "finished.json").exists():
        print(f"{run_dir}: finished already; nothing to do.")
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        dataset = minari.load_dataset(args.dataset_id)
    except Exception as e:  # noqa: BLE001 - a missing dataset is one sentence, as in the scripts
        print(f"error: could not load dataset {args.dataset_id!r} ({type(e).__name__}); build it with "
              f"python -m tools.make_datasets.", file=sys.stderr)
        return 2
    size = {"id": args.dataset_id, "episodes": int(dataset.total_episodes), "transitions": int(dataset.total_steps)}
    record = run_record(args, f"d3rlpy {d3rlpy.__version__}", torch.__version__, git_commit(),
                        [Path(sys.executable).name, *sys.argv], size)
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(run_dir / "run.json")
    env = dataset.recover_environment(eval_env=True)
    d3rlpy.seed(args.seed)
    algo = make_algo(args.algo, args.max_steps, "cpu:0" if args.device == "cpu" else args.device)
    best_return = max(float(ep.rewards.sum()) for ep in dataset.iterate_episodes())
    log_path = run_dir / "log.jsonl"
    log_path.unlink(missing_ok=True)  # d3rlpy cannot resume: a rerun starts over
    start = time.time()
    result = {}
    with open(log_path, "a") as log:
        for epoch, metrics in epochs(algo, args.algo, to_mdp_dataset(dataset), args.max_steps, args.eval_every):
            with acting_samples(algo, args.algo):
                episodes = evaluate(algo, args.algo, env, args.eval_episodes, args.seed, best_return)
            result = {"eval/return": float(episodes["returns"].mean()),
                      "eval/discounted_return": float(episodes["discounted"].mean()),
                      "eval/normalized_score": float(100 * np.mean(minari.get_normalized_score(dataset,
                                                                                                episodes["returns"])))}
            train_metrics = {f"train/{k}": float(v) for k, v in metrics.items()}
            step = epoch * args.eval_every
            log.write(json.dumps({"step": step, "wall_time": time.time() - start, **train_metrics, **result}) + "\n")
            log.flush()
            print(f"step {step}: " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in result.items()), flush=True)
    (run_dir / "finished.json").write_text(json.dumps({"step": args.max_steps, **result}))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="create .venv-peer/ and exit")
    parser.add_argument("--algo", choices=ALGOS)
    parser.add_argument("--dataset_id", default="local/pendulum/medium-replay-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_steps", type=int, default=50_000)
    parser.add_argument("--eval_every", type=int, default=5_000)
    parser.add_argument("--eval_episodes", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoints_path", default=None)
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.setup:
        return setup()
    if args.algo is None:
        parser.error("--algo is required (or --setup)")
    for name in ("max_steps", "eval_every", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.max_steps % args.eval_every:
        parser.error("--max_steps must be a multiple of --eval_every (d3rlpy evaluates after whole epochs)")
    args.checkpoints_path = args.checkpoints_path or str(ROOT / "runs" / f"d3rlpy_{args.algo}" / args.dataset_id /
                                                         f"seed{args.seed}")
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
