"""Code versions: what the UI's "unsynced" view compares besides the data.

An asset's code version is a digest of the source that computes it: its asset module, the shared asset helpers
(`assets/common.py`) and every `skim_assets.lib` module they import, transitively (lazy imports inside functions
included). Any edit there marks the stage's assets unsynced until they are materialized again; a rerun whose tables
come out the same keeps their data versions (content digests, `resources/artifacts.py`), so nothing downstream
turns unsynced for a comment. Settings given as run config are not code: a run with other settings is the user's
explicit call, and its tables' data versions tell downstream what changed.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import dagster as dg

PACKAGE_ROOT = Path(__file__).resolve().parent
SHARED_ASSET_CODE = ("skim_assets.assets.common",)


def _module_path(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package = PACKAGE_ROOT / relative / "__init__.py"
    return package if package.exists() else PACKAGE_ROOT / relative.with_suffix(".py")


@cache
def lib_imports(module: str) -> frozenset[str]:
    """The `skim_assets.lib` modules `module`'s source imports anywhere (functions' lazy imports included)."""
    path = _module_path(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.startswith("skim_assets.lib") and _module_path(name).exists()}
    return frozenset(found)


@cache
def code_version(module: str) -> str:
    """The digest of `module`, the shared asset helpers and the lib modules they import, transitively."""
    modules, frontier = set(), [module, *SHARED_ASSET_CODE]
    while frontier:
        name = frontier.pop()
        if name not in modules:
            modules.add(name)
            frontier.extend(lib_imports(name))
    digest = hashlib.sha1()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + _module_path(name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def defining_module(assets_def: dg.AssetsDefinition) -> str:
    """The module whose function computes an asset (a graph asset's: its first op's)."""
    node = assets_def.node_def
    op = next(iter(node.iterate_op_defs())) if isinstance(node, dg.GraphDefinition) else node
    function = getattr(op.compute_fn, "decorated_fn", op.compute_fn)
    return function.__module__


def with_code_versions(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """`assets`, each with the code version of the module that computes it."""
    return [a.map_asset_specs(lambda spec, version=code_version(defining_module(a)): spec.replace_attributes(
        code_version=version)) for a in assets]
