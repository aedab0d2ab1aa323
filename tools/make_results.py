"""Tables, plots and the chapter's claims from the run directories of tools/sweep.py.

  python tools/make_results.py                        # from results/runs, the committed runs
  python tools/make_results.py --root runs/bench      # or any sweep root (several: --root A B)

The work is done by the package tools/results/ (what it reads and writes: its docstring, or --help).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
