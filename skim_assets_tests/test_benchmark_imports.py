"""Every benchmark script imports, and every name it imports from the package exists, so the scripts cannot go
stale against the package API again.

Most benchmarks import `skim_assets` inside their functions (so `--help` stays fast), which importing the module
alone never runs: the second test reads each script's import statements, wherever they are, and resolves them.
Nothing is run; the whole file takes seconds.
"""

import ast
import importlib
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the repository root, for `benchmarks` (as test_benchmarks.py does)

SCRIPTS = sorted(p for p in (REPO_ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py")
CHECKED_PACKAGES = ("skim_assets", "benchmarks")


def _project_imports(script: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every import of the project's own modules in `script`, at any depth (function
    bodies included); name None for `import module`."""
    found = []
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"), filename=str(script))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in CHECKED_PACKAGES:
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names
                      if alias.name.split(".")[0] in CHECKED_PACKAGES]
    return found


def test_every_script_is_checked():
    assert len(SCRIPTS) >= 10 and {"_common.py", "decoding.py", "scaling.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_module_imports(script: Path):
    module = importlib.import_module(f"benchmarks.{script.stem}")
    assert Path(module.__file__).resolve() == script.resolve()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_imports_resolve(script: Path):
    """Each `from skim_assets.x import y` / `import skim_assets.x` of the script, lazy ones included, names a
    module and an attribute (or submodule) that exist."""
    missing = []
    for line, module_name, name in _project_imports(script):
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            missing.append(f"{script.name}:{line}: {module_name} ({error})")
            continue
        if name is None or name == "*" or hasattr(module, name):
            continue
        try:
            importlib.import_module(f"{module_name}.{name}")
        except ImportError:
            missing.append(f"{script.name}:{line}: {module_name}.{name}")
    assert not missing, "stale imports (find where each name lives now):\n" + "\n".join(missing)
