"""The package's shape, read from its source: `lib/` is free of Dagster, asset modules are wiring that import no
sibling but the shared glue, nothing but the layout owner builds paths under the storage root, and no function
grows past what a reader holds in mind."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "skim_assets"
ASSET_MODULES = sorted((PACKAGE / "assets").glob("*.py"))
SHARED_GLUE = "common"  # the one module asset modules share (Dagster-only glue)
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, absolute (`skim_assets.assets.common`), from `import` and `from` statements."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            # `from package import x` may import module x of the package: both count
            names += [module, *(f"{module}.{a.name}" for a in node.names)]
    return names


@pytest.mark.parametrize("path", ASSET_MODULES, ids=lambda p: p.stem)
def test_an_asset_module_imports_no_sibling_but_the_shared_glue(path):
    siblings = {p.stem for p in ASSET_MODULES} - {"__init__", path.stem}
    imported = {name.split(".")[2] for name in imported_modules(path) if name.startswith("skim_assets.assets.")}
    assert imported & siblings <= {SHARED_GLUE}, f"{path.name} imports {sorted(imported & siblings - {SHARED_GLUE})}"


def test_the_rule_sees_every_form_of_import(tmp_path):
    """The import reader resolves relative, absolute and package imports (else the rule above could not fail)."""
    module = PACKAGE / "assets" / "_probe.py"
    module.write_text("from .mapping import x\nfrom skim_assets.assets import training\n"
                      "import skim_assets.assets.sweeps\nfrom . import baselines\n")
    try:
        imported = {name.split(".")[2] for name in imported_modules(module) if name.startswith("skim_assets.assets.")}
        assert {"mapping", "training", "sweeps", "baselines"} <= imported
    finally:
        module.unlink()


def test_lib_imports_no_dagster():
    offenders = [str(p.relative_to(PACKAGE)) for p in (PACKAGE / "lib").rglob("*.py")
                 if any(name == "dagster" or name.startswith("dagster.") for name in imported_modules(p))]
    assert offenders == []


# What builds a path under the storage root, or moves folders, by hand: the layout owner (`lib/layout.py`, through
# the storage resource) names every place, and the IO manager and `lib` services move artifacts into place.
HAND_BUILT_PATHS = ('storage.read_table("', "os.replace(", "shutil.move(", "root_path", "inside_root(")


@pytest.mark.parametrize("path", ASSET_MODULES, ids=lambda p: p.stem)
def test_an_asset_module_asks_the_layout_for_every_place(path):
    source = path.read_text()
    assert [pattern for pattern in HAND_BUILT_PATHS if pattern in source] == []


def function_lengths() -> dict[str, int]:
    lengths = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_function_is_longer_than_a_reader_holds_in_mind():
    lengths = function_lengths()
    assert len(lengths) > 500  # the count sees the package
    assert {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES} == {}


def test_the_student_size_sweep_is_a_loop_over_run_student():
    (length,) = [n for name, n in function_lengths().items() if name.endswith(" slm_size_report")]
    assert length <= 40
    assert "run_student(" in (PACKAGE / "assets" / "sweeps.py").read_text()
