"""The ``descriptions`` benchmark alone: ``python benchmarks/descriptions.py [options of benchmarks/suite.py]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import main  # noqa: E402

if __name__ == "__main__":
    main(["--only", "descriptions", *sys.argv[1:]])
