"""A method type's hyper-parameter names and kind, read from its source without importing it.

The Snakefile checks every method's settings while it builds the DAG, where importing
the method modules (torch, torch-geometric: about 4 s) for each run of snakemake would
cost more than the check. The names come from each class's ``defaults`` literal,
followed through ``**NAME`` / ``**Class.defaults`` splats and base classes; a test
checks that they equal the imported classes' ``defaults`` for every registered type.
"""

from __future__ import annotations

import ast
from functools import cache

from mmpipe.codehash import module_tree
from mmpipe.errors import ConfigError
from mmpipe.methods import METHODS


def _resolve(module: str, name: str):
    """(module, node) assigned to ``name`` at module level of ``module``, following
    ``from mmpipe.x import name``; ``node`` is a ClassDef or an assigned value."""
    for node in module_tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            return module, node.value
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == name and node.value is not None):
            return module, node.value
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmpipe"):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _resolve(node.module, alias.name)
    raise LookupError(f"{name!r} is not defined at module level of {module}")


def _dict_keys(module: str, node) -> set[str]:
    if isinstance(node, ast.Name):
        return _dict_keys(*_resolve(module, node.id))
    if (isinstance(node, ast.Attribute) and node.attr == "defaults"
            and isinstance(node.value, ast.Name)):
        return _class_defaults(*_resolve(module, node.value.id))
    if isinstance(node, ast.Dict):
        keys: set[str] = set()
        for k, v in zip(node.keys, node.values, strict=True):
            keys |= _dict_keys(module, v) if k is None else {k.value}
        return keys
    raise LookupError(f"{module}: cannot read dict keys from {ast.dump(node)[:80]}")


def _class_defaults(module: str, cls) -> set[str]:
    for node in cls.body:
        target = (node.target if isinstance(node, ast.AnnAssign)
                  else node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "defaults" and node.value is not None:
            return _dict_keys(module, node.value)
    keys: set[str] = set()
    for base in cls.bases:  # inherited defaults: the first base that has them (MRO order)
        if isinstance(base, ast.Name):
            try:
                found_module, found = _resolve(module, base.id)
            except LookupError:  # nn.Module & co: outside mmpipe, no defaults
                continue
            if isinstance(found, ast.ClassDef):
                keys = _class_defaults(found_module, found)
                if keys:
                    return keys
    return keys


@cache
def hyperparameter_names(type_name: str) -> frozenset[str]:
    """The names a method of ``type_name`` accepts as its own hyper-parameters."""
    if type_name not in METHODS:
        raise ConfigError(f"unknown method type {type_name!r} (known: {sorted(METHODS)})")
    module, cls = METHODS[type_name].split(":")
    return frozenset(_class_defaults(*_resolve(module, cls)))


def _class_kind(module: str, cls) -> str | None:
    for node in cls.body:
        target = (node.target if isinstance(node, ast.AnnAssign)
                  else node.targets[0] if isinstance(node, ast.Assign) else None)
        if (isinstance(target, ast.Name) and target.id == "kind"
                and isinstance(node.value, ast.Constant)):
            return node.value.value
    for base in cls.bases:
        if isinstance(base, ast.Name):
            try:
                found_module, found = _resolve(module, base.id)
            except LookupError:
                continue
            if isinstance(found, ast.ClassDef) and (kind := _class_kind(found_module, found)):
                return kind
    return None


@cache
def method_kind(type_name: str) -> str:
    """``"sklearn"`` for a method the trainer does not train (its ``fit`` is called and
    trainer settings mean nothing to it), else ``"torch"``: the class's ``kind``."""
    if type_name not in METHODS:
        raise ConfigError(f"unknown method type {type_name!r} (known: {sorted(METHODS)})")
    module, cls = METHODS[type_name].split(":")
    return _class_kind(*_resolve(module, cls)) or "torch"
