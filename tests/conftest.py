"""Fixtures: tiny local datasets built by tools/make_datasets.py from the committed behavior
checkpoints, in a temporary MINARI_DATASETS_PATH (never the user's own)."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "algorithms"))
os.environ.setdefault("WANDB_SILENT", "true")

TINY = 2_000  # transitions per tiny dataset


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory):
    """A Minari root with local/pendulum/{medium,medium-replay,expert}-v0 of TINY transitions."""
    import make_datasets

    root = tmp_path_factory.mktemp("minari")
    saved = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    code = make_datasets.main(["--envs", "pendulum", "--kinds", "medium", "medium-replay", "expert",
                               "--size", str(TINY), "--table", ""])
    assert code == 0
    yield root
    if saved is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = saved
