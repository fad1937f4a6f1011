"""bench/compare is a folder of scripts, not part of the package: put bench/ on sys.path for its tests."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "bench"))
