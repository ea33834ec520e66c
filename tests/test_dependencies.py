"""Every third-party module the code and the tests import is declared in pyproject.toml (the package's
dependencies or its `dev` / `sweep` extras), so `make install` gives a checkout that runs `make test`."""

from __future__ import annotations

import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
OURS = {"mega", "tasks", "experiments", "tests", "train"}
IMPORT = re.compile(
    r"^\s*(?:from\s+([A-Za-z_]\w*)[\w.]*\s+import\s|import\s+([A-Za-z_]\w*)[\w.]*\s*(?:$|,| as ))", re.M
)


def normalised(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_third_party_module_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = {normalised(r) for r in [*project["dependencies"], *extras["dev"], *extras["sweep"]]}
    sources = [ROOT / "train.py", *(p for d in sorted(OURS - {"train"}) for p in (ROOT / d).rglob("*.py"))]
    modules = {m for path in sources for found in IMPORT.findall(path.read_text()) for m in found if m} - OURS
    third_party = sorted(m for m in modules if m not in sys.stdlib_module_names and m != "__future__")
    distributions = packages_distributions()
    undeclared = [
        m
        for m in third_party
        if not any(d.lower().replace("_", "-") in declared for d in distributions.get(m, []))
    ]
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
