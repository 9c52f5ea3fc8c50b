"""The package's import graph keeps its layers: no cycles, nothing imports upwards.

Every module of ``agentgym_runtime`` is parsed with :mod:`ast` (nothing is imported), and each
``import`` statement becomes an edge, tagged with where it sits: at module level, inside a
function (run when the function is called), or under ``if TYPE_CHECKING:`` (never run). The
layers, bottom up:

* the recording core: ``recording/``, ``collectors/`` and the leaves (``config``, ``errors``,
  ``semconv``, ``_version``);
* what builds on it: ``policy/``, ``trainers/``, ``scenarios/``;
* ``services`` (the one wiring module);
* the public surface and everything that drives it: ``api``, ``decorator``, ``tools``,
  ``testing``, ``adapters/``, ``cli/``, ``demo/``.

Run ``pytest tests/test_architecture.py -q``; a failure lists the offending edges as
``importer -> imported (line N, where)``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "agentgym_runtime"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Packages the recording core must never import (not even inside a function).
ABOVE_RECORDING = ("policy", "trainers", "adapters", "cli", "services", "api", "decorator", "demo", "scenarios")
#: Modules that may import ``services``: the public surface and what drives it.
ABOVE_SERVICES = ("__init__", "api", "decorator", "tools", "testing", "adapters", "cli", "demo", "services")
HEAVY = ("torch", "transformers", "agentlightning", "langchain_core", "langchain", "autogen_agentchat",
         "autogen_core", "crewai", "peft", "trl", "pyarrow", "duckdb")  # fmt: skip


@dataclass(frozen=True)
class Edge:
    """One import statement of one module of the package."""

    source: str
    target: str
    line: int
    where: str  # "module", "function" or "type-checking"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.where})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(target: str) -> list[str]:
    """The package modules that importing ``target`` runs: its parent packages, then itself."""
    parts = target.split(".")
    found = [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES]
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, module: str, where: str) -> Iterator[tuple[str, int, str]]:
    """``(imported name, line, where)`` for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield from _statement(child, module, where)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), module, "type-checking")
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), module, where)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and where == "module":
            yield from _imports(child, module, "function")
        else:
            yield from _imports(child, module, where)


def _statement(stmt: ast.Import | ast.ImportFrom, module: str, where: str) -> Iterator[tuple[str, int, str]]:
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            yield alias.name, stmt.lineno, where
        return
    base = stmt.module or ""
    if stmt.level:
        anchor = module.split(".") if _is_package(module) else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (stmt.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    for alias in stmt.names:
        # ``from pkg import name`` imports the submodule ``pkg.name`` when there is one.
        candidate = f"{base}.{alias.name}"
        yield (candidate if candidate in MODULES else base), stmt.lineno, where


def _edges() -> list[Edge]:
    edges: list[Edge] = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        for target, line, where in _imports(tree, module, "module"):
            if not target.startswith(PACKAGE):
                continue
            for resolved in _resolve(target):
                if resolved not in own or resolved == target:
                    edges.append(Edge(module, resolved, line, where))
    return [e for e in edges if e.source != e.target]


EDGES = _edges()


def _area(module: str) -> str:
    """``agentgym_runtime.policy.router`` -> ``policy``; ``agentgym_runtime`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _report(edges: list[Edge]) -> str:
    return "\n".join(f"  {edge}" for edge in sorted(edges, key=str))


def test_the_graph_sees_the_whole_package() -> None:
    # A guard for the parser itself: known edges of each kind are found.
    found = {(e.source, e.target, e.where) for e in EDGES}
    assert ("agentgym_runtime.recording.episodes", "agentgym_runtime.recording.context", "module") in found
    assert ("agentgym_runtime.decorator", "agentgym_runtime.trainers.scheduler", "function") in found
    assert ("agentgym_runtime", "agentgym_runtime.api", "type-checking") in found
    assert len(MODULES) > 60


def _cycles(edges: list[Edge]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    # Tarjan's strongly connected components, iteratively (the graph is small, but recursion is fragile).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycle_at_module_level() -> None:
    module_level = [e for e in EDGES if e.where == "module"]
    cycles = _cycles(module_level)
    details = []
    for members in cycles:
        inside = [e for e in module_level if e.source in members and e.target in members]
        details.append(f"cycle among {', '.join(members)}:\n{_report(inside)}")
    assert not cycles, "import cycles at module level:\n" + "\n".join(details)


def test_the_recording_core_imports_nothing_above_it() -> None:
    core = ("recording", "collectors", "config", "errors", "semconv", "_version")
    bad = [
        e
        for e in EDGES
        if e.where != "type-checking" and _area(e.source) in core and _area(e.target) in ABOVE_RECORDING
    ]
    assert not bad, "the recording core imports upwards:\n" + _report(bad)


def test_nothing_below_services_imports_it() -> None:
    bad = [e for e in EDGES if _area(e.target) == "services" and _area(e.source) not in ABOVE_SERVICES]
    assert not bad, "modules below services import it:\n" + _report(bad)


def test_policy_and_trainers_never_reach_for_the_runtime() -> None:
    # They get narrow collaborators (store, flush, error sink) from services instead.
    bad = [
        e
        for e in EDGES
        if e.where != "type-checking"
        and _area(e.source) in ("policy", "trainers", "scenarios")
        and e.target in ("agentgym_runtime.recording.runtime", "agentgym_runtime.recording.wrapping")
    ]
    assert not bad, "policy/trainers import the recording runtime:\n" + _report(bad)


def test_only_services_builds_the_router_and_the_scheduler() -> None:
    builders = {
        e.source
        for e in EDGES
        if e.where != "type-checking"
        and e.target in ("agentgym_runtime.policy.router", "agentgym_runtime.trainers.scheduler")
        and _area(e.source) not in ("policy", "trainers")
    }
    # The public surface uses router / scheduler helpers, but never constructs them: that is in services.
    offenders = []
    for module in sorted(builders - {"agentgym_runtime.services"}):
        source = MODULES[module].read_text()
        if "PolicyRouter(" in source or "TrainingScheduler(" in source:
            offenders.append(module)
    assert not offenders, f"modules other than services build the router or the scheduler: {offenders}"


def _python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


@pytest.mark.parametrize(
    "statement",
    [
        "import agentgym_runtime",
        "import agentgym_runtime.services",
        "import agentgym_runtime.recording.runtime",
    ],
)
def test_importing_loads_no_framework_torch_or_agent_lightning(statement: str) -> None:
    out = _python(
        f"""
        import sys
        {statement}
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    assert out == "[]", f"{statement} loads {out}"


def test_the_recording_core_runs_without_services() -> None:
    # Dependency inversion: the recording runtime is usable without the wiring module loaded.
    out = _python(
        """
        import sys
        from agentgym_runtime.config import Settings
        from agentgym_runtime.recording.runtime import get_runtime, replace_runtime
        runtime = replace_runtime(Settings(store=":memory:"))
        print(get_runtime() is runtime, runtime.resolve_policy("bot", None).version,
              sorted(m for m in sys.modules if m.startswith("agentgym_runtime.")
                     and m.split(".")[1] in ("services", "policy", "trainers", "adapters", "cli")))
        runtime.shutdown()
        """
    )
    assert out == "True 0 []"
