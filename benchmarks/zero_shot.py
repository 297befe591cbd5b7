"""The ``zero_shot`` benchmark alone: ``python benchmarks/zero_shot.py [suite options]`` (see benchmarks/suite.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import main  # noqa: E402

if __name__ == "__main__":
    main(["--only", "zero_shot", *sys.argv[1:]])
