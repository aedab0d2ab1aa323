"""DESIGN.md: the shared block is byte-identical in every algorithm script (and the dynamics
block in the model-based pair), so a fix in one place is a fix everywhere."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from sync_shared import block  # noqa: E402

SCRIPTS = sorted((ROOT / "algorithms").glob("*.py"))
EXPECTED = {"bc_filtered", "td3_bc", "iql", "awr", "bcq", "cql", "dt", "combo", "mopo"}


def test_every_expected_script_is_covered():
    present = {p.stem for p in SCRIPTS}
    assert {"bc_filtered", "td3_bc", "iql"} <= present
    assert present <= EXPECTED, f"unexpected scripts in algorithms/: {present - EXPECTED}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_shared_block_identical(path):
    reference = block(SCRIPTS[0].read_text(), "shared")
    assert reference is not None
    assert block(path.read_text(), "shared") == reference, f"{path.name} differs; run tools/sync_shared.py"


def test_dynamics_block_identical_in_model_based_pair():
    pair = [ROOT / "algorithms" / f"{name}.py" for name in ("mopo", "combo")]
    texts = [p.read_text() for p in pair if p.exists()]
    if len(texts) < 2:
        pytest.skip("mopo.py and combo.py are not both present yet")
    blocks = [block(t, "dynamics") for t in texts]
    assert blocks[0] is not None and blocks[0] == blocks[1]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_scripts_are_self_contained(path):
    """A script never imports another file of the project: copying one file must be enough."""
    project_modules = {p.stem for p in SCRIPTS} | {"tools", "sync_shared", "make_datasets", "behavior_sac"}
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("import", "from"):
            assert words[1].split(".")[0] not in project_modules, f"{path.name}: {line}"
