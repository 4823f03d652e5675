"""The engine's folders read as the path of a job, no import runs back up that path, and every module says why."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
# a request is admitted and queued, a worker runs it, loading the model's weights, and the video lands in the library
PATH = ["admission", "run", "models", "library"]
SHARED = {"errors", "events", "jobs", "flags", "catalog"}  # the vocabulary every stage speaks (engine/*.py)


def engine_imports(path: Path) -> set[str]:
    """The engine modules `path` imports when it runs (annotations-only imports under TYPE_CHECKING left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = list(path.relative_to(ENGINE.parent).with_suffix("").parts[:-1])
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - node.level + 1]
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found |= {".".join([*base, name]) for name in names}
        elif (node.module or "").startswith("engine."):
            found.add(node.module)
    return found


def stage(module: str) -> str:
    """The folder (or shared module) of a dotted engine module: engine.run.worker -> run, engine.errors -> errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_module_on_the_path_imports_a_stage_before_its_own():
    backwards = []
    for folder in PATH:
        for path in sorted((ENGINE / folder).glob("*.py")):
            for target in engine_imports(path):
                where = stage(target)
                if where in PATH and PATH.index(where) < PATH.index(folder):
                    backwards.append(f"{path.relative_to(ENGINE)} imports {target}")
    assert backwards == []


def test_the_shared_vocabulary_imports_no_stage():
    for name in SHARED:
        stages = {stage(t) for t in engine_imports(ENGINE / f"{name}.py")}
        assert stages <= SHARED, f"engine/{name}.py imports {stages - SHARED}"


def test_every_engine_module_opens_with_what_it_is_for():
    silent = [
        str(p.relative_to(ENGINE))
        for p in sorted(ENGINE.rglob("*.py"))
        if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert silent == []
