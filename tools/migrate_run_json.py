"""Gives every committed run that has none a run.json, built once from the files committed beside it, and folds the
older sweeps' machine.txt and dataset.txt into every run.json.

  python -m tools.migrate_run_json      # results/runs, results/rerun, results/fqe and results/runs-*
  python -m tools.migrate_run_json --check      # list what is still to migrate, change nothing

Since the plain-PyTorch rewrite every script writes run.json in its run directory ({"algo", "config" (the
resolved TrainConfig), "commit" (until issue 44; since, the sweep's commit.txt), "dataset" (since issue 44: id,
episodes, transitions, sha256), "torch", "command"}, open_run in tools/shared/appendix.py), the peer's
tools/peer_d3rlpy.py writes the same shape, and tools/sweep.py commits it; tools/make_results.py reads it
and nothing else to know what a run is.  The runs committed before have command.txt instead.  For each of
those this tool writes, from what is there:
  algo     the script command.txt runs (algorithms/<algo>.py; the peer's: its --algo, with "library")
  config   the TrainConfig the script resolved: its field defaults, then the YAML file --config_path names,
           then the command's flags, decoded by each field's type.  The script and the YAML are read as they
           were in git just before the commit that committed the run's log (the newest code the run can
           have been made with): a field renamed since keeps the run's name.
  command  the command's words after the environment variables (python, the script, its flags)
  dataset  dataset.txt when there is one: {"id", "episodes", "transitions"} of the local build the run read
  commit, torch  null: not recorded by runs of that time
  migrated what it was built from, and the commit of the code and YAML read.
A run with a run.json keeps it.  Then, in every run.json (issue 44, "tools read data, not text": the sweep writes the
machine into run.json, and the scripts record the data they read there):
  machine  machine.txt's text, which the sweep wrote beside run.json before
  dataset  dataset.txt's {"id", "episodes", "transitions"} (it says "N steps" or "N transitions": transitions either
           way; no sha256, which only the scripts record) where run.json has no size of its own; an earlier
           migration's "steps" becomes "transitions"
and machine.txt and dataset.txt are deleted (a dataset.txt that names no size, e.g. "no local copy in ...", is kept
and named).  Every step leaves a migrated run unchanged, so the tool may run again when older runs arrive.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = ("results/runs", "results/rerun", "results/fqe")  # and every results/runs-*
DATASET_LINE = re.compile(r"^(?P<id>\S+): (?P<episodes>\d+) episodes, (?P<transitions>\d+) (?:steps|transitions)$")
FOLDED = ("machine.txt", "dataset.txt")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=PROJECT, text=True, capture_output=True).stdout


def commits(run_dir: Path) -> tuple[str, str]:
    """(the commit before the newest one that touched the run's log.jsonl, that one); HEAD for a log not in git."""
    last = git("log", "-1", "--format=%H", "--", str((run_dir / "log.jsonl").relative_to(PROJECT))).strip()
    return (git("rev-parse", f"{last}^").strip(), last) if last else (git("rev-parse", "HEAD").strip(),) * 2


def file_at(commit: str, path: str) -> Optional[str]:
    result = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=PROJECT, text=True, capture_output=True)
    return result.stdout if result.returncode == 0 else None


def train_config_fields(source: str) -> dict[str, tuple[str, object]]:
    """name -> (annotation, default) of the TrainConfig dataclass in a script's source."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    fields = {}
    for item in node.body:
        if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
            continue
        value = item.value
        if isinstance(value, ast.Call):  # dataclasses.field(default_factory=list) or (default=...)
            keywords = {k.arg: k.value for k in value.keywords}
            if "default" in keywords:
                value = keywords["default"]
            else:
                factory = keywords["default_factory"]
                value = factory.body if isinstance(factory, ast.Lambda) else ast.parse(
                    {"list": "[]", "dict": "{}"}[ast.unparse(factory)], mode="eval").body
        fields[item.target.id] = (ast.unparse(item.annotation), ast.literal_eval(value))
    return fields


def decode(annotation: str, value):
    """A command-line value (text) or a YAML value as the field's type, as the scripts decode them."""
    text = str(value).strip()
    if annotation.startswith("Optional["):
        return None if value is None or text.lower() in ("none", "null") else decode(annotation[9:-1], value)
    if annotation == "bool":
        return value if isinstance(value, bool) else text.lower() in ("true", "yes", "1")
    if annotation == "int":
        return int(value) if isinstance(value, int) else int(text)
    if annotation == "float":
        return float(value)
    if annotation.startswith("list["):
        items = yaml.safe_load(text) if isinstance(value, str) else value
        return [float(item) for item in items]
    return text if isinstance(value, str) else value


def command_words(command_txt: str) -> list[str]:
    """The words of command.txt after its `cd DIR &&` and its VAR=value assignments."""
    words = shlex.split(command_txt.split("&&")[-1])
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words


def flag_pairs(words: list[str]) -> list[tuple[str, str]]:
    return [(w[2:], v) for w, v in zip(words, words[1:]) if w.startswith("--") and not v.startswith("--")]


def project_path(path: str) -> str:
    """configs/... of a config path written relative to the project or absolute in some checkout of it."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("configs"):])) if "configs" in parts else path


def dataset_record(run_dir: Path) -> Optional[dict]:
    """{"id", "episodes", "transitions"} of the run's dataset.txt; None without one, or when it names no size."""
    if not (run_dir / "dataset.txt").exists():
        return None
    match = DATASET_LINE.match((run_dir / "dataset.txt").read_text().strip())
    return match and {"id": match["id"], "episodes": int(match["episodes"]), "transitions": int(match["transitions"])}


def ours_config(script: str, flags: list[tuple[str, str]], commit: str, committed: str) -> dict:
    """Defaults, YAML and flags as the script at commit resolves them; a flag that commit's TrainConfig lacks
    (written into command.txt by the commit that committed the run, e.g. dt_init1's --timestep_embedding_std)
    is decoded by the TrainConfig of that commit."""
    source = file_at(commit, f"algorithms/{script}.py")
    if source is None:
        raise SystemExit(f"error: algorithms/{script}.py is not in git at {commit[:7]}.")
    fields = train_config_fields(source)
    if any(name not in fields for name, _ in flags if name != "config_path"):
        fields = {**train_config_fields(file_at(committed, f"algorithms/{script}.py") or source), **fields}
    config = {name: default for name, (_, default) in fields.items()}
    given = dict(flags)
    if "config_path" in given:
        path = project_path(given["config_path"])
        text = file_at(commit, path)
        if text is None:
            raise SystemExit(f"error: {path} is not in git at {commit[:7]}.")
        config.update(yaml.safe_load(text) or {})
    for name, value in flags:
        if name != "config_path":
            config[name] = value
    return {name: decode(fields[name][0], value) if name in fields else value for name, value in config.items()}


def peer_config(words: list[str]) -> dict:
    from tools.peer_d3rlpy import make_parser

    args = make_parser().parse_args(words)
    return {k: v for k, v in vars(args).items() if k != "setup"}


def build(run_dir: Path) -> dict:
    words = command_words((run_dir / "command.txt").read_text())
    script_at = next(i for i, w in enumerate(words) if w.endswith(".py"))
    python, script, args = Path(words[0]).name, words[script_at], words[script_at + 1:]
    commit, committed = commits(run_dir)
    sources = ["command.txt"]
    if Path(script).stem == "peer_d3rlpy":
        config = peer_config(args)
        record = {"algo": config["algo"], "library": "d3rlpy 2.8.1 (requirements-peer.txt)", "config": config}
    else:
        flags = flag_pairs(args)
        config = ours_config(Path(script).stem, flags, commit, committed)
        record = {"algo": Path(script).stem, "config": config}
        sources.append(f"algorithms/{Path(script).stem}.py (TrainConfig)")
        if "config_path" in dict(flags):
            sources.append(project_path(dict(flags)["config_path"]))
    dataset = dataset_record(run_dir)
    if dataset is not None:
        sources.append("dataset.txt")
    return {**record, "commit": None, "torch": None, "command": [python, script, *args], "dataset": dataset,
            "migrated": {"by": "tools/migrate_run_json.py", "from": sources, "code_and_configs_at": commit,
                         "note": "built from the committed files: the run recorded no run.json, commit or torch "
                                 "version; the script and YAML are read as in git at code_and_configs_at"}}


def run_dirs(roots: list[Path]) -> list[Path]:
    return sorted(p.parent for root in roots for p in root.rglob("log.jsonl")
                  if p.parent.name.startswith("seed") and (p.parent / "command.txt").exists())


def has_size(dataset) -> bool:
    return isinstance(dataset, dict) and "episodes" in dataset


def fold(record: dict, run_dir: Path) -> dict:
    """run.json with machine.txt's text as "machine" and dataset.txt's size as "dataset" (where run.json has none); an
    earlier migration's dataset "steps" renamed "transitions".  The key order is kept; new keys come last."""
    record = dict(record)
    if (run_dir / "machine.txt").exists() and not record.get("machine"):
        record["machine"] = (run_dir / "machine.txt").read_text().strip()
    dataset = record.get("dataset")
    if isinstance(dataset, dict) and "steps" in dataset:
        record["dataset"] = {("transitions" if k == "steps" else k): v for k, v in dataset.items()}
    elif not has_size(dataset) and dataset_record(run_dir):
        record["dataset"] = dataset_record(run_dir)
    return record


def folded_dirs(roots: list[Path]) -> list[Path]:
    """The runs whose run.json is still to fold: a machine.txt or dataset.txt beside it, or a dataset with "steps"."""
    found = []
    records = sorted(p for root in roots for p in root.rglob("run.json") if p.parent.name.startswith("seed"))
    for run_dir in (p.parent for p in records):
        record = json.loads((run_dir / "run.json").read_text())
        if any((run_dir / name).exists() for name in FOLDED) or fold(record, run_dir) != record:
            found.append(run_dir)
    return found


def write_folded(run_dir: Path) -> Optional[Path]:
    """Folds the run's text files into its run.json and deletes them; returns a dataset.txt kept (it names no size)."""
    record = fold(json.loads((run_dir / "run.json").read_text()), run_dir)
    write_record(run_dir, record)
    (run_dir / "machine.txt").unlink(missing_ok=True)
    if has_size(record.get("dataset")):
        (run_dir / "dataset.txt").unlink(missing_ok=True)
    return run_dir / "dataset.txt" if (run_dir / "dataset.txt").exists() else None


def write_record(run_dir: Path, record: dict) -> None:
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(run_dir / "run.json")


def shown(path: Path) -> str:
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def default_roots() -> list[str]:
    return [*DEFAULT_ROOTS, *sorted(str(p.relative_to(PROJECT)) for p in (PROJECT / "results").glob("runs-*"))]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", nargs="+", default=default_roots(), help="committed run roots")
    parser.add_argument("--check", action="store_true", help="only list the runs still to migrate")
    args = parser.parse_args(argv)
    roots = [p if p.is_absolute() else PROJECT / p for p in map(Path, args.roots)]
    missing = [d for d in run_dirs(roots) if not (d / "run.json").exists()]
    without_command = sorted(p.parent for root in roots for p in root.rglob("log.jsonl")
                             if not (p.parent / "run.json").exists() and not (p.parent / "command.txt").exists())
    for run_dir in without_command:
        print(f"warning: {shown(run_dir)} has neither run.json nor command.txt", file=sys.stderr)
    if args.check:
        to_fold = folded_dirs(roots)
        print("\n".join([*(f"no run.json: {shown(d)}" for d in missing), *(f"to fold: {shown(d)}" for d in to_fold)])
              or "every run has a run.json, with no text file to fold")
        return 1 if missing or to_fold or without_command else 0
    for run_dir in missing:
        write_record(run_dir, build(run_dir))
    to_fold = folded_dirs(roots)
    kept = [path for path in map(write_folded, to_fold) if path]
    for path in kept:
        print(f"warning: kept {shown(path)}: it names no size ({path.read_text().strip()})", file=sys.stderr)
    print(f"wrote {len(missing)} run.json ({len(run_dirs(roots)) - len(missing)} runs had one); folded the text files "
          f"of {len(to_fold)} runs into their run.json")
    return 1 if without_command or kept else 0


if __name__ == "__main__":
    sys.exit(main())
