"""Code keys: which source a job's output depends on, hashed so an edit reruns that job.

Snakemake's own code trigger sees the rule's script, not the modules it imports, so
every rule's ``params`` carry a key of the ``mmpipe`` modules that produce its output.
A key covers a module and every ``mmpipe`` module it imports, transitively (imports
inside functions included, ``if TYPE_CHECKING:`` blocks excluded), and hashes their
syntax trees without docstrings: reformatting, comments and docstrings rerun nothing,
any change to the code does. Editing the text encoder reruns the text stores and not
the Med3D ones, because the Med3D loop never imports the text encoder.

The registries (:data:`REGISTRIES`) are not keyed whole: adding a method, an encoder
type or an adapter must not rerun every other job. What a job reads from one is keyed
by name instead: the definitions a keyed module imports from a registry (the trainer's
``PHASE_KEYS``, ``build_manifest``) and what they refer to within it, transitively; and
the job's own entry of a registry table, named as ``"encoders/registry:ENCODER_TYPES[med3d]"``
(its builder, shape function and the helpers they call). A table itself
(:data:`REGISTRY_TABLES`) is followed only through the entry a job names. Nor are the
modules that only say where and how outputs are written (:data:`NOT_CONTENT`): a path
that changes is a missing output, which Snakemake builds anyway, and the atomic rename
changes no byte of what is written. The constants a keyed module imports from them by
name are keyed, though: the names of the files inside a folder output (``METRICS``,
``SHARD_QC``) are no path Snakemake checks, so a renamed one reran nothing and the next
report found no finished run.

Keys hash a version-neutral form of each syntax tree (fields a newer Python adds empty,
such as ``type_params``, are left out), so a Python upgrade alone reruns nothing.

Every Snakemake invocation computes the keys while it parses the workflow, and under a
cluster executor so does every job's own invocation: parsing and hashing the ~90
modules took about 4 s of each. A module's digest and its import statements are
therefore also kept on disk, in ``code/`` of the file digests' folder
(:func:`mmpipe.hashing.hash_cache_dir`), addressed by all they are a function of: the
source's bytes, its package (relative imports), this module's own source (the
algorithm) and the Python version. An entry cannot go stale; a missing or unreadable one
is computed again. Only the registries' trees are still parsed in each process.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import json
import logging
import os
import socket
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from mmpipe.hashing import hash_cache_dir

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent
REGISTRIES = frozenset({"methods", "encoders/registry", "cohorts"})
# each registry's table of entries: never keyed whole (an added entry reruns nothing)
REGISTRY_TABLES = {"methods": "METHODS", "encoders/registry": "ENCODER_TYPES",
                   "cohorts": "ADAPTERS"}
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


def _import_statements(tree: ast.AST, package: str) -> list[tuple[str, list[str]]]:
    """The ``mmpipe`` imports anywhere in ``tree`` outside TYPE_CHECKING blocks, in order:
    ``import m`` as ``(m, [])``, ``from m import a, b`` as ``(m, [a, b])`` (relative
    imports resolved against ``package``)."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("mmpipe"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the importing package
                parts = package.split("/")[: len(package.split("/")) - node.level + 1]
                base = ".".join(["mmpipe", *[p for p in parts if p], *filter(None, [base])])
            if base.startswith("mmpipe"):
                found.append((base, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(statements: list[tuple[str, list[str]]],
             names: list[tuple[str, str]] | None = None) -> list[str]:
    """The modules ``statements`` import; ``names`` (when given) collects ``(module,
    name)`` of each ``from module import name`` that is no module."""
    found: list[str] = []
    for base, aliases in statements:
        found.append(base)
        # `from mmpipe.encoders import text` imports the module mmpipe.encoders.text
        for alias in aliases:
            sub = f"{base}.{alias}"
            if _module_file(sub).exists():
                found.append(sub)
            elif names is not None:
                names.append((base, alias))
    return found


def _imports(tree: ast.AST, package: str, names: list[tuple[str, str]] | None = None
             ) -> list[str]:
    """``mmpipe`` modules imported anywhere in ``tree`` outside TYPE_CHECKING blocks;
    ``names`` (when given) collects ``(module, name)`` of each ``from module import name``."""
    return _resolve(_import_statements(tree, package), names)


def _package(path: Path) -> str:
    name = _name(path)
    return name if path.name == "__init__.py" else name.rpartition("/")[0]


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_bytes(), filename=str(path))


@cache
def _summary(path: Path) -> tuple[str, list[tuple[str, list[str]]]]:
    """The module's digest (its tree's neutral form, docstrings stripped) and its import
    statements, kept on disk by what they are a function of (see the module's docstring)."""
    source, package = path.read_bytes(), _package(path)
    key = hashlib.sha256(b"\0".join([b"codehash", _algorithm(), package.encode(), source]))
    entry = _cache_entry(key.hexdigest())
    if entry is not None and (kept := _kept(entry)) is not None:
        return kept
    tree = ast.parse(source, filename=str(path))
    statements = _import_statements(tree, package)
    digest = hashlib.sha256(_neutral_form(tree).encode()).hexdigest()
    if entry is not None:
        _keep(entry, json.dumps({"digest": digest, "imports": statements}))
    return digest, statements


def _cache_entry(key: str) -> Path | None:
    try:
        return hash_cache_dir() / "code" / f"{key}.json"
    except RuntimeError:  # no home folder to keep it under (no HOME, no passwd entry)
        return None


def _kept(entry: Path) -> tuple[str, list[tuple[str, list[str]]]] | None:
    try:
        record = json.loads(entry.read_text())
        digest, imports = record["digest"], record["imports"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, cut short or written by something else: computed again
    well_formed = (isinstance(digest, str) and len(digest) == 64 and isinstance(imports, list)
                   and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
                           and isinstance(s[1], list) and all(isinstance(a, str) for a in s[1])
                           for s in imports))
    return (digest, [(m, list(a)) for m, a in imports]) if well_formed else None


def _keep(entry: Path, text: str) -> None:
    """Write a cache entry atomically. Every job's own Snakemake run of a cluster writes
    the same entries at once after an edit, from several hosts into a shared folder, so
    the temporary file is this process's alone and nobody's debris to sweep."""
    tmp = entry.with_name(f".{entry.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, entry)  # the same bytes from every writer: the last one wins
    except OSError as err:  # a cache that cannot be written costs time, never a result
        log.debug("code digest not cached in %s: %s", entry.parent, err)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@cache
def _parsed(path: Path) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The modules the module imports, and the (registry, name) pairs it imports from a
    registry."""
    names: list[tuple[str, str]] = []
    deps = tuple(sorted({_name(_module_file(m)) for m in _resolve(_summary(path)[1], names)
                         if _module_file(m).exists()}))
    from_registries = tuple(sorted({(_name(_module_file(m)), n) for m, n in names
                                    if _name(_module_file(m)) in REGISTRIES | NOT_CONTENT}))
    return deps, from_registries


def _top_level(tree: ast.Module) -> dict[str, ast.AST]:
    """A module's top-level definitions by the names they bind (imports included)."""
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
        elif isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                out[(alias.asname or alias.name).split(".")[0]] = node
    return out


def _entry(tree: ast.Module, table: str, key: str) -> ast.AST:
    """The entry ``key`` of a registry table: a dict literal's value, or the call in the
    table whose first argument is ``key`` (``EncoderType("med3d", ...)``)."""
    node = _top_level(tree).get(table)
    for n in ast.walk(node) if node is not None else ():
        if isinstance(n, ast.Dict):
            for k, v in zip(n.keys, n.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == key:
                    return v
        if (isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
                and n.args[0].value == key):
            return n
    raise KeyError(f"no entry {key!r} in {table}")


def _registry_part(registry: str, roots: list[ast.AST]) -> tuple[list[ast.AST], set[str]]:
    """The definitions of ``registry`` that ``roots`` refer to, transitively (its table
    left out), and the mmpipe modules they import."""
    path = _module_file(registry)
    tree = _tree(path)
    defs, table = _top_level(tree), REGISTRY_TABLES.get(registry)
    kept: list[ast.AST] = []
    imported: list[str] = []
    todo, seen = list(roots), set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        kept.append(node)
        for n in ast.walk(node):
            if not isinstance(n, ast.Name) or n.id not in defs or n.id == table:
                continue
            if isinstance(defs[n.id], ast.Import | ast.ImportFrom):
                # a name the registry imports: keyed by its module, not the import line
                imported += _imports(ast.Module(body=[_only(defs[n.id], n.id)],
                                                type_ignores=[]), _package(path))
            else:
                todo.append(defs[n.id])
    modules = {_name(_module_file(m)) for m in
               [*imported, *(m for node in kept for m in _imports(node, _package(path)))]
               if _module_file(m).exists()}
    return sorted(kept, key=lambda n: (n.lineno, n.col_offset)), modules - {registry}


def _only(node: ast.Import | ast.ImportFrom, name: str) -> ast.AST:
    """The import statement ``node`` narrowed to the alias that binds ``name``."""
    narrowed = copy.copy(node)
    narrowed.names = [a for a in node.names if (a.asname or a.name).split(".")[0] == name]
    return narrowed


def module_tree(module: str) -> ast.Module:
    """The parsed source of an ``mmpipe`` module (parsed once per process; do not modify)."""
    return _tree(_module_file(module))


def _closure(specs: Iterable[str]) -> tuple[list[str], dict[str, list[ast.AST]]]:
    """The modules of :func:`module_closure` and, per registry, the definitions read."""
    seen: set[str] = set()
    wanted: dict[str, list[ast.AST]] = {}
    todo = []
    for spec in specs:
        module, _, entry = spec.partition(":")
        name = _name(_module_file(module))
        if entry:  # "encoders/registry:ENCODER_TYPES[med3d]", "cohorts:build_manifest"
            table, _, key = entry.partition("[")
            tree = _tree(_module_file(name))
            if key:
                wanted.setdefault(name, []).append(_entry(tree, table, key.removesuffix("]")))
            elif table in _top_level(tree):
                wanted.setdefault(name, []).append(_top_level(tree)[table])
            else:
                raise KeyError(f"no {table!r} in mmpipe module {name!r}")
        else:
            todo.append(name)
    done: dict[str, int] = {}
    while todo or any(len(v) != done.get(k) for k, v in wanted.items()):
        while todo:
            mod = todo.pop()
            if mod in seen or mod in REGISTRIES or mod in NOT_CONTENT:
                continue
            path = _module_file(mod)
            if not path.exists():
                raise FileNotFoundError(f"no mmpipe module {mod!r} ({path})")
            seen.add(mod)
            deps, from_registries = _parsed(path)
            todo.extend(deps)
            for registry, n in from_registries:
                definition = _top_level(_tree(_module_file(registry))).get(n)
                if definition is None or n == REGISTRY_TABLES.get(registry):
                    continue
                if registry in NOT_CONTENT:  # its constants only: see the docstring
                    if isinstance(definition, ast.Assign | ast.AnnAssign):
                        wanted.setdefault(registry, []).append(definition)
                    continue
                if isinstance(definition, ast.Import | ast.ImportFrom):
                    # a name the registry re-exports (``from mmpipe.cohorts import
                    # read_manifest``): the module that defines it
                    todo.extend(_name(_module_file(m)) for m in _imports(
                        ast.Module(body=[_only(definition, n)], type_ignores=[]),
                        _package(_module_file(registry))) if _module_file(m).exists())
                else:
                    wanted.setdefault(registry, []).append(definition)
        for registry, roots in list(wanted.items()):
            if done.get(registry) != len(roots):
                done[registry] = len(roots)
                todo.extend(_registry_part(registry, roots)[1])
    parts = {registry: _registry_part(registry, roots)[0] for registry, roots in wanted.items()}
    return sorted(seen), parts


def module_closure(modules: Iterable[str]) -> list[str]:
    """``modules`` and every ``mmpipe`` module they import, transitively, as
    ``encode/med3d``-style names (a package is named by its folder); registries and
    :data:`NOT_CONTENT` left out (what is read from a registry is keyed by name:
    :func:`code_key`). A ``"registry:TABLE[entry]"`` spec adds the modules its entry
    imports."""
    return _closure(modules)[0]


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


def _neutral_form(tree: ast.AST) -> str:
    return repr(_neutral(_StripDocstrings().visit(tree)))


@cache
def _algorithm() -> bytes:
    """What a module's digest is a function of besides its source: this file and the
    Python that parses."""
    return Path(__file__).read_bytes() + sys.version.encode()


def _module_digest(path: Path) -> str:
    return _summary(path)[0]


_node_forms: dict[ast.AST, str] = {}  # holds its nodes: an id is never reused under it


def _node_form(node: ast.AST) -> str:
    """A registry definition's neutral form, computed once per process."""
    if node not in _node_forms:
        _node_forms[node] = _neutral_form(copy.deepcopy(node))
    return _node_forms[node]


@cache
def code_key(*modules: str) -> str:
    """SHA-256 (12 hex) of ``modules`` and everything they import within ``mmpipe``,
    with the registry definitions they read (and ``"registry:TABLE[entry]"`` specs)."""
    digest = hashlib.sha256()
    closure, parts = _closure(modules)
    for mod in closure:
        digest.update(mod.encode())
        digest.update(_module_digest(_module_file(mod)).encode())
    for registry in sorted(parts):
        digest.update(registry.encode())
        for node in parts[registry]:
            digest.update(_node_form(node).encode())
    return digest.hexdigest()[:12]
