"""network_models stays a pure numpy library, and its docstring examples run."""

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import network_models

PACKAGE = Path(network_models.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
FORBIDDEN = {"ray", "simpy", "torch", "fleet", "pickle", "dill", "cloudpickle"}


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_numpy_and_the_standard_library(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(f"network_models.{module}"))
    assert result.failed == 0
