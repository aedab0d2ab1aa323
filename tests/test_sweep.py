"""tools/sweep.py and tools/make_results.py: tables and claims from hand-written logs (numbers checked
by hand), then a real tiny grid run locally (skip on rerun, a failing run beside a good one) and on
a local Ray instance."""

import csv
import json
from pathlib import Path

import pytest

import make_results
import sweep

MEDIUM_REPLAY = "local/pendulum/medium-replay-v0"
TINY = ["max_steps=20", "eval_every=10", "eval_episodes=1", "logging=disabled", "device=cpu"]


def write_run(root: Path, variant: str, dataset: str, seed: int, scores: dict, extra: dict | None = None,
              lines: tuple = ()) -> Path:
    """A run directory with one evaluation record per (step: score), a training-only record between them."""
    run_dir = root / variant / dataset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    records = []
    for step, score in scores.items():
        records.append({"step": step - 5, "wall_time": 0.0, "train/loss": 1.0})
        records.append({"step": step, "wall_time": 0.0, "eval/return": -200.0, "eval/normalized_score": score,
                        **(extra or {})})
    text = "".join(json.dumps(r) + "\n" for r in records) + "".join(lines)
    (run_dir / "log.jsonl").write_text(text)
    (run_dir / "command.txt").write_text(f"cd /x && OMP_NUM_THREADS=1 python algorithms/{variant}.py --seed {seed} "
                                         f"--max_steps 20 --eval_every 10 --eval_episodes 5\n")
    return run_dir


@pytest.fixture
def fake_root(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "bc", MEDIUM_REPLAY, 0, {10: 20.0, 20: 30.0})
    # seed 1 was resumed: step 20 is logged twice and the last record wins; a line cut by a crash is ignored.
    write_run(root, "bc", MEDIUM_REPLAY, 1, {10: 50.0, 20: 99.0},
              lines=(json.dumps({"step": 20, "eval/normalized_score": 40.0}) + "\n", '{"step": 3'))
    write_run(root, "td3_bc", MEDIUM_REPLAY, 0, {10: 60.0, 20: 70.0})
    write_run(root, "td3_bc", MEDIUM_REPLAY, 1, {10: 90.0, 20: 80.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 0, {10: 10.0, 20: 12.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 1, {10: 10.0, 20: 14.0})
    return root


def read_csv(path: Path) -> dict:
    return {(row["variant"], row["dataset"]): row for row in csv.DictReader(path.open())}


def test_scores_and_claims_from_hand_written_logs(fake_root, tmp_path):
    out = tmp_path / "results"
    claims = make_results.make_results(fake_root, out, command="python tools/sweep.py --fake")
    rows = read_csv(out / "scores.csv")
    # bc: final 30 and 40 -> 35 +- 5 (population std); best 30 and 50 -> 40 +- 10.
    bc = rows["bc", MEDIUM_REPLAY]
    assert (bc["n_seeds"], float(bc["final_mean"]), float(bc["final_std"])) == ("2", 35.0, 5.0)
    assert (float(bc["best_mean"]), float(bc["best_std"])) == (40.0, 10.0)
    # td3_bc: final 70 and 80 -> 75 +- 5; best 70 and 90 -> 80 +- 10.
    td3 = rows["td3_bc", MEDIUM_REPLAY]
    assert (float(td3["final_mean"]), float(td3["final_std"]), float(td3["best_mean"])) == (75.0, 5.0, 80.0)
    assert float(rows["bc_10", "average of 1 dataset"]["final_mean"]) == 13.0

    verdicts = {i: result for i, (_, result, _) in enumerate(claims, 1)}
    assert verdicts[1] == "PASS"  # td3_bc 75 > bc 35
    assert verdicts[2] == "FAIL"  # bc_10 13 <= bc 35
    assert verdicts[3] == verdicts[4] == verdicts[5] == "NOT RUN"
    assert verdicts[6] == "PASS"  # the real algorithms/iql.py
    text = (out / "claims.md").read_text()
    assert "td3_bc 75.0 ± 5.0 (2 seeds) > bc 35.0 ± 5.0 (2 seeds)" in text
    assert "python tools/sweep.py --fake" in text and "20 updates per run" in text
    md = (out / "scores.md").read_text()
    assert "| local/pendulum/medium-replay-v0 | 35.0 ± 5.0 (2 seeds) | 13.0 ± 1.0 (2 seeds) | 75.0 ± 5.0 (2 seeds) |" in md
    assert (out / "curves.png").stat().st_size > 0


def test_claims_on_expert_dt_and_cql(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "bc", "local/pendulum/expert-v0", 0, {10: 92.0})
    write_run(root, "bc", "local/pendulum/expert-v0", 1, {10: 96.0})
    write_run(root, "dt", MEDIUM_REPLAY, 0, {10: 30.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 0, {10: 35.0})
    write_run(root, "iql", MEDIUM_REPLAY, 0, {10: 60.0})
    write_run(root, "cql", MEDIUM_REPLAY, 0, {10: 50.0}, {"eval/q_initial": -120.0, "eval/mc_return_initial": -100.0})
    write_run(root, "cql", MEDIUM_REPLAY, 1, {10: 50.0}, {"eval/q_initial": -90.0, "eval/mc_return_initial": -100.0})
    claims = make_results.make_results(root, tmp_path / "results", command="x")
    verdicts = {i: result for i, (_, result, _) in enumerate(claims, 1)}
    assert verdicts[3] == "PASS"  # 94 is within 10 of 100
    assert verdicts[4] == "PASS"  # dt 30 within 10 of bc_10 35, and below iql 60 and cql 50
    assert verdicts[5] == "FAIL"  # seed 1: Q -90 >= Monte Carlo -100
    assert "Q(s_0, pi(s_0)) = -90.00 >= Monte Carlo return -100.00" in claims[4][2][1]
    # command.txt says --max_steps 20 and the logs stop at 10: the tables say so.
    assert "bc/local/pendulum/expert-v0/seed0: unfinished, last evaluation at update 10 of 20" \
        in (tmp_path / "results" / "scores.md").read_text()


def test_variants_and_sets_become_flags(tmp_path):
    runs = sweep.plan(["bc", "bc_10", "td3_bc"], ["local/pendulum/medium-v0"], [3], tmp_path,
                      sweep.parse_sets(["max_steps=50", "eval_targets=[-150.0]"]), {})
    bc, bc_10, td3 = runs
    assert bc.args[:3] == ["algorithms/bc_filtered.py", "--config_path", "configs/bc_filtered/pendulum-medium.yaml"]
    assert bc.args[-6:] == ["--frac", "1.0", "--max_steps", "50", "--eval_targets", "[-150.0]"]
    assert bc_10.args[bc_10.args.index("--frac") + 1] == "0.1" and td3.args[0] == "algorithms/td3_bc.py"
    assert bc.run_dir == str(tmp_path / "bc" / "local/pendulum/medium-v0" / "seed3") and bc.max_steps == 50
    # Without --set max_steps, the config's value decides when a run is finished.
    assert sweep.plan(["iql"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})[0].max_steps == 30_000
    with pytest.raises(SystemExit, match="no_such_algo"):
        sweep.plan(["no_such_algo"], ["local/pendulum/medium-v0"], [0], tmp_path, [], {})


def test_sweep_runs_skips_and_reports_a_failure(minari_root, tmp_path):
    root = tmp_path / "bench"
    grid = dict(sets=TINY, workers=2, progress=False)
    # An unknown dataset fails both its runs; the good runs beside them still finish.
    first = sweep.run_grid(["bc"], ["local/pendulum/nonexistent-v0", "local/pendulum/medium-v0"], [0, 1], root, **grid)
    assert [r["status"] for r in first] == ["failed", "failed", "done", "done"], first
    assert "nonexistent" in first[0]["error"]
    assert "nonexistent" in (root / "bc" / "local/pendulum/nonexistent-v0" / "seed1" / "error.txt").read_text()
    assert "2 done, 0 skipped, 2 failed" in sweep.summary(first)
    run_dir = root / "bc" / "local/pendulum/medium-v0" / "seed1"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval/normalized_score" in r] == [10, 20]
    command = (run_dir / "command.txt").read_text()
    assert "OMP_NUM_THREADS=1" in command and "--frac 1.0" in command and "--seed 1" in command

    again = sweep.run_grid(["bc"], ["local/pendulum/medium-v0"], [0, 1], root, **grid)
    assert [r["status"] for r in again] == ["skipped", "skipped"]

    make_results.make_results(root, tmp_path / "results", command="tiny")
    row = read_csv(tmp_path / "results" / "scores.csv")["bc", "local/pendulum/medium-v0"]
    assert row["n_seeds"] == "2"
    assert "nonexistent-v0/seed1: failed" in (tmp_path / "results" / "scores.md").read_text()


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
