"""Smoke runs of every algorithm script through its command line: a short training on a tiny
dataset, an evaluation, a checkpoint, and a resume that continues exactly where it stopped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ALGOS = sorted(p.stem for p in (ROOT / "algorithms").glob("*.py"))
# Per-script settings that make a smoke run small (the configs' defaults are for real runs).
SMALL = {
    "dt": ["--context_len", "5", "--embed_dim", "32", "--n_layers", "1", "--eval_targets", "[-150.0]"],
    "bcq": ["--vae_hidden_dim", "64", "--hidden_dim", "64"],
    "cql": ["--hidden_dim", "64", "--n_hidden", "2", "--num_sampled_actions", "4"],
    "mopo": ["--model_max_epochs", "3", "--rollout_batch_size", "100", "--hidden_dim", "64", "--model_hidden_dim", "32"],
    "combo": ["--model_max_epochs", "3", "--rollout_batch_size", "100", "--hidden_dim", "64", "--model_hidden_dim", "32"],
}


# Runs the script with tqdm's trange cut at `stop` updates: an interruption after the checkpoint at
# `stop`, with the config (max_steps and the schedules that depend on it) unchanged.
INTERRUPTED = ("import runpy, sys, tqdm; stop = int(sys.argv[1]); sys.argv = sys.argv[2:]; "
               "tqdm.trange = lambda a, b, **kw: range(a, min(b, stop + 1)); "
               "runpy.run_path(sys.argv[0], run_name='__main__')")


def run(algo, *args, env=None, check=True, interrupt_at=None):
    prefix = [sys.executable] if interrupt_at is None else [sys.executable, "-c", INTERRUPTED, str(interrupt_at)]
    command = [*prefix, str(ROOT / "algorithms" / f"{algo}.py"), "--logging", "disabled",
               "--device", "cpu", "--eval_episodes", "1", *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def final_weights(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return state["step"], state["trainer"]


@pytest.mark.parametrize("algo", ALGOS)
def test_smoke_checkpoint_and_exact_resume(algo, minari_root, tmp_path):
    dataset = ["--dataset_id", "local/pendulum/medium-replay-v0", *SMALL.get(algo, [])]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(algo, *dataset, "--max_steps", "60", "--eval_every", "30", "--checkpoints_path", str(straight))
    run(algo, *dataset, "--max_steps", "60", "--eval_every", "30", "--checkpoints_path", str(split), interrupt_at=30)
    run(algo, *dataset, "--max_steps", "60", "--eval_every", "30", "--checkpoints_path", str(split))

    log = read_log(straight)
    evaluations = [r for r in log if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evaluations] == [30, 60]
    assert all(k in evaluations[-1] for k in ("eval/return", "eval/normalized_score"))
    assert [r["step"] for r in read_log(split)] == [r["step"] for r in log]  # resumed at 31, not 1

    step_a, state_a = final_weights(straight)
    step_b, state_b = final_weights(split)
    assert step_a == step_b == 60
    assert_same(state_a, state_b)


def assert_same(a, b, path="trainer"):
    """Recursive exact equality of two checkpoint states (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("algo", ALGOS)
def test_help_lists_every_field(algo):
    result = subprocess.run([sys.executable, str(ROOT / "algorithms" / f"{algo}.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for field in ("--seed", "--dataset_id", "--max_steps", "--checkpoints_path", "--compile"):
        assert field in result.stdout


@pytest.mark.parametrize("algo", ["bc_filtered", "iql"])
def test_unknown_dataset_is_one_sentence(algo, minari_root, tmp_path):
    result = run(algo, "--dataset_id", "local/pendulum/nonexistent-v0", "--checkpoints_path", str(tmp_path),
                 check=False)
    assert result.returncode != 0
    assert "local/pendulum/nonexistent-v0" in result.stderr and "tools/make_datasets.py" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("algo", ["td3_bc"])
def test_unknown_config_key_is_rejected(algo, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("dataset_id: local/pendulum/medium-v0\nlearning_rate_typo: 0.1\n")
    result = run(algo, "--config_path", str(config), check=False)
    assert result.returncode != 0
    assert "learning_rate_typo" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_checkpoint_is_one_sentence_and_kept(minari_root, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = run("bc_filtered", "--dataset_id", "local/pendulum/medium-v0", "--checkpoints_path", str(tmp_path),
                 "--max_steps", "10", check=False)
    assert result.returncode != 0
    assert "corrupt" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"not a checkpoint"
