"""dvc.yaml's code dependencies, derived instead of written by hand.

A stage depends on exactly the code it runs: its notebook (or the module its command runs), every module
of `replication` the notebook imports and, transitively, what those import (imports inside functions included: they run when
the stage does), the topic modules `replication.experiments` loads by name for the stage's experiment and
the experiments it requires (the report reads every experiment's), and the ledgers of the papers whose
topics it runs. `python -m replication pipeline` rewrites those entries of each stage's `deps:` in
dvc.yaml (data dependencies such as the token manifest or metrics folders stay as written, after them);
`--check` and a test fail when dvc.yaml has drifted from the code.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "replication"
_STAGE = re.compile(r"^  (\w+):\n", re.M)
_NOTEBOOK_CMD = re.compile(r"notebooks/(\w+)\.ipynb notebooks/executed/")
_MODULE_CMD = re.compile(r"python -m (replication(?:\.\w+)?)(?: (\w+))?")


def _module_file(name: str, root: Path) -> Path | None:
    """The file of module `replication.x.y` (a package's __init__.py), if it is one."""
    path = root.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imported_modules(tree: ast.AST, root: Path) -> set[str]:
    """The `replication` modules a parsed source imports, anywhere in it (`from replication import plots`
    names the module replication.plots; `from replication.fit import slope` the module replication.fit)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}", root)}
    return out


def _with_packages(name: str) -> list[str]:
    """A module and the packages above it, whose __init__.py files run when it is imported."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(modules: set[str], root: Path = ROOT) -> set[Path]:
    """The files of `modules` and of every `replication` module they import, transitively."""
    seen: set[str] = set()
    todo = [p for m in modules for p in _with_packages(m)]
    while todo:
        name = todo.pop()
        if name in seen or (path := _module_file(name, root)) is None:
            continue
        seen.add(name)
        todo += [p for m in _file_imports(path, root) for p in _with_packages(m)]
    return {_module_file(m, root) for m in seen}


_parsed: dict[tuple, frozenset[str]] = {}


def _file_imports(path: Path, root: Path) -> frozenset[str]:
    """`_imported_modules` of a file, parsed once per version of it (every stage's closure reads the same files)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(root))
    if key not in _parsed:
        _parsed[key] = frozenset(_imported_modules(ast.parse(path.read_text()), root))
    return _parsed[key]


def notebook_modules(notebook: Path, root: Path = ROOT) -> set[str]:
    """The `replication` modules a notebook's code cells import."""
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return _imported_modules(ast.parse(source), root)


def stage_topics(stage: str, stages: list[str]) -> set[str]:
    """The topic modules a stage's sweeps load by name: its experiment's and those it requires (transitively);
    the report's are every stage's, since it reads every experiment's declared runs."""
    from replication.experiments import requires, topic

    names, out = ({s for s in stages if s != stage} if stage == "report" else {stage}), set()
    while names:
        name = names.pop()
        module = topic(name)
        if module is not None and module.__name__ not in out:
            out.add(module.__name__)
            names |= set(requires(name))
    return out


def entry(cmd: str, root: Path = ROOT) -> tuple[str | None, set[str]]:
    """What a stage's command runs: (its notebook, the modules it imports) for a papermill stage; (None,
    {module}) for `python -m replication.X` or `python -m replication X` (the CLI command's module)."""
    if notebook := _NOTEBOOK_CMD.search(cmd):
        path = f"notebooks/{notebook.group(1)}.ipynb"
        return path, notebook_modules(root / path, root)
    if module := _MODULE_CMD.search(cmd):
        name, command = module.groups()
        if name == PACKAGE and command and _module_file(f"{PACKAGE}.{command}", root):
            name = f"{PACKAGE}.{command}"
        return None, {name}
    return None, set()


def code_deps(stage: str, cmd: str, stages: list[str], root: Path = ROOT) -> list[str]:
    """The code a stage runs: its notebook, the modules (sorted: the paper layer, then the engine) and the
    ledgers of the papers whose topics run."""
    notebook, modules = entry(cmd, root)
    files = closure(modules | (stage_topics(stage, stages) if notebook else set()), root)
    paths = sorted(f.relative_to(root).as_posix() for f in files)
    papers = sorted({p.split("/")[2] for p in paths if p.startswith("replication/papers/") and p.count("/") == 3})
    ledgers = [f"replication/papers/{p}/ledger.yaml" for p in papers if (root / f"replication/papers/{p}/ledger.yaml").is_file()]
    paper_layer = [p for p in paths if p.startswith("replication/papers/")]
    engine = [p for p in paths if not p.startswith("replication/papers/")]
    return [*([notebook] if notebook else []), *paper_layer, *ledgers, *engine]


def _is_code(dep: str) -> bool:
    return dep.endswith((".py", ".ipynb", "ledger.yaml"))


def _flow(items: list[str], indent: int = 11, width: int = 118) -> str:
    """`[a, b, ...]` wrapped at `width`, each continuation line indented under the first item."""
    quoted = [json.dumps(i) if set(i) & set("{}[],:#") else i for i in items]
    lines, line = [], ""
    for q in quoted:
        if line and indent + len(line) + len(q) + 2 > width:
            lines.append(line + ",")
            line = q
        else:
            line = f"{line}, {q}" if line else q
    lines.append(line)
    return "[" + ("\n" + " " * indent).join(lines) + "]"


def regenerated(text: str, root: Path = ROOT) -> str:
    """dvc.yaml's text with each stage's code deps derived from its imports (data deps kept after them)."""
    import yaml

    declared = yaml.safe_load(text)["stages"]
    starts = [(m.group(1), m.start()) for m in _STAGE.finditer(text)]
    stages = [name for name, _ in starts]
    out, last = [], 0
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        block = text[start:end]
        region = re.search(r"^    deps:.*\n(?:(?!    \w+:).*\n)*", block, re.M)
        code = code_deps(name, declared[name]["cmd"], stages, root)
        if not code or region is None:
            continue
        listed = code + [d for d in declared[name]["deps"] if not _is_code(d)]
        new_block = block[:region.start()] + f"    deps: {_flow(listed)}\n" + block[region.end():]
        out.append(text[last:start] + new_block)
        last = end
    return "".join(out) + text[last:]


def check(path: Path = ROOT / "dvc.yaml") -> list[str]:
    """The stages whose code deps in dvc.yaml differ from their imports (empty: up to date)."""
    old, new = path.read_text(), regenerated(path.read_text(), path.parent)
    if old == new:
        return []
    stage_of = lambda t: dict(re.findall(r"^  (\w+):\n((?:(?!^  \w+:\n)[\s\S])*)", t, re.M))  # noqa: E731
    before, after = stage_of(old), stage_of(new)
    return [s for s in after if before.get(s) != after[s]]


def write(path: Path = ROOT / "dvc.yaml") -> list[str]:
    """Rewrite dvc.yaml's code deps; return the stages that changed."""
    changed = check(path)
    if changed:
        path.write_text(regenerated(path.read_text(), path.parent))
    return changed


def stages(path: Path = ROOT / "dvc.yaml") -> dict[str, dict]:
    return yaml.safe_load(path.read_text())["stages"]


def outputs(stage: dict, profile: str | None = None) -> list[str]:
    """A stage's declared outs, metrics and plots (with `${profile}` filled in when `profile` is given)."""
    paths = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])]
    return [p.replace("${profile}", profile) for p in paths] if profile else paths


def upstream(declared: dict[str, dict]) -> dict[str, set[str]]:
    """For each stage, the stages whose outputs it reads (a dep equal to, inside or above one of their outputs):
    what must have run before it."""
    def within(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip("/") + "/")

    made = {name: outputs(stage) for name, stage in declared.items()}
    return {name: {other for other, outs in made.items() if other != name
                   and any(within(dep, out) or within(out, dep) for dep in stage.get("deps", []) for out in outs)}
            for name, stage in declared.items()}
