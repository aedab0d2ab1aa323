"""Writing Minari datasets atomically: each build goes to a temporary folder under the datasets root and is moved
into place whole; a build killed midway is cleaned up (or its replaced dataset restored) by the next call."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

REPLACED = ".replaced"  # under the datasets root: a dataset being replaced, until its new copy is in place
BUILDING = ".building-"  # under the datasets root: .building-<pid>-<random>, a dataset being written by process pid


def datasets_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def write_dataset(dataset_id: str, episodes: list[dict], env_id: str, index: dict, description: str) -> None:
    """Write into a temporary root, then move into place: an interrupted build leaves nothing
    that loads as a dataset, and an existing dataset is replaced only by a complete one."""
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.namespace import create_namespace, list_local_namespaces
    from minari.dataset.minari_dataset import parse_dataset_id

    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    namespace = parse_dataset_id(dataset_id)[0]
    buffers = [EpisodeBuffer(id=i, observations=ep["observations"].astype(np.float32),
                             actions=ep["actions"].astype(np.float32), rewards=ep["rewards"],
                             terminations=ep["terminations"], truncations=ep["truncations"])
               for i, ep in enumerate(episodes)]
    saved = os.environ.get("MINARI_DATASETS_PATH")
    with tempfile.TemporaryDirectory(dir=root, prefix=f"{BUILDING}{os.getpid()}-") as tmp:
        try:
            os.environ["MINARI_DATASETS_PATH"] = tmp
            minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env_id, eval_env=env_id, algorithm_name="SAC (D4RL recipe)",
                code_permalink="tools/make_datasets.py", author="offline-rl reference implementations",
                ref_min_score=index["ref_min_score"], ref_max_score=index["ref_max_score"],
                description=description, data_format="hdf5", requirements=["mujoco", "gymnasium"],
            )
            os.environ["MINARI_DATASETS_PATH"] = str(root)
            if namespace not in list_local_namespaces():
                create_namespace(namespace)
        finally:
            if saved is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = saved
        final, old = root / dataset_id, root / REPLACED / dataset_id
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # kept under REPLACED until the new copy is in place (restore_interrupted)
            old.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, old)
        os.replace(Path(tmp) / dataset_id, final)
        if old.exists():
            shutil.rmtree(old)


def remove_abandoned_builds() -> None:
    """A killed build leaves its temporary folder (up to 10 MB): remove those whose process is gone (a build
    running beside this one keeps its folder)."""
    for folder in datasets_root().glob(f"{BUILDING}*"):
        pid = folder.name[len(BUILDING):].split("-")[0]
        if not (pid.isdigit() and process_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"removed {folder.name}, left by an interrupted build")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def restore_interrupted() -> None:
    """A build killed between its two renames left the old dataset under REPLACED and none in its place:
    put it back (a dataset that did get its new copy just drops the old one)."""
    replaced = datasets_root() / REPLACED
    for metadata in sorted(replaced.glob("**/data/metadata.json")):
        old = metadata.parent.parent
        final = datasets_root() / old.relative_to(replaced)
        if final.exists():
            shutil.rmtree(old)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, final)
            print(f"restored {final.relative_to(datasets_root())}, whose replacement was interrupted")


def dataset_exists(dataset_id: str) -> bool:
    return (datasets_root() / dataset_id / "data" / "metadata.json").exists()
