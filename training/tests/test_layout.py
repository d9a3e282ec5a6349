"""The package's layout: every module imports, no module imports itself round a
circle, and each job (subpackage) uses only the jobs before it."""
import ast
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "vildtrain")
# the jobs in dependency order: each may import only itself, those before it and the package root
JOBS = ("data", "text", "models", "train", "export", "evaluate", "tools")


def _modules() -> dict[str, str]:
    """Dotted name -> file of every module of the package (packages as their __init__)."""
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(folder, f)
    return out


MODULES = _modules()


def _imports(path: str) -> set[str]:
    """The package's modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from vildtrain.data import coco" imports the module vildtrain.data.coco
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _job(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in JOBS) else None


def test_the_graph_sees_the_package():
    assert {_job(m) for m in MODULES} >= set(JOBS)
    assert "vildtrain.data.scenes" in GRAPH["vildtrain.train.detector_data"]  # a lazy import counts too


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_each_job_imports_only_the_jobs_before_it():
    wrong = []
    for m, deps in GRAPH.items():
        job = _job(m)
        for d in deps:
            other = _job(d)
            if job is None:
                # the package root (paths, __main__) stands below every job
                if other is not None:
                    wrong.append(f"{m} -> {d}")
            elif other is not None and JOBS.index(other) > JOBS.index(job):
                wrong.append(f"{m} -> {d}")
    assert not wrong, "\n".join(sorted(wrong))
