"""Code keys: which source a job's output depends on, hashed so an edit reruns that job.

Snakemake's own code trigger sees the rule's script, not the modules it imports, so
every rule's ``params`` carry a key of the ``mmpipe`` modules that produce its output.
A key covers a module and every ``mmpipe`` module it imports, transitively (imports
inside functions included, ``if TYPE_CHECKING:`` blocks excluded), and hashes their
syntax trees without docstrings: reformatting, comments and docstrings rerun nothing,
any change to the code does. Editing the text encoder reruns the text stores and not
the Med3D ones, because the Med3D loop never imports the text encoder.

The registries (:data:`REGISTRIES`) are not part of any key and their imports are not
followed: adding a method, an encoder type or an adapter must not rerun every other job.
A job's key names its own registry entry instead (its method module, its encoder type's
modules, its adapter). Nor are the modules that only say where and how outputs are
written (:data:`NOT_CONTENT`): a path that changes is a missing output, which Snakemake
builds anyway, and the atomic rename changes no byte of what is written.

Keys hash a version-neutral form of each syntax tree (fields a newer Python adds empty,
such as ``type_params``, are left out), so a Python upgrade alone reruns nothing.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REGISTRIES = frozenset({"methods", "encoders/registry", "cohorts"})
NOT_CONTENT = frozenset({"layout", "fsutil"})


def _module_file(module: str) -> Path:
    """``encode/med3d`` or ``mmpipe.encode.med3d`` -> its file (a package's ``__init__``)."""
    rel = module.removeprefix("mmpipe.").replace(".", "/").removesuffix(".py")
    path = PACKAGE_ROOT / rel
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py")


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT).with_suffix("")
    return (rel.parent if rel.name == "__init__" else rel).as_posix()


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST, package: str) -> list[str]:
    """``mmpipe`` modules imported anywhere in ``tree`` outside TYPE_CHECKING blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("mmpipe"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the importing package
                parts = package.split("/")[: len(package.split("/")) - node.level + 1]
                base = ".".join(["mmpipe", *[p for p in parts if p], *filter(None, [base])])
            if base.startswith("mmpipe"):
                found.append(base)
                # `from mmpipe.encoders import text` imports the module mmpipe.encoders.text
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if _module_file(sub).exists():
                        found.append(sub)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@cache
def _parsed(path: Path) -> tuple[ast.Module, tuple[str, ...]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _name(path)
    package = name if path.name == "__init__.py" else name.rpartition("/")[0]
    deps = tuple(sorted({_name(_module_file(m)) for m in _imports(tree, package)
                         if _module_file(m).exists()}))
    return tree, deps


def module_tree(module: str) -> ast.Module:
    """The parsed source of an ``mmpipe`` module (parsed once per process; do not modify)."""
    return _parsed(_module_file(module))[0]


def module_closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every ``mmpipe`` module they import, transitively, as
    ``encode/med3d``-style names (a package is named by its folder); registries and
    :data:`NOT_CONTENT` left out."""
    seen: set[str] = set()
    todo = [_name(_module_file(m)) for m in modules]
    while todo:
        mod = todo.pop()
        if mod in seen or mod in REGISTRIES or mod in NOT_CONTENT:
            continue
        path = _module_file(mod)
        if not path.exists():
            raise FileNotFoundError(f"no mmpipe module {mod!r} ({path})")
        seen.add(mod)
        todo.extend(_parsed(path)[1])
    return sorted(seen)


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = getattr(node, "body", None)
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


def _neutral(node) -> object:
    """A syntax tree as nested tuples of its node types and non-empty fields."""
    if isinstance(node, ast.AST):
        fields = tuple((name, _neutral(value)) for name, value in ast.iter_fields(node)
                       if value not in (None, []) and name != "type_comment")
        return (type(node).__name__, fields)
    if isinstance(node, list):
        return tuple(_neutral(v) for v in node)
    return repr(node)


@cache
def _module_digest(path: Path) -> str:
    tree = _StripDocstrings().visit(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(repr(_neutral(tree)).encode()).hexdigest()


@cache
def code_key(*modules: str) -> str:
    """SHA-256 (12 hex) of ``modules`` and everything they import within ``mmpipe``."""
    digest = hashlib.sha256()
    for mod in module_closure(modules):
        digest.update(mod.encode())
        digest.update(_module_digest(_module_file(mod)).encode())
    return digest.hexdigest()[:12]
