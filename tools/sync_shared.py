"""Copy the shared block (and the dynamics block of the model-based pair) from one script to the others.

  python tools/sync_shared.py algorithms/bc_filtered.py     # after editing the shared block there

DESIGN.md: the block between '# --- shared: begin' and '# --- shared: end' is byte-identical in
every script of algorithms/; tests/test_shared_block.py fails when it is not.
"""

from __future__ import annotations

import sys
from pathlib import Path

ALGORITHMS = Path(__file__).resolve().parents[1] / "algorithms"
BLOCKS = {
    "shared": ("# --- shared: begin", "# --- shared: end"),
    "dynamics": ("# --- dynamics: begin", "# --- dynamics: end"),
}


def block(text: str, name: str) -> str | None:
    begin, end = BLOCKS[name]
    if begin not in text or end not in text:
        return None
    return text[text.index(begin):text.index(end) + len(end)]


def sync(source: Path) -> list[Path]:
    source_text = source.read_text()
    changed = []
    for name in BLOCKS:
        wanted = block(source_text, name)
        if wanted is None:
            continue
        for path in sorted(ALGORITHMS.glob("*.py")):
            text = path.read_text()
            current = block(text, name)
            if current is not None and current != wanted:
                path.write_text(text.replace(current, wanted))
                changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/sync_shared.py algorithms/<script>.py")
    for path in sync(Path(sys.argv[1])):
        print(f"updated {path}")
