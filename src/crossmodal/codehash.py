"""Which source files a piece of the package really runs, and one hash over them.

A stage's rerun trigger and a generator's journal identity both need "the code behind this":
the module itself plus every ``crossmodal`` module it imports, transitively, including imports
inside functions (the package imports heavy dependencies lazily, so those are the common case).
The closure is read from the source with ``ast``, without importing anything.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "crossmodal"


def _module_path(root: Path, module: str) -> Path | None:
    """The file of ``crossmodal.a.b`` under ``root`` (the folder holding ``crossmodal/``)."""
    rel = Path(*module.split("."))
    for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _nodes(tree: ast.AST, lazy: bool):
    """Every node, or (``lazy=False``) every node outside function bodies."""
    if lazy:
        yield from ast.walk(tree)
        return
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                todo.append(child)


def _imports(path: Path, module: str, lazy: bool) -> set[str]:
    """``crossmodal`` modules imported in ``path`` (``module`` is its dotted name); with
    ``lazy``, imports inside functions count too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _nodes(tree, lazy):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # submodules imported by name
    return found


@functools.cache
def module_closure(root: str, module: str, whole: bool = True) -> tuple[Path, ...]:
    """Source files of ``module`` and every package module it imports, sorted.

    ``root`` is the folder that holds the ``crossmodal`` package (a checkout's ``src``). With
    ``whole`` (what a stage runs), imports inside functions count and so do parent packages'
    ``__init__`` files, which Python runs on import. Without, only module-level imports of the
    module's own code are followed: a backend's behaviour, not every backend a registry could
    build on demand.
    """
    base = Path(root)
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        parts = name.split(".")
        if whole:  # parent packages run their __init__
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        path = _module_path(base, name)
        if path is None:  # an imported *name*, not a module (``from m import func``)
            continue
        seen[name] = path
        todo.extend(_imports(path, name, lazy=whole))
    return tuple(sorted(set(seen.values())))


def digest(files: tuple[Path, ...] | list[Path], root: str | Path) -> str:
    """One sha256 over the files' paths (relative to ``root``) and contents."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(Path(f).relative_to(root)).encode() + b"\0")
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def code_digest(root: str | Path, *modules: str, whole: bool = True) -> str:
    """Hash of the closure of ``modules`` under ``root`` (16 hex digits)."""
    files: set[Path] = set()
    for m in modules:
        files.update(module_closure(str(root), m, whole))
    return digest(sorted(files), root)[:16]


def package_root() -> Path:
    """The folder holding this installed (or checked-out) ``crossmodal`` package."""
    return Path(__file__).resolve().parents[1]
