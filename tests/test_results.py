"""tools/results (make_results.py): tables on both scales, intervals, the aggregate grouped by budget, the peer
table, the published numbers, every claim (PASS and FAIL, and its reading) from hand-written run directories
(numbers checked by hand), the reproduce commands from run.json, the plots' rules; tools/migrate_run_json.py."""

import csv
import json
import subprocess
from pathlib import Path

import pytest

import migrate_run_json
import peer_d3rlpy
import sweep
from results import claims as claims_module
from results import make_results, plots, published, readme, reproduce, runs as runs_module, stats

MEDIUM_REPLAY = "local/pendulum/medium-replay-v0"
CORE_MR, CORE_HC, CORE_ME = runs_module.CORE
NARROW_WALKER, NARROW_CHEETAH = claims_module.NARROW
RETURN = -200.0  # every hand-written evaluation's return: D4RL scale Hopper -5.5, HalfCheetah 0.6


def write_run(root: Path, variant: str, dataset: str, seed: int, scores: dict, extra: dict | None = None,
              lines: tuple = (), budget: str = "--max_steps 20 --eval_every 10 --eval_episodes 5",
              returns: dict | None = None) -> Path:
    """A run directory as a sweep commits it: log.jsonl with one evaluation record per (step: score) and a
    training-only record between them, and run.json (the script's record of what the run is)."""
    run_dir = root / variant / dataset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    records = []
    for step, score in scores.items():
        records.append({"step": step - 5, "wall_time": 0.0, "train/loss": 1.0})
        records.append({"step": step, "wall_time": 0.0, "eval/return": (returns or {}).get(step, RETURN),
                        "eval/normalized_score": score, **(extra or {})})
    text = "".join(json.dumps(r) + "\n" for r in records) + "".join(lines)
    (run_dir / "log.jsonl").write_text(text)
    checkpoints = f"/x/runs/bench/{variant}/{dataset}/seed{seed}"
    words = budget.split()
    given = dict(zip(words[::2], words[1::2]))
    if variant.startswith("d3rlpy_"):
        algo = variant.removeprefix("d3rlpy_")
        command = ["python", "tools/peer_d3rlpy.py", "--algo", algo, "--dataset_id", dataset, "--seed", str(seed),
                   "--checkpoints_path", checkpoints, *words]
    else:
        algo, flags = sweep.VARIANTS.get(variant, (variant, []))
        command = ["python", f"algorithms/{algo}.py", "--config_path", f"configs/{algo}/x.yaml", "--dataset_id",
                   dataset, "--seed", str(seed), "--checkpoints_path", checkpoints, *flags, *words]
    config = {"dataset_id": dataset, "seed": seed, "checkpoints_path": checkpoints, "device": "auto",
              **{k[2:]: int(v) if v.isdigit() else v for k, v in given.items()}}
    (run_dir / "run.json").write_text(json.dumps({"algo": algo, "config": config, "commit": None, "torch": None,
                                                  "command": command}))
    return run_dir


def d4rl(env: str, episode_return: float) -> float:
    low, high = {"hopper": (-20.272305, 3234.3), "halfcheetah": (-280.178953, 12135.0)}[env]
    return 100 * (episode_return - low) / (high - low)


@pytest.fixture
def fast_bootstrap(monkeypatch):
    monkeypatch.setattr(stats, "REPS", 300)


@pytest.fixture
def fake_root(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", MEDIUM_REPLAY, 0, {10: 20.0, 20: 30.0})
    # seed 1 was resumed: step 20 is logged twice and the last record wins; a line cut by a crash is ignored.
    write_run(root, "bc", MEDIUM_REPLAY, 1, {10: 50.0, 20: 99.0},
              lines=(json.dumps({"step": 20, "eval/normalized_score": 40.0, "eval/return": RETURN}) + "\n",
                     '{"step": 3'))
    write_run(root, "td3_bc", MEDIUM_REPLAY, 0, {10: 60.0, 20: 70.0})
    write_run(root, "td3_bc", MEDIUM_REPLAY, 1, {10: 90.0, 20: 80.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 0, {10: 10.0, 20: 12.0})
    write_run(root, "bc_10", MEDIUM_REPLAY, 1, {10: 10.0, 20: 14.0})
    return root


def read_csv(path: Path) -> dict:
    return {(row["variant"], row["dataset"]): row for row in csv.DictReader(path.open())}


def verdicts(found) -> list[str]:
    return [c.verdict for c in found]


def details(found) -> dict:
    return {c.label: "\n".join(c.lines) for c in found}


def test_scores_from_hand_written_logs(fake_root, tmp_path):
    out = tmp_path / "results"
    make_results(fake_root, out, command="python tools/sweep.py --fake")
    rows = read_csv(out / "scores.csv")
    # bc: final 30 and 40 -> 35 +- 5 (population std); best 30 and 50 -> 40 +- 10.
    bc = rows["bc", MEDIUM_REPLAY]
    assert (bc["n_seeds"], float(bc["final_mean"]), float(bc["final_std"]), bc["updates"]) == ("2", 35.0, 5.0, "20")
    assert (float(bc["best_mean"]), float(bc["best_std"]), bc["suite"]) == (40.0, 10.0, "Pendulum")
    assert bc["final_d4rl_mean"] == ""  # Pendulum has no D4RL counterpart
    # td3_bc: final 70 and 80 -> 75 +- 5; best 70 and 90 -> 80 +- 10.
    td3 = rows["td3_bc", MEDIUM_REPLAY]
    assert (float(td3["final_mean"]), float(td3["final_std"]), float(td3["best_mean"])) == (75.0, 5.0, 80.0)
    # The MuJoCo grid has no run: every planned core cell is there, as not run.
    assert rows["iql", CORE_MR]["updates"] == "not run" and rows["iql", CORE_MR]["n_seeds"] == "0"
    md = (out / "scores.md").read_text()
    assert "| bc | 35.0 ± 5.0 (n=2, 20) |" in md and "| td3_bc | 75.0 ± 5.0 (n=2, 20) |" in md
    assert "python tools/sweep.py --fake" in md and "20 updates per run" in md
    assert (out / "curves-pendulum.png").stat().st_size > 0 and (out / "profiles.png").stat().st_size > 0
    claims = (out / "claims.md").read_text()
    assert claims.count("NOT RUN") >= 9  # no MuJoCo run: every claim names what is missing
    assert "missing: bc_10 not run on local/hopper/medium-replay-v0; bc not run on" in claims


def test_the_dataset_build_comes_from_run_json_else_dataset_txt(tmp_path):
    """Scripts record the data they read in run.json; runs made before read dataset.txt (the sweep's); the sweep's
    commit.txt names the checkout."""
    new = write_run(tmp_path, "iql", CORE_MR, 0, {20: 50.0})
    record = json.loads((new / "run.json").read_text())
    record["dataset"] = {"id": CORE_MR, "episodes": 12, "transitions": 3000, "sha256": "ab" * 32}
    (new / "run.json").write_text(json.dumps(record))
    (new / "dataset.txt").write_text(f"{CORE_MR}: 11 episodes, 2999 steps\n")  # run.json wins
    (new / "commit.txt").write_text("0123456789abcdef\n")
    old = write_run(tmp_path, "iql", CORE_MR, 1, {20: 50.0})
    (old / "dataset.txt").write_text(f"{CORE_MR}: 11 episodes, 2999 steps\n")
    by_seed = {r.seed: r for r in runs_module.load_runs([tmp_path])}
    assert (by_seed[0].dataset_build, by_seed[1].dataset_build) == ("12 episodes, 3000 steps", "11 episodes, 2999 steps")
    from results.rerun import commit_of

    assert (commit_of(by_seed[0]), commit_of(by_seed[1])) == ("0123456", "not recorded")


def test_d4rl_scale_beside_the_local_one(tmp_path, fast_bootstrap):
    """D4RL's reference returns (results/d4rl_reference.csv): its expert return scores 100, its random 0."""
    root = tmp_path / "runs"
    write_run(root, "iql", CORE_MR, 0, {10: 50.0, 20: 90.0}, returns={10: -20.272305, 20: 3234.3})
    write_run(root, "iql", CORE_MR, 1, {10: 40.0, 20: 30.0}, returns={10: 1000.0, 20: 1607.01})
    write_run(root, "iql", CORE_HC, 0, {10: 50.0}, returns={10: 12135.0})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    rows = read_csv(out / "scores.csv")
    mr = rows["iql", CORE_MR]
    assert float(mr["final_d4rl_mean"]) == pytest.approx((100.0 + d4rl("hopper", 1607.01)) / 2, abs=1e-3)
    assert float(mr["best_d4rl_mean"]) == pytest.approx((100.0 + d4rl("hopper", 1000.0)) / 2, abs=1e-3)
    assert float(rows["iql", CORE_HC]["final_d4rl_mean"]) == pytest.approx(100.0)
    md = (out / "scores.md").read_text()
    assert "| 60.0 ± 30.0 / D4RL 75.0 ± 25.0 (n=2, 20) |" in md
    # The table's header cites where D4RL's numbers come from.
    assert "d4rl/infos.py, Hopper lines 139 and 229" in md and "Hopper -20.272305 / 3234.3" in md
    assert "/ D4RL" in (out / "peer.md").read_text()


def test_iqm_and_intervals_on_known_cases(fast_bootstrap):
    # IQM of 0..7: the middle half 2, 3, 4, 5 -> 3.5, inside its interval.
    point, low, high = stats.iqm_interval([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert point == 3.5 and low < 3.5 < high
    # Stratified: every dataset's seeds agree, so every resample is the same (an unstratified bootstrap
    # over the pooled 10, 10, 20, 20 would vary).
    assert stats.iqm_interval([[10, 10], [20, 20]]) == (15.0, 15.0, 15.0)
    # The difference of means resamples each side on its own: constant sides give a point.
    assert stats.difference_interval([3, 3, 3], [1, 1]) == (2.0, 2.0, 2.0)
    diff, low, high = stats.difference_interval([1, 2, 3], [0, 0, 0])
    assert diff == 2.0 and 1.0 <= low < 2.0 < high <= 3.0
    # The same logs give the same intervals.
    assert stats.difference_interval([1, 5, 9], [2, 3]) == stats.difference_interval([1, 5, 9], [2, 3])


def test_partial_grid_is_shown_as_partial(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed, score in enumerate([40.0, 50.0]):
        write_run(root, "iql", CORE_MR, seed, {2500: score - 10, 5000: score})
    write_run(root, "iql", CORE_ME, 0, {1000: 70.0})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    md = (out / "scores.md").read_text()
    final = md[md.index("## MuJoCo: final score"):md.index("## MuJoCo: best score")]
    assert f"| variant | {CORE_MR} | {CORE_HC} | {CORE_ME} |" in final
    assert "| iql | 45.0 ± 5.0 / D4RL -5.5 ± 0.0 (n=2, 5k) | not run | 70.0 ± 0.0 / D4RL -5.5 ± 0.0 (n=1, 1k) |" \
        in final
    assert "| bc | not run | not run | not run |" in final
    assert f"| - | iql | partial: not run on {CORE_HC} | - | - |" in md
    agg = list(csv.DictReader((out / "aggregate.csv").open()))
    assert {r["variant"]: r["note"] for r in agg}["bc"] == "not run"


def test_aggregate_iqm_over_the_core_datasets(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for dataset, scores in zip(runs_module.CORE, ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11])):
        for seed, score in enumerate(scores):
            write_run(root, "td3_bc", dataset, seed, {10: float(score)})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    row = {r["variant"]: r for r in csv.DictReader((out / "aggregate.csv").open())}["td3_bc"]
    # 0..11: the middle half 3..8 -> 5.5.
    assert float(row["iqm"]) == 5.5 and float(row["ci_low"]) < 5.5 < float(row["ci_high"])
    assert row["seeds_per_core_dataset"] == "4 + 4 + 4" and row["note"] == "" and row["updates"] == "10"
    # On D4RL's scale every run returned -200: Hopper -5.5 (8 runs), HalfCheetah 0.6 (4 runs); sorted, the
    # middle half (indices 3..8 of 12) is 5 Hopper runs and 1 HalfCheetah run.
    assert float(row["d4rl_iqm"]) == pytest.approx((5 * d4rl("hopper", RETURN) + d4rl("halfcheetah", RETURN)) / 6,
                                                   abs=1e-3)
    assert "| 10 | td3_bc | 5.5 [" in (out / "scores.md").read_text()


def test_aggregate_groups_rows_by_budget(tmp_path, fast_bootstrap):
    """dt at 8k scores above iql at 50k: the rows say their budgets and the 50k group comes first."""
    root = tmp_path / "runs"
    for dataset in runs_module.CORE:
        for seed in (0, 1):
            write_run(root, "iql", dataset, seed, {50000: 40.0 + seed}, budget="--max_steps 50000")
            write_run(root, "dt", dataset, seed, {8000: 80.0 + seed}, budget="--max_steps 8000")
            write_run(root, "awr", dataset, seed, {20000 if dataset == CORE_ME else 50000: 30.0 + seed})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    rows = list(csv.DictReader((out / "aggregate.csv").open()))
    assert [(r["variant"], r["updates"]) for r in rows if r["iqm"]] == [
        ("iql", "50k"), ("dt", "8k"), ("awr", "mixed: 20k, 50k")]
    md = (out / "scores.md").read_text()
    assert md.index("| 50k | iql |") < md.index("| 8k | dt |") and "compare rows only within a group" in md


def test_peer_table_side_by_side(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed, (ours, peer) in enumerate([(60.0, 50.0), (62.0, 52.0), (64.0, 54.0)]):
        write_run(root, "iql", CORE_MR, seed, {10: ours})
        write_run(root, "d3rlpy_iql", CORE_MR, seed, {10: peer})
    write_run(root, "bc", CORE_MR, 0, {10: 30.0})
    write_run(root, "d3rlpy_bc", CORE_MR, 0, {10: 20.0})
    out = tmp_path / "results"
    make_results(root, out, command="x")
    peer = (out / "peer.md").read_text()
    line = next(l for l in peer.splitlines() if l.startswith(f"| iql | {CORE_MR} |"))
    assert "| 62.0 ± 1.6 / D4RL -5.5 ± 0.0 (n=3, 10) | 52.0 ± 1.6 / D4RL -5.5 ± 0.0 (n=3, 10) | +10.0 [" in line
    low, high = map(float, line.rsplit("[", 1)[1].rstrip(" |]").split(", "))
    assert 6.0 <= low < 10.0 < high <= 14.0  # each mean resampled within [60, 64] and [50, 54]
    assert "+10.0 (no interval: 2 seeds a side needed)" in peer  # bc: one seed a side
    assert f"| cql | {CORE_MR} | not run | not run | - |" in peer
    rows = {(r["algorithm"], r["dataset"]): r for r in csv.DictReader((out / "peer.csv").open())}
    assert (rows["iql", CORE_MR]["ours_n"], float(rows["iql", CORE_MR]["difference"])) == ("3", 10.0)


# A grid on which every claim holds, and its mirror on which every claim fails.
TARGETS_UP = {"eval/target_3000/normalized_score": 90.0, "eval/target_1500/normalized_score": 45.0}
TARGETS_DOWN = {"eval/normalized_score_3000": 40.0, "eval/normalized_score_1500": 45.0}  # the older key format


def claim_grid(root: Path, holds: bool) -> None:
    def runs(variant, dataset, scores, extra=None, steps=(10, 20)):
        for seed, score in enumerate(scores):
            write_run(root, variant, dataset, seed, {steps[0]: score - 1.0, steps[1]: score},
                      extra(seed) if callable(extra) else extra)

    up = [0.0, 2.0, 4.0]
    for dataset in (CORE_MR, CORE_HC):
        runs("bc", dataset, [20 + x for x in up])
        runs("bc_10", dataset, [(40 if holds else 10) + x for x in up])
        runs("td3_bc", dataset, [(60 if holds else 5) + x for x in up], {"eval/q_initial": 100.0,
                                                                         "eval/discounted_return": 100.0})
        runs("td3_nobc", dataset, [(5 if holds else 70) + x for x in up],
             {"eval/q_initial": 1000.0 if holds else 110.0, "eval/discounted_return": 100.0})
        runs("iql", dataset, [(70 if holds else 25) + x for x in up])
        runs("awr", dataset, [30 + x for x in up])
        runs("dt", dataset, [(30 if holds else 80) + x for x in up], TARGETS_UP)
    runs("bc_10", CORE_ME, [90.0, 92.0, 94.0])
    runs("dt", CORE_ME, [91.0, 93.0, 95.0] if holds else [50.0, 52.0, 54.0], TARGETS_UP if holds else TARGETS_DOWN)
    runs("cql", CORE_MR, [55.0, 56.0, 57.0],
         lambda seed: {"eval/q_initial": 50.0 if holds or seed < 2 else 150.0, "eval/discounted_return": 100.0})
    runs("mopo", CORE_MR, [(50 if holds else 10) + x for x in up])
    runs("mopo_nopen", CORE_MR, [12.0, 13.0, 14.0])
    for dataset in claims_module.NARROW:  # claim 8b: 3 seeds a side at the pre-registered 50k
        runs("td3_bc", dataset, [(60 if holds else 5) + x for x in up], {"eval/q_initial": 100.0,
                                                                         "eval/discounted_return": 100.0},
             steps=(25000, 50000))
        runs("td3_nobc", dataset, [(5 if holds else 70) + x for x in up],
             {"eval/q_initial": 1000.0 if holds else 110.0, "eval/discounted_return": 100.0}, steps=(25000, 50000))


@pytest.mark.parametrize("holds", [True, False])
def test_every_claim_passes_and_fails_on_its_intervals(tmp_path, fast_bootstrap, holds):
    root = tmp_path / "runs"
    claim_grid(root, holds)
    found = make_results(root, tmp_path / "results", command="x")
    assert [c.label for c in found] == ["1", "2", "3", "4", "5", "6", "7", "8", "8b", "9", "10"]
    offline = found[:9]  # claims 9 and 10 need fine-tuning runs: test_offline_to_online_runs_...
    assert verdicts(offline) == ["PASS" if holds else "FAIL"] * 9, [(c.verdict, c.lines) for c in offline]
    lines = details(found)
    text = (tmp_path / "results" / "claims.md").read_text()
    if holds:
        assert f"{CORE_MR}: iql 72.0 ± 1.6 (n=3, 20) - bc 22.0 ± 1.6 (n=3, 20) = +50.0, 95% CI [" in lines["1"]
        assert f"{CORE_HC}: not run (decided without them): cql, bcq, mopo, combo." in lines["1"]
        assert "R_hat_1 = 1500: 45.0, R_hat_1 = 3000: 90.0" in lines["4"]
        assert "seed 2: Q = 50.0, G = 100.0 (update 20)" in lines["5"]
        assert "mean Q - G = +900.0, 95% CI [900.0, 900.0], far above means above 0.5 abs(G) = 50.0: supports" \
            in lines["8"] and "td3_bc for reference: mean Q - G = +0.0" in lines["8"]
        assert f"{NARROW_CHEETAH}: td3_nobc Q(s0, pi(s0)) vs G per seed: seed 0: Q = 1000.0, G = 100.0 (update 50k)" \
            in lines["8b"]
        assert "best TD method iql" in lines["3"] and "inside ±10" in lines["3"]
        assert found[1].reading.startswith("Supported with wide margins: bc_10 leads bc by +20.0 and +20.0 points")
        assert found[8].reading.startswith("Supported as pre-registered")
    else:
        assert "not above 0, does not support bc_10 > bc" in lines["2"]
        assert "not inside ±10" in lines["3"]
        assert "seed 2: Q = 150.0, G = 100.0" in lines["5"] and "not every seed below" in lines["5"]
        assert "does not support the overestimation" in lines["8"]
        # bc_10 - bc = -10 with 3 seeds each: its interval lies below 0.
        assert "a real disagreement with the chapter" in found[1].reading
    assert all(c.reading and c.reading.endswith(".") for c in found)
    assert "| 8 | Extrapolation error" in text and "| 8b | On narrow data" in text
    # Every claim has its Reading under its heading, and the verdict is the last column of the table.
    assert text.count("\nReading: ") == 11 and "| # | claim | reading | verdict |" in text


def test_one_seed_is_shown_not_decided(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    claim_grid(root, holds=True)
    write_run(root, "bcq", CORE_MR, 0, {10: 1.0})  # one seed below bc: shown, cannot fail claim 1
    write_run(root, "cql", CORE_HC, 0, {10: 40.0}, {"eval/q_initial": 30.0, "eval/discounted_return": 80.0})
    for dataset in runs_module.CORE:
        write_run(root, "combo", dataset, 0, {10: 50.0})
    found = make_results(root, tmp_path / "results", command="x")
    assert [found[0].verdict, found[4].verdict] == ["PASS", "PASS"]
    lines = details(found)
    assert f"{CORE_MR}: bcq 1.0 ± 0.0 (n=1, 10) - bc 22.0 ± 1.6 (n=3, 20) = -21.0: 1 seed, shown, not decided " \
           "(an interval needs 2)." in lines["1"]
    assert f"{CORE_HC}: Q(s0, pi(s0)) - G per seed at the final evaluation: seed 0: Q = 30.0, G = 80.0 (update 10): " \
           f"below G; cql has 1 seed on {CORE_HC} (an interval needs 2): shown, not decided." in lines["5"]
    combo = {r["variant"]: r for r in csv.DictReader((tmp_path / "results" / "aggregate.csv").open())}["combo"]
    assert (float(combo["iqm"]), combo["ci_low"], combo["seeds_per_core_dataset"]) == (50.0, "", "1 + 1 + 1")
    assert combo["note"] == f"no CI: fewer than 2 seeds on {', '.join(runs_module.CORE)}"
    # With only one-seed runs the claim names what is missing instead of passing.
    alone = tmp_path / "alone"
    write_run(alone, "cql", CORE_HC, 0, {10: 40.0}, {"eval/q_initial": 30.0, "eval/discounted_return": 80.0})
    assert make_results(alone, tmp_path / "r2", command="x")[4].verdict == "NOT RUN"


def test_a_critic_still_rising_is_said_beside_the_lower_bound(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "cql", CORE_MR, seed, {10: 30.0, 20: 31.0, 30: 32.0}, lines=tuple(
            json.dumps({"step": step, "eval/normalized_score": 30.0, "eval/q_initial": q,
                        "eval/discounted_return": 100.0}) + "\n" for step, q in ((10, 5.0), (20, 9.0), (30, 12.0 + seed))))
    found = make_results(root, tmp_path / "results", command="x")
    claim = found[4]
    assert claim.verdict == "PASS"
    assert "still rising at the final evaluation on every seed (first, last two: 5.0 -> 9.0 -> 12.0; " \
           "5.0 -> 9.0 -> 13.0)" in "\n".join(claim.lines)
    assert claim.reading.startswith("Supported, but weakly on Hopper medium-replay: at 30 updates")
    assert "still rising there (to 13.0, against G of 100.0-100.0)" in claim.reading


def test_claims_not_run_name_what_is_missing(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", CORE_MR, 0, {10: 20.0})
    write_run(root, "bc_10", CORE_MR, 0, {10: 30.0})
    write_run(root, "cql", CORE_MR, 0, {10: 30.0})  # no Q at the initial states in its log
    write_run(root, "cql", CORE_MR, 1, {10: 30.0})
    found = make_results(root, tmp_path / "results", command="x")
    assert verdicts(found) == ["NOT RUN"] * 11
    lines = details(found)
    assert f"bc_10 has 1 seed on {CORE_MR} (an interval needs 2)" in lines["2"]
    assert f"bc_10 not run on {CORE_HC}" in lines["2"]
    assert "2 of 2 cql seeds on local/hopper/medium-replay-v0 logged no eval/q_initial and eval/discounted_return" \
        in lines["5"]
    assert "mopo_nopen not run on local/hopper/medium-replay-v0" in lines["6"]
    assert found[1].reading.startswith("Not decided yet: bc_10 has 1 seed on")
    assert found[8].reading.startswith("Not run yet: none of the 12 pre-registered runs")


def test_claim_8b_counts_only_its_preregistered_runs(tmp_path, fast_bootstrap):
    """Claim 8b wants 3 seeds a side at 50k: one td3_nobc seed is shown, not decided; a 20k run is not counted."""
    root = tmp_path / "runs"
    write_run(root, "td3_nobc", NARROW_CHEETAH, 0, {25000: -3.0, 50000: -4.9},
              {"eval/q_initial": 231.7, "eval/discounted_return": -56.1}, budget="--max_steps 50000")
    write_run(root, "td3_bc", NARROW_WALKER, 0, {20000: 70.0}, budget="--max_steps 20000")
    found = make_results(root, tmp_path / "results", command="x")
    claim = found[8]
    assert claim.verdict == "NOT RUN" and claim.label == "8b"
    text = "\n".join(claim.lines)
    assert f"td3_nobc has 1 seed on {NARROW_CHEETAH} (the claim needs 3). Shown, not decided: seed 0: Q = 231.7, " \
           "G = -56.1 (update 50k)." in text
    assert f"Not counted (not at the pre-registered 50k updates): td3_bc seed 0 on {NARROW_WALKER} (20k)." in text
    assert claim.reading == ("Partial, not decided: 1 of the 12 pre-registered runs is committed; td3_nobc seed 0 on "
                             "HalfCheetah expert has Q(s0, pi(s0)) - G = +287.8 against 0.5 |G| = 28.1 and scores -4.9, "
                             "in the claim's direction, but one run decides nothing.")
    assert found[7].label == "8" and found[7].verdict == "NOT RUN"  # claim 8 stays on medium-replay


def test_sanity_table(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    write_run(root, "bc", "local/hopper/expert-v0", 0, {10: 98.0}, returns={10: 3234.3})
    write_run(root, "bc", "local/hopper/random-v0", 0, {10: 25.0}, returns={10: -20.272305})
    write_run(root, "bc", "local/pendulum/expert-v0", 0, {10: 101.0})
    make_results(root, tmp_path / "results", command="x")
    text = (tmp_path / "results" / "sanity.md").read_text()
    assert "| hopper | 98.0 ± 0.0 / D4RL 100.0 ± 0.0 (n=1, 10) | 2.0 points from 100 (within 10) | " \
           "25.0 ± 0.0 / D4RL 0.0 ± 0.0 (n=1, 10) | 25.0 points from 0 (MORE than 10) |" in text
    assert "| pendulum | 101.0 ± 0.0 (n=1, 10) | 1.0 points from 100 (within 10) | not run | - |" in text


def test_readme_section_summarizes_and_points_to_the_long_tables(fake_root, tmp_path, fast_bootstrap):
    for seed in (0, 1):
        write_run(fake_root, "iql", CORE_MR, seed, {5000: 60.0 + seed},
                  budget="--max_steps 50000 --eval_every 5000 --eval_episodes 10")
        write_run(fake_root, "td3_nobc", CORE_MR, seed, {5000: 3.0},
                  budget="--max_steps 50000 --eval_every 5000 --eval_episodes 10")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n<!-- results: begin -->\nstale table\n<!-- results: end -->\nafter\n")
    make_results(fake_root, tmp_path / "results", readme=readme)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n<!-- results: begin -->")
    assert text.endswith("<!-- results: end -->\nafter\n")
    assert "stale table" not in text
    section = text[text.index("<!-- results: begin -->"):]
    cpu = (f"python tools/sweep.py --variants iql td3_nobc --datasets {CORE_MR} --seeds 0 1 --workers 2 --root runs/bench "
           "--set max_steps=50000 eval_every=5000 eval_episodes=10")
    assert f"Runs: 4 runs, made by `{cpu}`" in section and f"Reproduce: `{cpu}`" in section
    assert "IQM [95% CI], local" in section and "| # | claim | reading | verdict |" in section
    assert "| 1 | TD methods beat BC on medium-replay | Not decided yet: " in section
    assert section.rstrip().count("| NOT RUN |") == 11  # the verdict is the last column
    assert "| 8b | TD3 without BC collapses on narrow data |" in section
    for page in ("results/scores.md", "results/peer.md", "results/published.md", "results/claims.md"):
        assert f"]({page})" in section
    assert MEDIUM_REPLAY not in section and "Pendulum runs (the small datasets)" in section
    assert len(section.splitlines()) < 60  # a summary: the per-dataset tables live in results/
    assert "| td3_nobc |" not in section.split("| # | claim |")[0]  # ablations: in the claims, not the aggregate
    assert "| td3_nobc |" in (tmp_path / "results" / "scores.md").read_text()
    reproduce_md = (tmp_path / "results" / "reproduce.md").read_text()
    pendulum_sweep = (f"python tools/sweep.py --variants bc bc_10 td3_bc --datasets {MEDIUM_REPLAY} --seeds 0 1 "
                      "--workers 2 --root runs/bench --set max_steps=20 eval_every=10 eval_episodes=5")
    assert cpu in reproduce_md and pendulum_sweep in reproduce_md
    assert (f"python tools/sweep.py --variants iql td3_nobc --datasets {CORE_MR} --seeds 0 1 --workers N --root "
            "runs/d4rl --commit-dir results/runs-d4rl --set eval_episodes=10 max_steps=1000000 eval_every=5000 device=cuda"
            ) in reproduce_md


def test_few_sweeps_make_exactly_the_runs(tmp_path):
    root = tmp_path / "runs"
    fifty = "--max_steps 50000 --eval_every 5000"
    for variant in ("bc_10", "iql", "d3rlpy_iql"):
        for seed in (0, 1, 2):
            write_run(root, variant, CORE_MR, seed, {5000: 1.0}, budget=fifty)
    write_run(root, "iql", CORE_HC, 0, {5000: 1.0}, budget=fifty)  # one seed on a second dataset: its own sweep
    write_run(root, "bc_10", CORE_HC, 0, {5000: 1.0}, budget=fifty + " --compile true")  # other settings
    bc_25 = write_run(root, "bc_25", CORE_HC, 0, {5000: 1.0}, budget="--frac 0.25 " + fifty)  # a --define variant
    record = json.loads((bc_25 / "run.json").read_text())
    record["algo"], record["command"][1] = "bc_filtered", "algorithms/bc_filtered.py"
    (bc_25 / "run.json").write_text(json.dumps(record))
    loaded = runs_module.load_runs([root])
    assert [s.command() for s in reproduce.reproduce_sweeps(loaded)] == [
        f"python tools/sweep.py --variants bc_10 iql d3rlpy_iql --datasets {CORE_MR} --seeds 0 1 2 --workers 2 "
        "--root runs/bench --set max_steps=50000 eval_every=5000",
        f"python tools/sweep.py --variants bc_10 --datasets {CORE_HC} --seeds 0 --workers 2 --root runs/bench "
        "--set max_steps=50000 eval_every=5000 compile=true",
        f"python tools/sweep.py --variants iql --datasets {CORE_HC} --seeds 0 --workers 2 --root runs/bench "
        "--set max_steps=50000 eval_every=5000",
        f"python tools/sweep.py --variants bc_25 --define bc_25=bc_filtered --datasets {CORE_HC} --seeds 0 "
        "--workers 2 --root runs/bench --set frac=0.25 max_steps=50000 eval_every=5000"]
    # The sweep is what tools/sweep.py would run: its plan writes the same commands as the runs'.
    planned = sweep.plan(["bc_10"], [CORE_MR], [0], tmp_path / "runs" / "bench", sweep.parse_sets(
        ["max_steps=50000", "eval_every=5000"]), {})
    assert planned[0].args[-6:] == ["--frac", "0.1", "--max_steps", "50000", "--eval_every", "5000"]


def test_a_run_without_run_json_is_counted_not_parsed(tmp_path, fast_bootstrap):
    """The tools read run.json only: a run with a command.txt and no run.json is in the tables, not in the
    reproduce commands, and the header says so."""
    root = tmp_path / "runs"
    write_run(root, "iql", CORE_MR, 0, {10: 50.0})
    old = write_run(root, "iql", CORE_MR, 1, {10: 60.0})
    (old / "run.json").unlink()
    (old / "command.txt").write_text("cd /x && python algorithms/iql.py --seed 1 --max_steps 999\n")
    make_results(root, tmp_path / "results", command=None)
    md = (tmp_path / "results" / "scores.md").read_text()
    assert "Runs: 2 runs, made by `python tools/sweep.py --variants iql" in md and "(1 run without a run.json" in md
    assert "999" not in md and "| iql | 55.0 ± 5.0 / D4RL" in md


def test_gpu_sweeps_take_each_methods_full_budget():
    cpu = reproduce.Sweep(["dt", "mopo_nopen", "d3rlpy_dt", "d3rlpy_bc"], [CORE_MR], [0], "runs/bench",
                          ["max_steps=8000", "warmup_steps=800", "bc_steps=400", "model_max_epochs=50",
                           "compile=true", "dynamics_path=runs/bench/mopo/local/hopper/medium-replay-v0/seed0/"
                           "dynamics.pt", "device=cpu"])
    gpu = reproduce.gpu_sweeps([cpu])
    assert [(s.variants, s.sets) for s in gpu] == [
        (["dt", "d3rlpy_dt"], ["compile=true", "dynamics_path=runs/d4rl/mopo/local/hopper/medium-replay-v0/seed0/"
                               "dynamics.pt", "max_steps=100000", "eval_every=5000", "device=cuda"]),
        (["mopo_nopen", "d3rlpy_bc"], ["compile=true", "dynamics_path=runs/d4rl/mopo/local/hopper/medium-replay-v0/"
                                       "seed0/dynamics.pt", "max_steps=1000000", "eval_every=5000", "device=cuda"])]
    assert gpu[0].command("N", "results/runs-d4rl").startswith(
        f"python tools/sweep.py --variants dt d3rlpy_dt --datasets {CORE_MR} --seeds 0 --workers N --root runs/d4rl "
        "--commit-dir results/runs-d4rl --set compile=true")


def test_published_numbers_beside_ours(tmp_path, fast_bootstrap):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "iql", CORE_MR, seed, {50000: 60.0 + 2 * seed}, returns={50000: 3234.3},
                  budget="--max_steps 50000")
    source = "Some et al. 2022, Table 1, locomotion rows"
    table_csv = tmp_path / "published.csv"
    with open(table_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env", "dataset", "score", "std", "seeds", "budget_updates", "dataset_version",
                         "source"])
        writer.writerow(["iql", "hopper", "medium-replay", "94.7", "8.6", "5", "1000000", "v2", source])
        writer.writerow(["iql", "walker2d", "medium", "78.3", "", "", "", "v2", source])
    out = tmp_path / "results"
    out.mkdir()
    published.write_published(stats.score_table(runs_module.load_runs([root])), ["head"], out, table_csv)
    text = (out / "published.md").read_text()
    assert text.startswith("# Published D4RL numbers beside ours: not directly comparable")
    assert "| Hopper | medium-replay | 94.7 ± 8.6 | 5 | 1M | v2 | Some et al. 2022 [1] | 100.0 ± 0.0 | 61.0 ± 1.0 | " \
           "2, 50k | 5% |" in text
    assert "| Walker2d | medium | 78.3 | - | - | v2 | Some et al. 2022 [1] | not run | not run | - | - |" in text
    assert f"1. {source}" in text


def test_plots_keep_panels_readable():
    many = ["bc", "bc_10", "awr", "bcq", "td3_bc", "cql", "iql", "dt", "mopo", "combo", "td3_nobc", "mopo_nopen",
            "dt_init1", "cql_mean_target", "td3_bc_500k", "iql_500k", "x1", "x2", *runs_module.PEERS.values()]
    rows = plots.panel_rows(many)
    assert all(0 < len(members) <= plots.MAX_LINES for _, members in rows)
    assert sorted(v for _, members in rows for v in members) == sorted(many)
    # One fixed color per method: the peer's and the longer budget take their method's, in another line style.
    assert plots.color_of("d3rlpy_iql") == plots.color_of("iql") == plots.color_of("iql_500k")
    assert (plots.style_of("iql"), plots.style_of("d3rlpy_iql"), plots.style_of("iql_500k")) == ("-", "--", ":")
    assert len({plots.color_of(v) for v in plots.COLORS}) == len(plots.COLORS)
    assert plots.color_of("x1") == plots.color_of("x1")
    # The curves are the core datasets only; the BC sanity runs are a table.
    run = lambda d: runs_module.RunRecord("bc", d, 0, [{"step": 1, "eval/normalized_score": 1.0}])  # noqa: E731
    found = [run(d) for d in ["local/hopper/expert-v0", CORE_ME, CORE_MR, "local/walker2d/medium-replay-v0"]]
    assert plots.curve_datasets(found, headline=True) == [CORE_MR, CORE_ME]
    pendulum = [run("local/pendulum/expert-v0"), run(MEDIUM_REPLAY)]
    assert plots.curve_datasets(pendulum, headline=False) == [MEDIUM_REPLAY]


def test_peer_run_json_has_the_scripts_shape():
    args = peer_d3rlpy.make_parser().parse_args(["--algo", "iql", "--seed", "2", "--max_steps", "100"])
    record = peer_d3rlpy.run_record(args, "d3rlpy 2.8.1", "2.13.0", "abc", ["python", "tools/peer_d3rlpy.py"])
    assert set(record) == {"algo", "library", "config", "commit", "torch", "command"}
    assert record["algo"] == "iql" and record["config"]["max_steps"] == 100 and "setup" not in record["config"]


def test_migration_rebuilds_the_committed_run_json():
    """tools/migrate_run_json.py is deterministic: a committed run's run.json is what it builds again from the
    run's command.txt, the script's TrainConfig and the YAML as they were in git."""
    project = migrate_run_json.PROJECT
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=project, capture_output=True,
                             text=True)
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("not a git checkout with its history")
    run_dir = project / "results" / "runs" / "bc_10" / CORE_MR / "seed0"
    if not (run_dir / "run.json").exists():
        pytest.skip("no committed run")
    assert migrate_run_json.build(run_dir) == json.loads((run_dir / "run.json").read_text())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["algo"] == "bc_filtered" and record["config"]["frac"] == 0.1
    assert record["config"]["max_steps"] == 50000 and record["command"][1] == "algorithms/bc_filtered.py"
    # The helpers: a command.txt's words after cd and the environment; a dataclass's fields and defaults.
    assert migrate_run_json.command_words("cd /x && A=1 B=2 python algorithms/iql.py --seed 1") == \
        ["python", "algorithms/iql.py", "--seed", "1"]
    fields = migrate_run_json.train_config_fields(
        "import dataclasses\nclass TrainConfig:\n    seed: int = 0\n    name: Optional[str] = None\n"
        "    targets: list[float] = dataclasses.field(default_factory=list)\n")
    assert fields == {"seed": ("int", 0), "name": ("Optional[str]", None), "targets": ("list[float]", [])}
    assert migrate_run_json.decode("Optional[int]", "none") is None and migrate_run_json.decode("bool", "false") is False


def test_a_rerun_on_newer_code_is_compared_with_the_older_seeds(fake_root, tmp_path):
    out = tmp_path / "results"
    write_run(out / "rerun", "td3_bc", MEDIUM_REPLAY, 0, {10: 61.0, 20: 72.0})  # older seeds end at 70 and 80
    write_run(out / "rerun", "bc_10", MEDIUM_REPLAY, 1, {10: 10.0, 20: 40.0})  # older seeds end at 12 and 14
    write_run(out / "rerun", "bc", MEDIUM_REPLAY, 0, {10: 20.0})  # another budget than the older runs': left out
    make_results(fake_root, out)
    text = (out / "rerun.md").read_text()
    assert f"| td3_bc | {MEDIUM_REPLAY} | 0 | 20 | 70.0 (not recorded) | 72.0 (not recorded) | 75.0 ± 5.0 (n=2) | yes |" in text
    assert f"| bc_10 | {MEDIUM_REPLAY} | 1 | 20 | 14.0 (not recorded) | 40.0 (not recorded) | 13.0 ± 1.0 (n=2) | NO |" in text
    assert "| bc |" not in text and (out / "rerun.png").stat().st_size > 0


def write_online_run(root: Path, variant: str, dataset: str, seed: int, switch: float, online: dict,
                     offline: int = 50, online_steps: int = 100) -> None:
    """An offline -> online run as the scripts log it: evaluations every 10 updates, env_steps in every row, the
    switch at max_steps (env_steps 0), finished.json at max_steps + online_steps updates (utd 1)."""
    run_dir = root / variant / dataset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    rows = [{"step": offline, "env_steps": 0, "eval/normalized_score": switch}] if offline else []
    rows += [{"step": offline + env, "env_steps": env, "eval/normalized_score": score} for env, score in online.items()]
    (run_dir / "log.jsonl").write_text("".join(json.dumps({**r, "wall_time": 0.0, "eval/return": RETURN}) + "\n"
                                               for r in rows))
    algo = "iql" if variant == "iql_o2o" else "cql"
    config = {"dataset_id": dataset, "seed": seed, "max_steps": offline, "online_steps": online_steps, "utd": 1}
    command = ["python", f"algorithms/{algo}.py", "--dataset_id", dataset, "--seed", str(seed), "--checkpoints_path",
               f"/x/runs/bench/{variant}/{dataset}/seed{seed}", *sweep.VARIANTS[variant][1],
               "--online_steps", str(online_steps)]
    (run_dir / "run.json").write_text(json.dumps({"algo": algo, "config": config, "command": command}))
    (run_dir / "finished.json").write_text(json.dumps({"step": offline + online_steps}))


def test_offline_to_online_runs_have_their_own_page_and_decide_claims_9_and_10(fake_root, tmp_path):
    hc = "local/halfcheetah/medium-replay-v0"
    for dataset in (CORE_MR, hc):
        for seed, end in ((0, 80.0), (1, 84.0)):
            write_online_run(fake_root, "iql_o2o", dataset, seed, 70.0, {10: 65.0, 20: 68.0, 60: 75.0, 100: end})
        for seed, end in ((0, 20.0), (1, 24.0)):
            write_online_run(fake_root, "sac_scratch", dataset, seed, 0.0, {10: 1.0, 50: 10.0, 100: end}, offline=0)
    for seed, worst in ((0, 30.0), (1, 32.0)):  # cql collapses by 30 and 28 points in the first fifth (20 steps)
        write_online_run(fake_root, "cql_o2o", CORE_MR, seed, 60.0, {10: worst, 20: 50.0, 40: 10.0, 100: 70.0})
    for seed, worst in ((0, 55.0), (1, 56.0)):  # Cal-QL by 5 and 4; the dip at 40 is past the first fifth
        write_online_run(fake_root, "calql_o2o", CORE_MR, seed, 60.0, {10: worst, 20: 58.0, 40: 10.0, 100: 72.0})
    out = tmp_path / "results"
    claims = {c.label: c for c in make_results(fake_root, out)}
    assert claims["9"].verdict == "PASS" and "+60.0" in claims["9"].reading
    assert claims["10"].verdict == "PASS" and "+24.5" in claims["10"].reading
    text = (out / "o2o.md").read_text()
    assert f"| iql_o2o | {CORE_MR} | 50 | 100 | 70.0 ± 0.0 (n=2) | 82.0 ± 2.0 (n=2) | 5.0 ± 0.0 (n=2) | 0, 1 |" in text
    assert f"| sac_scratch | {CORE_MR} | none | 100 | - | 22.0 ± 2.0 (n=2) | - | 0, 1 |" in text
    assert f"| cql_o2o | {CORE_MR} | 50 | 100 | 60.0 ± 0.0 (n=2) | 70.0 ± 0.0 (n=2) | 29.0 ± 1.0 (n=2) | 0, 1 |" in text
    assert (out / "o2o.png").stat().st_size > 0
    assert "o2o" not in (out / "scores.md").read_text() and "sac_scratch" not in (out / "scores.md").read_text()


def test_o2o_curves_keep_the_offline_phase_left_of_the_switch(fake_root):
    """o2o.png draws a run whole: offline evaluations at x = updates - max_steps (<= 0), online ones at env steps."""
    from results import o2o

    write_online_run(fake_root, "cql_o2o", CORE_MR, 0, 60.0, {10: 30.0, 100: 70.0})
    run_dir = fake_root / "cql_o2o" / CORE_MR / "seed0"
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    early = {"step": 20, "env_steps": 0, "eval/normalized_score": 5.0, "wall_time": 0.0, "eval/return": RETURN}
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [early, *rows]))
    (view,) = o2o.o2o_runs(runs_module.load_runs([fake_root]))[("cql_o2o", CORE_MR)]
    assert view.points == ([-30, 0, 10, 100], [5.0, 60.0, 30.0, 70.0])
    assert view.switch == 60.0 and view.drop == 30.0


def test_claims_9_and_10_wait_for_two_seeds_a_side(fake_root, tmp_path):
    write_online_run(fake_root, "iql_o2o", CORE_MR, 0, 70.0, {10: 65.0, 100: 80.0})
    claims = {c.label: c for c in make_results(fake_root, tmp_path / "results")}
    assert claims["9"].verdict == claims["10"].verdict == "NOT RUN"
    assert f"1 finished iql_o2o run and 0 sac_scratch runs on {CORE_MR}" in claims["9"].reading
    assert f"0 finished cql_o2o runs and 0 calql_o2o runs on {CORE_MR}" in claims["10"].reading


def test_claim_9_reading_names_where_it_holds_and_where_not(fake_root, tmp_path):
    """One dataset above 0, the other not: FAIL, and the reading says which is which."""
    hc = "local/halfcheetah/medium-replay-v0"
    for dataset, ends in ((CORE_MR, (90.0, 10.0)), (hc, (80.0, 84.0))):  # Hopper's seeds spread across 0
        for seed, end in enumerate(ends):
            write_online_run(fake_root, "iql_o2o", dataset, seed, 70.0, {10: 65.0, 100: end})
        for seed, end in ((0, 20.0), (1, 24.0)):
            write_online_run(fake_root, "sac_scratch", dataset, seed, 0.0, {10: 1.0, 100: end}, offline=0)
    claim = {c.label: c for c in make_results(fake_root, tmp_path / "results")}["9"]
    assert claim.verdict == "FAIL"
    assert claim.reading.startswith("Holds on HalfCheetah medium-replay (+60.0 ")
    assert "not supported at this budget: iql_o2o - sac_scratch = +28.0 " in claim.reading
    assert claim.reading.endswith("on Hopper medium-replay, an interval that does not lie above 0.")


def test_half_budget_runs_stand_beside_the_published_numbers_not_in_the_readme_aggregate(tmp_path, fast_bootstrap):
    """Issue 33: a 500k-update run (td3_bc_500k) is shown beside the 50k runs of its method in published.md, and
    stays out of the README's aggregate (it runs on two datasets, not the core three)."""
    root = tmp_path / "runs"
    write_run(root, "td3_bc", CORE_MR, 0, {50000: 20.0}, budget="--max_steps 50000")
    write_run(root, "td3_bc_500k", CORE_MR, 0, {500000: 40.0}, budget="--max_steps 500000")
    table_csv = tmp_path / "published.csv"
    with open(table_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env", "dataset", "score", "std", "seeds", "budget_updates", "dataset_version",
                         "source"])
        writer.writerow(["td3_bc", "hopper", "medium-replay", "60.9", "", "", "1000000", "v2", "Some et al. 2022"])
    out = tmp_path / "results"
    out.mkdir()
    published.write_published(stats.score_table(runs_module.load_runs([root])), ["head"], out, table_csv)
    row = next(line for line in (out / "published.md").read_text().splitlines() if line.startswith("| Hopper"))
    assert row.endswith("| 20.0 ± 0.0; 40.0 ± 0.0 | 1, 50k; 1, 500k | 5%; 50% |"), row
    section = readme.readme_section(["head"], {"td3_bc": {"note": "x"}, "td3_bc_500k": {"note": "y"}}, [], ["c"], [])
    assert any("| td3_bc |" in line for line in section) and not any("td3_bc_500k" in line for line in section)
