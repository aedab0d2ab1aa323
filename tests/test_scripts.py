"""Smoke runs of every algorithm script through its command line: a short training on a tiny
dataset, an evaluation, a checkpoint, and a resume that continues exactly where it stopped.  The command line runs
in this process (conftest.run_script), except where the subject is the process itself: a signal, a script copied
alone into an empty directory."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]
ALGOS = sorted(p.stem for p in (ROOT / "algorithms").glob("*.py"))
LEARNERS = [a for a in ALGOS if a != "fqe"]  # fqe evaluates a given policy: tests/test_fqe.py runs it
# Per-script settings that make a smoke run small (the configs' defaults are for real runs).
SMALL = {
    "awac": ["--hidden_dim", "64"],
    "dt": ["--context_len", "5", "--embed_dim", "32", "--n_layers", "1", "--eval_targets", "[-150.0]"],
    "bcq": ["--vae_hidden_dim", "64", "--hidden_dim", "64"],
    "cql": ["--hidden_dim", "64", "--n_hidden", "2", "--num_sampled_actions", "4", "--bc_steps", "20"],
    "mopo": ["--model_max_epochs", "3", "--rollout_batch_size", "100", "--hidden_dim", "64", "--model_hidden_dim", "32"],
    "combo": ["--model_max_epochs", "3", "--rollout_batch_size", "100", "--hidden_dim", "64", "--model_hidden_dim", "32"],
}


# One torch thread, as every benchmark run: with several, MKL divides a matrix product among the threads it
# finds free, and the sums' order (so the last bits) can change from run to run (mopo's model, 2026-12-01).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


SMOKE = ["--logging", "disabled", "--device", "cpu", "--eval_episodes", "1"]


def run(algo, *args, env=None, check=True, cwd=None):
    """The script's command line with SMOKE's flags, in this process."""
    result = run_script(algo, *SMOKE, *args, env=env, cwd=cwd)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_process(algo, *args, env=None, check=True, cwd=None):
    """The same command line in its own interpreter, for what only a process shows (another process's lock, a
    resume after a kill or a signal)."""
    command = [sys.executable, str(ROOT / "algorithms" / f"{algo}.py"), *SMOKE, *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **ONE_THREAD, **(env or {})},
                            timeout=600, cwd=cwd)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def final_weights(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return state["step"], state["trainer"]


@pytest.mark.parametrize("algo", LEARNERS)
def test_smoke_checkpoint_policy_and_exact_resume(algo, minari_root, tmp_path):
    """A straight run and a run stopped by stop_after at update 40 (between evaluations) then resumed by
    the same command end with the same weights, bit for bit; both leave policy.pt2 and finished.json."""
    dataset = ["--dataset_id", "local/pendulum/medium-replay-v0", *SMALL.get(algo, [])]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(algo, *dataset, "--max_steps", "60", "--eval_every", "30", "--checkpoints_path", str(straight), cwd=tmp_path)
    stopped = run(algo, *dataset, "--max_steps", "60", "--eval_every", "30", "--checkpoints_path", str(split),
                  "--stop_after", "40", cwd=tmp_path)
    assert "stopped at update 40" in stopped.stdout and not (split / "finished.json").exists()
    run(algo, *dataset, "--max_steps", "60", "--eval_every", "30", "--checkpoints_path", str(split), cwd=tmp_path)

    log = read_log(straight)
    evaluations = [r for r in log if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evaluations] == [30, 60]
    assert all(k in evaluations[-1] for k in ("eval/return", "eval/normalized_score", "eval/discounted_return")) \
        or algo == "dt"
    assert [r["step"] for r in read_log(split)] == [r["step"] for r in log]  # resumed at 41, not 1
    walls = [r["wall_time"] for r in read_log(split)]
    assert walls == sorted(walls)  # the resumed run's clock continues from the checkpoint's

    step_a, state_a = final_weights(straight)
    step_b, state_b = final_weights(split)
    assert step_a == step_b == 60
    assert_same(state_a, state_b)
    for run_dir in (straight, split):
        assert json.loads((run_dir / "finished.json").read_text())["step"] == 60
        assert (run_dir / "policy.pt2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split", "straight"]  # nothing written outside run dirs


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


def test_every_script_runs_its_command_line_as_run_script_does():
    """conftest.run_script calls train(parse_config(TrainConfig)) in this process: what each script's __main__ does."""
    for algo in ALGOS:
        source = (ROOT / "algorithms" / f"{algo}.py").read_text()
        assert source.endswith('\nif __name__ == "__main__":\n    train(parse_config(TrainConfig))\n'), algo


@pytest.mark.parametrize("algo", ALGOS)
def test_help_lists_every_field(algo):
    result = run_script(algo, "--help")
    assert result.returncode == 0
    for field in ("--seed", "--dataset_id", "--max_steps", "--checkpoints_path", "--compile"):
        assert field in result.stdout


@pytest.mark.parametrize("algo", ["bc_filtered", "iql", "awac"])
def test_unknown_dataset_is_one_sentence(algo, minari_root, tmp_path):
    result = run(algo, "--dataset_id", "local/pendulum/nonexistent-v0", "--checkpoints_path", str(tmp_path),
                 check=False)
    assert result.returncode != 0
    assert "local/pendulum/nonexistent-v0" in result.stderr and "python -m tools.make_datasets" in result.stderr
    # a lone copy has no tools/: the sentence says where it lives, and that ids of the network work (issue 45, item 12)
    assert "this project's repository" in result.stderr and "mujoco/hopper/medium-v0" in result.stderr
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


BAD_INPUT = {
    "wrong type": (["--max_steps", "abc"], "max_steps must be an integer"),
    "unknown device": (["--device", "tpu"], "unknown device 'tpu'"),
    "absent device": (["--device", "cuda:7"], "not available"),
    "max_steps below 1": (["--max_steps", "-5"], "max_steps must be at least 1"),
    "batch_size below 1": (["--batch_size", "0"], "batch_size must be in [1, 1048576], got 0"),
    "eval_every below 1": (["--eval_every", "0"], "eval_every must be at least 1"),
    "eval_episodes below 1": (["--eval_episodes", "0"], "eval_episodes must be at least 1"),
    "missing value": (["--max_steps"], "argument --max_steps: expected one argument"),
    "not a boolean": (["--resume", "maybe"], "resume must be true or false"),
    "tau above 1": (["--tau", "2"], "tau must be in (0, 1]"),
    "negative learning rate": (["--actor_lr", "-1"], "actor_lr must be above 0"),
    "non-integer steps": (["--max_steps", "1.5"], "max_steps must be an integer"),
    "hidden_dim 0": (["--hidden_dim", "0"], "hidden_dim must be at least 1"),
    "negative seed": (["--seed", "-1"], "seed must be in [0, 4294967296)"),
    "seed beyond numpy's": (["--seed", "5000000000"], "seed must be in [0, 4294967296)"),
    "float as an integer": (["--max_steps", "5e9"], "max_steps must be an integer, got '5e9'"),
    "abbreviated flag": (["--batch", "512"], "unrecognized arguments: --batch 512"),
    "unknown flag": (["--typo", "3"], "unrecognized arguments: --typo 3"),
    "stray word": (["stray"], "unrecognized arguments: stray"),
    "missing config file": (["--config_path", "missing.yaml"], "config file missing.yaml is not readable UTF-8 YAML"),
    "bogus logging": (["--logging", "bogus"], "logging must be offline, online or disabled"),
    "nan discount": (["--gamma", "nan"], "gamma must be a finite number"),
    "absurd batch": (["--batch_size", "100000000000"], "batch_size must be in [1, 1048576], got 100000000000"),
}


def assert_one_sentence(result, expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_command_line_is_one_sentence_and_writes_nothing(case, minari_root, tmp_path):
    args, expected = BAD_INPUT[case]
    run_dir = tmp_path / "run"
    result = run("iql", "--dataset_id", "local/pendulum/medium-v0", "--checkpoints_path", str(run_dir), *args,
                 check=False, cwd=tmp_path)
    assert_one_sentence(result, expected)
    assert result.returncode == 2 and list(tmp_path.iterdir()) == []


METHOD_BAD_INPUT = [
    ("iql", ["--expectile", "1.5"], "expectile must be in (0, 1)"),
    ("iql", ["--beta", "inf"], "beta must be a finite number"),
    ("td3_bc", ["--policy_freq", "0"], "policy_freq must be at least 1"),
    ("awac", ["--beta", "0"], "beta must be above 0"),
    ("cql", ["--num_sampled_actions", "0"], "num_sampled_actions must be at least 1"),
    ("cql", ["--bc_steps", "100", "--max_steps", "50"], "bc_steps must be in [0, 50), got 100"),
    ("dt", ["--context_len", "0"], "context_len must be at least 1"),
    ("dt", ["--dropout", "1.5"], "dropout must be in [0, 1)"),
    ("dt", ["--n_heads", "0"], "n_heads must be at least 1"),
    ("dt", ["--n_heads", "3"], "embed_dim (128) must be a multiple of n_heads (3)"),
    ("mopo", ["--real_ratio", "2"], "real_ratio must be in [0, 1]"),
    ("mopo", ["--n_elites", "9", "--n_models", "7"], "n_elites must be in [1, 7], got 9"),
    ("combo", ["--n_elites", "9", "--n_models", "7"], "n_elites must be in [1, 7], got 9"),
]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_dataset_file_is_one_sentence(damage, minari_root, tmp_path):
    """main_data.hdf5 cut short or overwritten: one sentence naming the dataset, and no run directory."""
    import shutil

    root = tmp_path / "minari"
    shutil.copytree(minari_root / "local" / "pendulum" / "medium-v0", root / "local" / "pendulum" / "medium-v0")
    shutil.copy(minari_root / "local" / "namespace_metadata.json", root / "local" / "namespace_metadata.json")
    data = root / "local" / "pendulum" / "medium-v0" / "data" / "main_data.hdf5"
    data.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 3] if damage == "truncated" else b"x" * 4096)
    result = run("iql", "--dataset_id", "local/pendulum/medium-v0", "--checkpoints_path", str(tmp_path / "run"),
                 "--max_steps", "10", env={"MINARI_DATASETS_PATH": str(root)}, check=False, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "local/pendulum/medium-v0" in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("algo,args,expected", METHOD_BAD_INPUT, ids=lambda x: x if isinstance(x, str) else None)
def test_bad_method_values_are_one_sentence_and_write_nothing(algo, args, expected, tmp_path):
    assert_one_sentence(run(algo, "--checkpoints_path", str(tmp_path / "run"), *args, check=False, cwd=tmp_path),
                        expected)
    assert list(tmp_path.iterdir()) == []


def test_empty_yaml_means_every_default(tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("")
    result = run("iql", "--config_path", str(config), "--max_steps", "-1", check=False, cwd=tmp_path)
    assert_one_sentence(result, "max_steps must be at least 1")  # the YAML itself was read without complaint


@pytest.mark.parametrize("text,expected", [("max_steps: [1\n", "is not readable UTF-8 YAML"),
                                           ("- 1\n- 2\n", "must map TrainConfig fields to values, not a list"),
                                           (b"\xff\xfe max_steps: 3", "is not readable UTF-8 YAML"),
                                           ("checkpoints_path: {a: 1}\n", "not checkpoints_path: {'a': 1}")])
def test_a_bad_yaml_file_is_one_sentence_and_writes_nothing(text, expected, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run("iql", "--config_path", str(config), "--checkpoints_path", str(tmp_path / "run"), check=False,
                 cwd=tmp_path)
    assert_one_sentence(result, expected)
    assert result.returncode == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("algo", ALGOS)
def test_every_script_parses_through_the_checks(algo, tmp_path):
    assert_one_sentence(run(algo, "--max_steps", "-5", check=False, cwd=tmp_path), "max_steps must be at least 1")


def test_a_signal_stops_with_a_checkpoint_that_resumes(minari_root, tmp_path):
    """SIGTERM during training: the run checkpoints the update it reached and exits; the same command
    continues from there to the end (td3_bc: no schedule depends on max_steps, so it may change)."""
    import signal
    import time

    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "algorithms" / "td3_bc.py"), "--logging", "disabled", "--device", "cpu",
               "--eval_episodes", "1", "--dataset_id", "local/pendulum/medium-v0", "--checkpoints_path", str(run_dir),
               "--max_steps", "1000000", "--eval_every", "100"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 300
    while not (run_dir / "log.jsonl").exists() or not (run_dir / "log.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    assert 100 <= step < 1_000_000 and f"stopped at update {step}" in stdout
    resumed = run_process("td3_bc", "--dataset_id", "local/pendulum/medium-v0", "--checkpoints_path", str(run_dir),
                          "--max_steps", str(step + 50), "--eval_every", "100", "--resume", "true", cwd=tmp_path)
    assert f"step {step + 50}:" in resumed.stdout
    assert json.loads((run_dir / "finished.json").read_text())["step"] == step + 50


def test_a_script_copied_alone_into_an_empty_directory_runs(minari_root, tmp_path):
    """The promise of one self-contained file: a copy with nothing of the project around it trains, writes
    its run record and resumes."""
    import shutil

    shutil.copy(ROOT / "algorithms" / "td3_bc.py", tmp_path / "td3_bc.py")
    command = [sys.executable, "td3_bc.py", "--logging", "disabled", "--device", "cpu", "--eval_episodes", "1",
               "--dataset_id", "local/pendulum/medium-replay-v0", "--max_steps", "20", "--eval_every", "10"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "td3_bc" / "local" / "pendulum" / "medium-replay-v0" / "seed0"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["max_steps"] == 20 and "commit" not in record  # the sweep records the commit
    dataset = record["dataset"]  # the size and build of the data the run read
    assert dataset["id"] == "local/pendulum/medium-replay-v0" and dataset["episodes"] >= 1
    assert dataset["transitions"] >= dataset["episodes"] and len(dataset["sha256"]) == 64
    assert (run_dir / "finished.json").exists() and (run_dir / "policy.pt2").exists()
    evaluations = [row for row in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "eval/return" in row]
    assert evaluations and all(math.isfinite(row["eval/q_initial"]) for row in evaluations)  # Q_1(s0, pi(s0))
