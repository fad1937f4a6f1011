"""The import-linter contract that keeps test doubles out of product code covers every module.

The contract lists product modules by name (import-linter has no "all but"), so a new top-level
module would silently escape it; this test fails until the new module is added to the list.
"""

from __future__ import annotations

import pathlib
import tomllib

import kubeline

CONTRACT = "product code never imports the test doubles"


def test_every_product_module_is_forbidden_to_import_kubeline_testing() -> None:
    root = pathlib.Path(kubeline.__file__).parent
    pyproject = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())
    [contract] = [c for c in pyproject["tool"]["importlinter"]["contracts"] if c["name"] == CONTRACT]
    assert contract["forbidden_modules"] == ["kubeline.testing"]
    modules = {f"kubeline.{p.stem}" for p in root.glob("*.py") if p.stem != "__init__"}
    modules |= {f"kubeline.{p.parent.name}" for p in root.glob("*/__init__.py")}
    missing = sorted(modules - {"kubeline.testing"} - set(contract["source_modules"]))
    assert not missing, f"add {missing} to the source_modules of {CONTRACT!r} in pyproject.toml"
