"""The layering of DESIGN §1 and §7, checked on the import graph, not hoped for.

Given the package's source, when every import of every module is collected —
inside functions too (a cycle dodged at run time is still a cycle), but not
those under ``if TYPE_CHECKING:`` — expect:

* no import cycle between modules;
* ``protocol`` imports neither ``agents`` nor ``broker``; ``broker`` does not import ``agents``;
* in ``agents``, only the runtime and the assembly module import the AMQP
  libraries or the concrete transport (``broker.amqp``, ``broker.consuming``, ``broker.events``);
* roles, consensus, tasking and the built-ins never import the runtime or the
  assembly (they see the agent context); the runtime imports none of them;
* every module fits in a head (≤ 500 lines) unless its docstring says why it
  is kept in one piece.

The checker itself is tested on small synthetic trees, so each rule is seen
failing at least once.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"robeing.agents": "agents", "robeing.protocol": "protocol", "robeing.broker": "broker"}
AMQP_LIBRARIES = ("aio_pika", "aiormq", "pamqp")
CONCRETE_TRANSPORT = (
    "robeing.broker.amqp",
    "robeing.broker.consuming",
    "robeing.broker.events",
    "robeing.broker.queues",
)
MAY_TOUCH_AMQP = ("robeing.agents.runtime", "robeing.agents.assembly")
ON_THE_CONTEXT = (
    "robeing.agents.roles",
    "robeing.agents.consensus",
    "robeing.agents.tasking",
    "robeing.agents.builtins",
)
EDGE = ("robeing.agents.runtime", "robeing.agents.assembly")
MAX_LINES = 500
SIZE_EXEMPTION = "kept in one piece"


# --- the checker --------------------------------------------------------------------


def discover(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    """Module name -> source file, for every module of ``packages``."""
    modules: dict[str, Path] = {}
    for package, folder in packages.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """Fully qualified names ``name`` imports (a module, or an external top-level name)."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            out.add(sub if sub in known else target)
    return out


def graph(root: Path, packages: dict[str, str]) -> dict[str, set[str]]:
    modules = discover(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the graph's own modules, or None (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(edges, WHITE)
    for start in sorted(edges):
        if color[start] != WHITE:
            continue
        path = [start]
        iters = [iter(sorted(t for t in edges[start] if t in edges))]
        color[start] = GREY
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = BLACK
                iters.pop()
            elif color[nxt] == GREY:
                return [*path[path.index(nxt) :], nxt]
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                iters.append(iter(sorted(t for t in edges[nxt] if t in edges)))
    return None


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import against the layering rules (besides cycles), as readable lines."""
    out = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            bad = None
            if _under(module, ["robeing.protocol"]) and _under(
                target, ["robeing.agents", "robeing.broker"]
            ):
                bad = "protocol/ is pure: it imports neither agents nor broker"
            elif _under(module, ["robeing.broker"]) and _under(target, ["robeing.agents"]):
                bad = "broker/ does not import agents"
            elif (
                _under(module, ["robeing.agents"])
                and not _under(module, MAY_TOUCH_AMQP)
                and _under(target, [*AMQP_LIBRARIES, *CONCRETE_TRANSPORT])
            ):
                bad = "only the runtime and the assembly touch AMQP or the concrete transport"
            elif _under(module, ON_THE_CONTEXT) and _under(target, EDGE):
                bad = "roles, consensus, tasking and built-ins see the agent context only"
            elif _under(module, ["robeing.agents.runtime"]) and _under(target, ON_THE_CONTEXT):
                bad = "the runtime imports no role (assembly installs them)"
            if bad:
                out.append(f"{module} imports {target}: {bad}")
    return out


def oversized(modules: dict[str, Path]) -> list[str]:
    out = []
    for name, path in sorted(modules.items()):
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and SIZE_EXEMPTION not in "\n".join(lines[:15]):
            out.append(f"{name}: {len(lines)} lines")
    return out


# --- the project ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def project() -> dict[str, set[str]]:
    return graph(ROOT, PACKAGES)


def test_the_package_has_no_import_cycle(project: dict[str, set[str]]) -> None:
    cycle = find_cycle(project)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_follows_the_layering(project: dict[str, set[str]]) -> None:
    assert violations(project) == []


def test_modules_fit_in_a_head() -> None:
    assert oversized(discover(ROOT, PACKAGES)) == []


def test_the_graph_covers_the_package(project: dict[str, set[str]]) -> None:
    # Guards against the checker silently reading nothing.
    assert "robeing.agents.runtime.agent" in project
    assert "robeing.agents.context" in project["robeing.agents.runtime.inbound"]
    assert len(project) > 40


# --- the checker fails when it should ---------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in PACKAGES.values():
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "__init__.py").touch()
    return graph(tmp_path, PACKAGES)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    edges = _tree(
        tmp_path,
        {
            "agents/a.py": "from . import b\n",
            "agents/b.py": "def later():\n    from .a import thing\n",
        },
    )
    assert find_cycle(edges) == ["robeing.agents.a", "robeing.agents.b", "robeing.agents.a"]


def test_type_checking_imports_are_not_edges(tmp_path: Path) -> None:
    edges = _tree(
        tmp_path,
        {
            "agents/a.py": "from . import b\n",
            "agents/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .a import thing\n",
        },
    )
    assert find_cycle(edges) is None


@pytest.mark.parametrize(
    ("rel", "text", "expected"),
    [
        ("protocol/x.py", "from ..agents import runtime\n", "protocol/ is pure"),
        ("protocol/x.py", "from robeing.broker import amqp\n", "protocol/ is pure"),
        ("broker/x.py", "from ..agents.app import App\n", "broker/ does not import agents"),
        ("agents/client.py", "import aio_pika\n", "only the runtime and the assembly"),
        ("agents/x.py", "from ..broker.amqp import AmqpTransport\n", "only the runtime"),
        ("agents/roles/w.py", "from ..runtime import Agent\n", "see the agent context only"),
        ("agents/consensus/v.py", "from ...agents import assembly\n", "context only"),
        ("agents/runtime.py", "from .roles import install_role\n", "the runtime imports no role"),
    ],
)
def test_each_layering_rule_catches_its_violation(
    tmp_path: Path, rel: str, text: str, expected: str
) -> None:
    for folder in ("agents/roles", "agents/consensus"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").touch()
    (tmp_path / "agents").mkdir(exist_ok=True)
    for name in ("runtime", "assembly", "app"):
        (tmp_path / "agents" / f"{name}.py").touch()
    found = violations(_tree(tmp_path, {rel: text}))
    assert len(found) == 1 and expected in found[0], found


def test_a_long_module_needs_its_reason(tmp_path: Path) -> None:
    long_body = "x = 1\n" * (MAX_LINES + 1)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "long.py").write_text('"""Long."""\n' + long_body)
    (tmp_path / "agents" / "kept.py").write_text(
        f'"""Kept.\n\nIt is {SIZE_EXEMPTION}: the state machine reads best whole."""\n' + long_body
    )
    assert oversized(discover(tmp_path, {"robeing.agents": "agents"})) == [
        f"robeing.agents.long: {MAX_LINES + 2} lines"
    ]
