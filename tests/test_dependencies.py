"""Every package the code imports is declared in setup.py, and every module imports.

CI installs the project into a fresh virtual environment, so a module that cannot be imported, or a
program that needs a package nothing installs (as `jax.export` serialisation needs flatbuffers), fails
the run there; the AST check below also catches an import that happens to be installed by something else.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata as metadata
import os
import pkgutil
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("speech_jax", "data_pipelines", "experiments")
# Import names whose distribution is named otherwise, for packages of an extra that may not be installed.
DISTRIBUTION_OF = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}
# Needed at run time by a dependency's optional path that our code takes, not imported by our code.
RUNTIME_ONLY = {"flatbuffers"}  # jax.export serialisation


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """Distribution names setup.py declares, core and every extra (from the installed metadata)."""
    names = set()
    for requirement in metadata.requires("speech_jax") or []:
        names.add(_normal(re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)))
    return names


def _imported_top_level_names() -> dict[str, str]:
    """Every absolute import in the package's sources (function-local ones too): name -> a file using it."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for file in files:
                if not file.endswith(".py"):
                    continue
                path = os.path.join(folder, file)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names = [node.module]
                    else:
                        continue
                    for name in names:
                        found.setdefault(name.split(".")[0], os.path.relpath(path, ROOT))
    return found


def test_every_imported_package_is_declared_in_setup_py():
    declared = _declared()
    installed = metadata.packages_distributions()
    missing = []
    for name, where in sorted(_imported_top_level_names().items()):
        if name in sys.stdlib_module_names or name in PACKAGES or name == "__future__":
            continue
        dists = installed.get(name) or [DISTRIBUTION_OF.get(name, name)]
        if not any(_normal(d) in declared for d in dists):
            missing.append(f"{name} (imported in {where}; distribution {dists})")
    assert not missing, "imported but not declared in setup.py: " + "; ".join(missing)
    assert {_normal(d) for d in RUNTIME_ONLY} <= declared


def _modules():
    for package in PACKAGES:
        module = importlib.import_module(package)
        yield package
        for info in pkgutil.walk_packages(module.__path__, prefix=package + "."):
            yield info.name


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports(package):
    failed = []
    for name in _modules():
        if name.split(".")[0] != package:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:  # a missing package; other errors surface in the module's own tests
            failed.append(f"{name}: {e}")
    assert not failed, failed
