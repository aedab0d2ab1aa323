"""Tables, plots and the chapter's claims from the run directories of tools/sweep.py.

  python -m tools.make_results                        # from results/runs, the committed runs
  python -m tools.make_results --root runs/bench      # or any sweep root (several: --root A B)

The work is done by the package tools/results/ (what it reads and writes: its docstring, or --help).
"""

import sys

from tools.results import main

if __name__ == "__main__":
    sys.exit(main())
