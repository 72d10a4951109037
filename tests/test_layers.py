"""Layers import downwards only: serving, then analysis, then learning; the command line above all.
Serving and analysis load no TensorFlow."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# core/__init__.py runs on every import of a core module, so it sits with the lowest layer.
LAYERS = {"core": 0, "core.serving": 0, "core.analysis": 1, "core.learning": 2, "core.cli": 3, "core.__main__": 3}
TENSORFLOW = ("tensorflow", "keras", "tf_keras")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """The layer of a core module (its package's), None for anything outside core."""
    parts = module.split(".")
    return next((LAYERS[".".join(parts[:n])] for n in (2, 1) if ".".join(parts[:n]) in LAYERS), None)


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every import anywhere in the tree, inside functions too; a name taken
    from a package counts as its submodule, so `from core import cli` names core.cli."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def upward_imports(root: Path) -> list[str]:
    """Every import under root/core of a module in a higher layer than the importer's."""
    wrong = []
    for path in sorted((root / "core").rglob("*.py")):
        module = module_name(path, root)
        own = layer(module)
        for line, target in imported(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py"):
            theirs = layer(target)
            if theirs is not None and theirs > own:
                wrong.append(f"{path.relative_to(root)}:{line} imports {target}")
    return wrong


def test_no_module_imports_a_higher_layer():
    assert upward_imports(ROOT) == []


def test_the_check_finds_upward_imports_inside_functions_and_relative_ones(tmp_path):
    sources = {
        "core/__init__.py": "",
        "core/serving/__init__.py": "",
        "core/serving/predictor.py": "def load():\n    from core.learning.keras_model import load\n",
        "core/serving/registry.py": "from ..analysis import reports\n",
        "core/analysis/reports.py": "from core.serving import registry\nimport core.learning.data\n",
        "core/learning/train.py": "from core.analysis import reports\nfrom core import cli\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert upward_imports(tmp_path) == [
        "core/analysis/reports.py:2 imports core.learning.data",
        "core/learning/train.py:2 imports core.cli",
        "core/serving/predictor.py:2 imports core.learning.keras_model.load",
        "core/serving/registry.py:1 imports core.analysis.reports",
    ]


def test_importing_every_serving_and_analysis_module_loads_no_tensorflow():
    modules = [module_name(p, ROOT) for layer_dir in ("serving", "analysis")
               for p in sorted((ROOT / "core" / layer_dir).rglob("*.py"))]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TENSORFLOW!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_keras_runtime_is_offered_by_the_learning_layer_not_imported_by_serving():
    code = ("from core.serving.predictor import Predictor\n"
            "try:\n    Predictor.load('cnn_small', runtime='keras')\n"
            "except RuntimeError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=300)
    assert "import core.learning first" in done.stdout, done.stderr[-2000:]
