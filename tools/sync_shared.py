"""Write every copied block of algorithms/ from its one canonical source in tools/shared/.

  python -m tools.sync_shared            # after editing a file in tools/shared/
  python -m tools.sync_shared --check    # exit 1 and name the copies that differ (what the test checks)
  python -m tools.sync_shared sac        # only the named blocks

A block is the text from `# --- <name>: begin` to `# --- <name>: end`. Its source is
tools/shared/<name>.py, the appendix's tools/shared/appendix.py (the block is the part of that file between the same markers; the file's
imports above it say what a script needs at its top), and BLOCKS says which scripts carry it:
  shared       the appendix of every script (../shared/DESIGN.md, "Anatomy", point 6)
  transitions  DeviceBuffer, reward scaling, returns-to-go, make_evaluator: the scripts that learn from transitions
  critic       the stacked ensemble of Q networks and soft_update, in the scripts with a critic
  sac          the tanh-Gaussian actor and the SAC losses of cql, mopo and combo
  cql_penalty  CQL's sampled actions and importance-sampled logsumexp, in cql and combo
  dynamics     the probabilistic dynamics ensemble and model rollouts of mopo and combo
  online       the online phase of offline-to-online fine-tuning (online buffer, episodes, mixed batch), in iql, cql, td3_bc, awac
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ROOT / "algorithms"
SOURCES = ROOT / "tools" / "shared"
ALL = ("awac", "awr", "bc_filtered", "bcq", "combo", "cql", "dt", "fqe", "iql", "mopo", "td3_bc")
BLOCKS = {
    "shared": ALL,
    "transitions": ("awac", "awr", "bc_filtered", "bcq", "combo", "cql", "fqe", "iql", "mopo", "td3_bc"),
    "critic": ("awac", "bcq", "combo", "cql", "fqe", "iql", "mopo", "td3_bc"),
    "sac": ("combo", "cql", "mopo"),
    "cql_penalty": ("combo", "cql"),
    "dynamics": ("combo", "mopo"),
    "online": ("awac", "cql", "iql", "td3_bc"),
}


def markers(name: str) -> tuple[str, str]:
    return f"# --- {name}: begin", f"# --- {name}: end"


def block(text: str, name: str) -> str | None:
    begin, end = markers(name)
    if begin not in text or end not in text:
        return None
    return text[text.index(begin):text.index(end) + len(end)]


def source_file(name: str) -> Path:
    return SOURCES / ("appendix.py" if name == "shared" else f"{name}.py")


def source(name: str) -> str:
    text = source_file(name).read_text()
    found = block(text, name)
    if found is None:
        raise SystemExit(f"error: {source_file(name)} has no '# --- {name}: begin/end' markers.")
    return found


def differing(names=BLOCKS) -> list[tuple[str, str]]:
    """(script, block) pairs whose copy is missing or differs from the source."""
    out = []
    for name in names:
        scripts = BLOCKS[name]
        wanted = source(name)
        for script in scripts:
            if block((ALGORITHMS / f"{script}.py").read_text(), name) != wanted:
                out.append((script, name))
    return out


def sync(names=BLOCKS) -> list[tuple[str, str]]:
    changed = []
    for script, name in differing(names):
        path = ALGORITHMS / f"{script}.py"
        text = path.read_text()
        current = block(text, name)
        if current is None:
            print(f"algorithms/{script}.py has no '# --- {name}: begin/end' markers: add them where the block "
                  f"goes, then sync again.", file=sys.stderr)
            continue
        path.write_text(text.replace(current, source(name)))
        changed.append((script, name))
    return changed


if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    names = [a for a in sys.argv[1:] if a != "--check"] or list(BLOCKS)
    unknown = set(names) - set(BLOCKS)
    if unknown:
        sys.exit(f"error: unknown block(s) {', '.join(sorted(unknown))}; blocks are: {', '.join(BLOCKS)}.")
    if check:
        stale = differing(names)
        for script, name in stale:
            print(f"algorithms/{script}.py: block '{name}' differs from {source_file(name).relative_to(ROOT)}")
        sys.exit(1 if stale else 0)
    for script, name in sync(names):
        print(f"updated block '{name}' in algorithms/{script}.py")
