"""tools/ope.py: the report's statistics, from committed files alone."""

import json
from pathlib import Path

import numpy as np
import pytest

from tools import ope

DATASET = "local/pendulum/medium-replay-v0"


def commit(runs: Path, fqe: Path, variant: str, seed: int, measured: float, estimates: list[float],
           dataset: str = DATASET) -> None:
    """A committed benchmark run (its last evaluation) and its committed FQE estimate (its trace)."""
    run = runs / variant / dataset / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "finished.json").write_text(json.dumps({"step": 100, "eval/return": 2 * measured,
                                                   "eval/discounted_return": measured,
                                                   "eval/normalized_score": measured / 10}))
    est = fqe / variant / dataset / f"seed{seed}"
    est.mkdir(parents=True)
    (est / "log.jsonl").write_text("\n".join(json.dumps({"step": 1000 * (i + 1), "eval/estimate": e})
                                             for i, e in enumerate(estimates)) + "\n")
    (est / "estimate.json").write_text(json.dumps({"estimate": estimates[-1]}))


def table(out: Path) -> dict[str, list[str]]:
    rows = [line.split(" | ") for line in (out / "ope.md").read_text().splitlines() if line.startswith("| local/")]
    return {row[0].lstrip("| "): [cell.strip(" |") for cell in row[1:]] for row in rows}


def test_report_ranks_errors_and_drift_from_committed_files(tmp_path):
    runs, fqe, out = tmp_path / "runs", tmp_path / "fqe", tmp_path / "out"
    # FQE ranks the four policies right except the best: its favorite (awr, 90) is not the best (iql, 100).
    commit(runs, fqe, "bc", 0, -100.0, [-40.0, -50.0])
    commit(runs, fqe, "bc", 1, 50.0, [40.0, 40.0])
    commit(runs, fqe, "awr", 0, 90.0, [100.0, 120.0])
    commit(runs, fqe, "iql", 0, 100.0, [99.0, 110.0])
    commit(runs, fqe, "bc", 0, 10.0, [10.0, 10.0], dataset="local/pendulum/expert-v0")
    (runs / "dt" / DATASET / "seed0").mkdir(parents=True)  # DT acts on a context: left out
    (runs / "dt" / DATASET / "seed0" / "finished.json").write_text(json.dumps({"eval/return": 1.0}))

    assert ope.main(["--report-only", "--runs", str(runs), "--commit-dir", str(fqe), "--out", str(out)]) == 0
    rows = table(out)
    n, updates, rho, regret, error, drift = rows[DATASET]
    assert (n, updates) == ("4", "2000")
    assert rho.startswith("0.80 ")  # ranks (0, 1, 3, 2) against (0, 1, 2, 3)
    assert regret.startswith("1.00 ")  # normalized 10.0 - 9.0
    errors = [0.5, 0.2, 120 / 90 - 1, 0.1]
    assert error.startswith(f"{np.median(errors):.2f} ")
    assert float(drift) == pytest.approx(np.median([10 / 50, 0.0, 20 / 120, 11 / 110]), abs=1e-3)
    assert rows["local/pendulum/expert-v0"][2].startswith("fewer than 3 policies")
    assert (out / "ope.png").exists() and len((out / "ope.csv").read_text().splitlines()) == 1 + 5


def test_a_committed_estimate_is_not_made_again(tmp_path, monkeypatch):
    runs, fqe = tmp_path / "runs", tmp_path / "fqe"
    commit(runs, fqe, "bc", 0, 1.0, [1.0])
    (runs / "bc" / DATASET / "seed0" / "policy_weights.pt").write_bytes(b"")
    monkeypatch.setattr(ope, "run_child", lambda *a, **k: pytest.fail("FQE ran for a committed estimate"))
    [run] = ope.finished_runs(runs)
    assert "error" not in ope.estimate(runs, run, [], fqe)


def test_no_estimates_is_one_sentence(tmp_path, capsys):
    assert ope.main(["--report-only", "--runs", str(tmp_path), "--commit-dir", str(tmp_path / "none"),
                     "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: no committed estimates")


class Planted:
    """An object whose unpickling creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pt2_under_root_is_never_loaded(tmp_path, monkeypatch, capsys):
    """ope.py hands fqe.py policy_weights.pt, never a .pt2 (loading one runs code): a run holding only a crafted
    policy.pt2, and a bcq run, are skipped with one line each, and nothing creates the marker."""
    import torch

    runs, fqe, marker = tmp_path / "runs", tmp_path / "fqe", tmp_path / "marker"
    commit(runs, fqe, "bc", 0, 1.0, [1.0])
    commit(runs, fqe, "bcq", 0, 1.0, [1.0])
    commit(runs, fqe, "iql", 0, 1.0, [1.0])
    for variant in ("bc", "bcq", "iql"):
        torch.save({"program": Planted(marker)}, runs / variant / DATASET / "seed0" / "policy.pt2")
    (runs / "bcq" / DATASET / "seed0" / "run.json").write_text(json.dumps({"algo": "bcq"}))
    (runs / "iql" / DATASET / "seed0" / "policy_weights.pt").write_bytes(b"")
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: marker.write_text("loaded"))
    commands = []
    monkeypatch.setattr(ope, "run_child", lambda command, **k: commands.append(command) or 1)
    [run] = ope.finished_runs(runs)
    assert run["variant"] == "iql"
    skipped = capsys.readouterr().err.splitlines()
    assert len(skipped) == 2 and "bcq" in skipped[1] and "argmax of Q" in skipped[1] and "no policy_weights" in skipped[0]
    (fqe / "iql" / DATASET / "seed0" / "estimate.json").unlink()
    ope.estimate(runs, run, [], fqe)
    assert commands[0][commands[0].index("--policy_path") + 1].endswith("policy_weights.pt")
    assert not marker.exists()
