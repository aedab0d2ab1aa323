"""tools/sweep.py: variants and --set items as flags, the commit directory, then a real tiny grid run locally
(skip on rerun, a failing run beside a good one, commits, and the tables from the committed files alone) and
on a local Ray instance.  The tables themselves: tests/test_results.py."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import sweep, variants
from tools.processes import machine_description
from tools.results import make_results
from tools.results.runs import CORE
from conftest import TINY as TINY_SIZE

CORE_MR = CORE[0]
TINY = ["max_steps=20", "eval_every=10", "eval_episodes=1", "logging=disabled", "device=cpu"]


def write_run(root: Path, variant: str, dataset: str, seed: int) -> Path:
    """A run directory with one evaluation in its log, as a script leaves it before it finishes."""
    run_dir = root / variant / dataset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "log.jsonl").write_text(json.dumps({"step": 20, "eval/normalized_score": 1.0}) + "\n")
    (run_dir / "run.json").write_text(json.dumps({"algo": variant, "config": {}, "commit": None, "torch": None,
                                                  "command": []}))
    (run_dir / "command.txt").write_text("cd /x && python algorithms/x.py\n")
    return run_dir


def read_csv(path: Path) -> dict:
    return {(row["variant"], row["dataset"]): row for row in csv.DictReader(path.open())}


def assert_records_the_machine_and_the_data(run_dir: Path) -> None:
    """The run's run.json names the build it read (the script's record: episodes, transitions, content hash) and the
    machine it ran on (the sweep's); no machine.txt or dataset.txt beside it."""
    record = json.loads((run_dir / "run.json").read_text())
    assert record["machine"] == machine_description()
    dataset = record["dataset"]
    assert dataset["id"] == "local/pendulum/medium-v0" and dataset["transitions"] == TINY_SIZE
    assert isinstance(dataset["episodes"], int) and len(dataset["sha256"]) == 64
    assert not (run_dir / "machine.txt").exists() and not (run_dir / "dataset.txt").exists()


def test_variants_and_sets_become_flags(tmp_path):
    runs = variants.plan(["bc", "bc_10", "td3_bc"], ["local/pendulum/medium-v0"], [3], tmp_path,
                      variants.parse_sets(["max_steps=50", "eval_targets=[-150.0]"]), {})
    bc, bc_10, td3 = runs
    assert bc.args[:3] == ["algorithms/bc_filtered.py", "--config_path", "configs/bc_filtered/pendulum-medium.yaml"]
    assert bc.args[-6:] == ["--frac", "1.0", "--max_steps", "50", "--eval_targets", "[-150.0]"]
    assert bc_10.args[bc_10.args.index("--frac") + 1] == "0.1" and td3.args[0] == "algorithms/td3_bc.py"
    assert bc.run_dir == str(tmp_path / "bc" / "local/pendulum/medium-v0" / "seed3") and bc.max_steps == 50
    # The ablations of the claims: MOPO without its penalty, TD3+BC without its BC term.
    mopo_nopen, td3_nobc = variants.plan(["mopo_nopen", "td3_nobc"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    assert mopo_nopen.args[0] == "algorithms/mopo.py" and mopo_nopen.args[-2:] == ["--penalty_coef", "0.0"]
    assert td3_nobc.args[0] == "algorithms/td3_bc.py" and td3_nobc.args[-2:] == ["--bc_coef", "0.0"]
    # DT with the authors' N(0, 1) timestep embedding (ours starts it as GPT-2, std 0.02).
    dt_init1, = variants.plan(["dt_init1"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    assert dt_init1.args[0] == "algorithms/dt.py" and dt_init1.args[-2:] == ["--timestep_embedding_std", "1.0"]
    # Without --set max_steps, the config's value decides when a run is finished.
    assert variants.plan(["iql"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})[0].max_steps == 30_000
    with pytest.raises(SystemExit, match="no_such_algo"):
        variants.plan(["no_such_algo"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    # CQL with the policy's mean next action in its target (the peer's choice), beside the authors' sampled a'.
    mean_target, = variants.plan(["cql_mean_target"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})
    assert mean_target.args[0] == "algorithms/cql.py" and mean_target.args[-2:] == ["--target_action", "mean"]
    # The bf16 equivalence runs (issue 47): the script with --precision bf16, in a directory of their own.
    for run in variants.plan(["td3_bc_bf16", "iql_bf16", "cql_bf16", "combo_bf16"], ["local/pendulum/medium-v0"], [0],
                          tmp_path, [], {}):
        script = Path(run.args[0]).stem
        assert run.args[-2:] == ["--precision", "bf16"] and run.run_dir.startswith(str(tmp_path / f"{script}_bf16"))


@pytest.mark.parametrize("argv,expected", [
    (["--set", "max_steps=abc"], "max_steps must be a positive integer, got 'abc'"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--seeds", "-1"], "--seeds must be 0 or more"),
])
def test_bad_sweep_flags_are_one_sentence(argv, expected, tmp_path):
    with pytest.raises(SystemExit, match=expected):
        sweep.main(["--variants", "iql", "--datasets", "local/pendulum/medium-v0", "--root", str(tmp_path),
                    "--commit-dir", "none", "--dry-run", *argv])


def test_commit_run_copies_the_small_files_of_a_finished_run(tmp_path):
    run_dir = write_run(tmp_path / "bench", "bc", CORE_MR, 0)
    (run_dir / "checkpoint.pt").write_bytes(b"big")
    (run_dir / "policy.pt2").write_bytes(b"big")
    (run_dir / "machine.txt").write_text("cpu\n")  # an older sweep's file: no longer committed
    committed = tmp_path / "committed" / "bc" / CORE_MR / "seed0"
    assert not sweep.commit_run(run_dir, committed)  # unfinished: nothing to commit
    (run_dir / "finished.json").write_text('{"step": 20}')
    assert sweep.commit_run(run_dir, committed)
    assert sorted(p.name for p in committed.iterdir()) == ["command.txt", "finished.json", "log.jsonl",
                                                           "run.json"]  # no commit.txt: write_run made none
    assert not sweep.commit_run(run_dir, committed)  # the same run is committed already


def test_a_run_works_in_its_run_directory(tmp_path, monkeypatch):
    """What a library writes to the working directory (MuJoCo's MUJOCO_LOG.TXT) stays with its run: the child works in
    its run directory, given the script and its config by absolute path; commit.txt records the checkout's commit (a
    script copied alone has no git: run.json records none)."""
    seen = {}

    def fake_child(args, **kwargs):
        seen.update(args=args, cwd=kwargs["cwd"])
        return 0

    monkeypatch.setattr(sweep, "run_child", fake_child)
    run, = variants.plan(["td3_bc"], ["local/pendulum/medium-replay-v0"], [0], tmp_path, [], {})
    sweep.run_one(run, {"OMP_NUM_THREADS": "1"}, str(sweep.PROJECT))
    args, run_dir = seen["args"], Path(run.run_dir)
    assert Path(seen["cwd"]) == run_dir and args[1] == str(sweep.PROJECT / "algorithms" / "td3_bc.py")
    assert args[args.index("--config_path") + 1] == str(sweep.PROJECT / "configs" / "td3_bc" / "pendulum-medium-replay.yaml")
    assert (run_dir / "command.txt").read_text().startswith(f"cd {run_dir} && OMP_NUM_THREADS=1 python ")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=sweep.PROJECT, capture_output=True, text=True).stdout
    assert (run_dir / "commit.txt").read_text().strip() == (commit.strip() or "unknown")


def test_sweep_skips_a_run_committed_by_an_earlier_session(tmp_path, monkeypatch):
    started = []

    def fake_script(args, **kwargs):  # the script's side of the contract: run.json, a log, a checkpoint, finished.json
        run_dir = Path(args[args.index("--checkpoints_path") + 1])
        started.append(run_dir.name)
        (run_dir / "run.json").write_text(json.dumps({"algo": "bc_filtered", "config": {}, "command": []}))
        (run_dir / "log.jsonl").write_text(json.dumps({"step": 20, "eval/normalized_score": 1.0}) + "\n")
        (run_dir / "checkpoint.pt").write_bytes(b"big")
        (run_dir / "finished.json").write_text('{"step": 20}')
        return 0

    monkeypatch.setattr(sweep, "run_child", fake_script)
    committed, bench = tmp_path / "committed", tmp_path / "bench"
    done = committed / "bc" / "local/pendulum/medium-v0" / "seed0"
    done.mkdir(parents=True)
    (done / "finished.json").write_text('{"step": 20}')
    (done / "log.jsonl").write_text("")
    grid = dict(sets=TINY, progress=False, commit_dir=committed, command="python -m tools.sweep --the-grid")
    # Seed 0 is committed at the budget asked for: skipped without running.  Seed 1 runs and is committed.
    results = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0, 1], bench, **grid)
    assert [(r["status"], r["committed"]) for r in results] == [("skipped", True), ("done", True)]
    assert started == ["seed1"] and not (bench / "bc" / "local/pendulum/medium-v0" / "seed0").exists()
    seed1 = committed / "bc" / "local/pendulum/medium-v0" / "seed1"
    assert sorted(p.name for p in seed1.iterdir()) == ["command.txt", "commit.txt", "finished.json", "log.jsonl",
                                                       "run.json"]
    assert json.loads((seed1 / "run.json").read_text())["machine"] == machine_description()  # the sweep's addition
    # A run committed at a smaller budget is run again (resuming in ROOT) and its commit replaced.
    (done / "finished.json").write_text('{"step": 10}')
    again = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0, 1], bench, **grid)
    assert [(r["status"], r["committed"]) for r in again] == [("done", True), ("skipped", True)]
    assert started == ["seed1", "seed0"] and json.loads((done / "finished.json").read_text())["step"] == 20
    # The command is appended to both histories each time the sweep runs (people read them; no tool parses them).
    assert (committed / "sweeps.txt").read_text().count("--the-grid") == 2
    assert (bench / "sweeps.txt").read_text().count("--the-grid") == 2


def test_sweep_runs_skips_and_reports_a_failure(minari_root, tmp_path):
    root = tmp_path / "bench"
    grid = dict(sets=TINY, workers=2, progress=False)
    # An unknown dataset fails both its runs; the good runs beside them still finish.
    committed = tmp_path / "committed"
    first = sweep.run_grid(["bc"], ["local/pendulum/nonexistent-v0", "local/pendulum/medium-v0"], [0, 1], root,
                           commit_dir=committed, **grid)
    assert [r["status"] for r in first] == ["failed", "failed", "done", "done"], first
    assert [bool(r.get("committed")) for r in first] == [False, False, True, True]
    assert not (committed / "bc" / "local/pendulum/nonexistent-v0").exists()
    assert sorted(p.name for p in (committed / "bc" / "local/pendulum/medium-v0" / "seed1").iterdir()) == \
        ["command.txt", "commit.txt", "finished.json", "log.jsonl", "run.json"]
    record = json.loads((committed / "bc" / "local/pendulum/medium-v0" / "seed1" / "run.json").read_text())
    assert (record["algo"], record["config"]["frac"], record["config"]["max_steps"]) == ("bc_filtered", 1.0, 20)
    assert "nonexistent" in first[0]["error"]
    assert "nonexistent" in (root / "bc" / "local/pendulum/nonexistent-v0" / "seed1" / "error.txt").read_text()
    assert "2 done, 0 skipped, 2 failed" in sweep.summary(first)
    run_dir = root / "bc" / "local/pendulum/medium-v0" / "seed1"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval/normalized_score" in r] == [10, 20]
    command = (run_dir / "command.txt").read_text()
    assert "OMP_NUM_THREADS=1" in command and "--frac 1.0" in command and "--seed 1" in command
    assert_records_the_machine_and_the_data(run_dir)

    again = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0, 1], root, **grid)
    assert [r["status"] for r in again] == ["skipped", "skipped"]

    make_results(root, tmp_path / "results", command="tiny")
    row = read_csv(tmp_path / "results" / "scores.csv")["bc", "local/pendulum/medium-v0"]
    assert row["n_seeds"] == "2"
    assert re.search(rf"- local/pendulum/medium-v0: \d+ episodes, {TINY_SIZE} steps: 2 runs\n",
                     (tmp_path / "results" / "scores.md").read_text())
    assert "nonexistent-v0/seed1: failed" in (tmp_path / "results" / "scores.md").read_text()
    # The committed logs alone (no checkpoint, no run directory) give the same table.
    make_results(committed, tmp_path / "from_commit", command="tiny")
    assert read_csv(tmp_path / "from_commit" / "scores.csv")["bc", "local/pendulum/medium-v0"] == row


def test_sigterm_to_the_sweep_stops_its_runs_resumably(minari_root, tmp_path):
    """kill <sweep pid> must not leave its runs going on alone (a second sweep would then share their directories):
    the run gets SIGTERM, checkpoints and exits, and the sweep exits with 143."""
    root = tmp_path / "bench"
    command = [sys.executable, "-m", "tools.sweep", "--variants", "bc", "--datasets", "local/pendulum/medium-v0",
               "--seeds", "0", "--root", str(root), "--commit-dir", "none", "--set", "max_steps=1000000",
               "eval_every=500000", "logging=disabled", "device=cpu"]
    sweeper = subprocess.Popen(command, cwd=Path(sweep.__file__).parents[1], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = root / "bc" / "local/pendulum/medium-v0" / "seed0" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text()) and time.time() < deadline:  # the run is training
        time.sleep(0.5)
    assert log.exists(), sweeper.stderr.read() if sweeper.poll() is not None else "the run never logged"
    sweeper.send_signal(signal.SIGTERM)
    assert sweeper.wait(timeout=120) == 143
    assert "the same command resumes" in sweeper.stderr.read()
    assert (log.parent / "checkpoint.pt").exists() and not (log.parent / "finished.json").exists()
    assert subprocess.run(["pgrep", "-f", str(log.parent)], capture_output=True).returncode == 1  # no run left


def test_sweep_on_a_local_ray_instance(minari_root, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        results = sweep.run_grid(["bc_10"], ["local/pendulum/medium-v0"], [0, 1], tmp_path / "bench", sets=TINY,
                                 workers=2, ray_address="local", progress=False)
        assert not ray.is_initialized()  # the sweep shuts down the instance it started
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert [r["status"] for r in results] == ["done", "done"], results
    for seed in (0, 1):
        run_dir = tmp_path / "bench" / "bc_10" / "local/pendulum/medium-v0" / f"seed{seed}"
        assert (run_dir / "checkpoint.pt").exists() and "--frac 0.1" in (run_dir / "command.txt").read_text()
        # The Ray worker imports tools.sweep (the project on its path) and records the machine it ran on.
        assert_records_the_machine_and_the_data(run_dir)


def test_sweep_on_a_ray_instance_started_by_the_caller(minari_root, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0], tmp_path / "bench", sets=TINY,
                                 workers=1, ray_address="local", progress=False)
        assert ray.is_initialized()  # the caller's instance is left to the caller
    finally:
        ray.shutdown()
    assert [r["status"] for r in results] == ["done"], results
    run_dir = tmp_path / "bench" / "bc" / "local/pendulum/medium-v0" / "seed0"
    assert_records_the_machine_and_the_data(run_dir)
