"""Every third-party package our code imports is declared in requirements.in with an exact pin."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

from tests.conftest import REPO

#: Imported only by optional extras (requirements-local-llm.txt, requirements-scale.txt).
EXTRAS = {"llama_cpp", "ray"}


def _imports() -> set[str]:
    files = [*REPO.glob("app/**/*.py"), *REPO.glob("integrations/**/*.py"), *REPO.glob("settings/*.py"), REPO / "streamlit_app.py"]
    names = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"app", "integrations", "settings"} - EXTRAS


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared_with_an_exact_pin() -> None:
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.in").read_text(encoding="utf-8").splitlines()]
    declared = {_normal(line.split("==")[0]) for line in lines if line}
    assert all("==" in line for line in lines if line), "exact pins only"
    distributions = packages_distributions()
    missing = {
        module: distributions.get(module) for module in _imports() if not {_normal(d) for d in distributions.get(module, [])} & declared
    }
    assert missing == {}
