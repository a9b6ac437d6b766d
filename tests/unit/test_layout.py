"""The house's import rules, read from the source with `ast` (no import is executed).

- no import circle among the project's own modules, bench/ included (imports inside functions
  count; imports under `if TYPE_CHECKING:` do not, since they never run);
- `adapters_store` imports neither `app` nor `training`; `training` never imports `app`;
- inside `app`, only `app.jobs` imports `training.trainer`;
- only `app.api` and `app.main` import FastAPI (or Starlette);
- no room imports a room above it (FLOORS), nor a name its room must not know (FORBIDDEN);
- no Python module over MAX_LINES lines in app/, training/, adapters_store/ or bench/.

The rules name rooms by prefix: a rule about a room that does not exist yet holds trivially,
and bites as soon as the room's first module appears.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "training", "adapters_store")
TREE = (*PACKAGES, "bench")  # the whole tree: the packages and the benchmarks
MAX_LINES = 300
# The rooms' floors, bottom up: a module may import its own floor and those below, never one
# above. Rooms not named here are not ranked (the rules below still apply to them).
FLOORS = {
    "adapters_store": 0,
    "app.metrics": 0,
    "training": 1,
    "app.serving": 1,
    "app.inference": 2,
    "app.tenancy": 2,
    "app.observability": 2,
    "app.api": 3,
    "app.bootstrap": 4,  # builds store, engine, records, queue and limiter once
    "app.cluster": 4,  # the Ray deployment: uses the bootstrap, never app.main
    "app.main": 5,  # create_app: the composition root
    "app.cli": 6,
    "app.__main__": 6,
    "app.procs": 6,  # engine process, API processes, supervisor (python -m app --api-workers N)
    "bench": 7,
}
# What a room must not import, whatever the floors say: same-floor neighbours and third-party
# packages that belong to another room.
FORBIDDEN = {
    "app.serving": (
        "fastapi",
        "starlette",
        "prometheus_client",
        "app.tenancy",
        "training",
        "zmq",  # the engine process's wire lives in app.procs
    ),
    "app.inference": ("fastapi", "starlette"),
    "app.tenancy": ("fastapi", "starlette", "app.inference"),
    "app.observability": ("app.api",),
    "app.metrics": ("app.observability",),
}


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the given packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_names(module: str, path: Path, modules: Collection[str] = ()) -> set[str]:
    """Every dotted name this module imports.

    `from a import b` gives `a.b` when that is one of `modules`, else `a` (and, when `modules`
    is empty, both), so that `from pkg import submodule` is no edge to `pkg/__init__`.
    """
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            dotted = f"{base}.{alias.name}"
            if dotted in modules:
                names.add(dotted)
            else:
                names.add(base)
                if not modules:
                    names.add(dotted)
    return names


def project_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (an import of a package counts as its __init__)."""
    modules = module_names(root, packages)
    return {
        name: {d for d in imported_names(name, path, modules) if d in modules and d != name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def all_imports(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    modules = module_names(root, packages)
    return {name: imported_names(name, path) for name, path in modules.items()}


def _violations(imports: dict[str, set[str]], rule) -> list[str]:
    return sorted(
        f"{mod} imports {dep}" for mod, deps in imports.items() for dep in deps if rule(mod, dep)
    )


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_import_circle_in_the_project() -> None:
    assert find_cycle(project_graph(REPO, TREE)) is None


def test_the_circle_finder_finds_a_circle_when_one_is_added(tmp_path: Path) -> None:
    pkg = tmp_path / "app"
    (pkg / "jobs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "jobs" / "__init__.py").write_text("")
    (pkg / "jobs" / "records.py").write_text("def f():\n    from app.jobs import factory\n")
    (pkg / "jobs" / "factory.py").write_text("from .records import f\n")
    (pkg / "jobs" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.jobs import records\n"
    )
    graph = project_graph(tmp_path, ("app",))
    assert graph["app.jobs.factory"] == {"app.jobs.records"}
    assert graph["app.jobs.typed"] == set()
    assert find_cycle(graph) in (
        ["app.jobs.factory", "app.jobs.records", "app.jobs.factory"],
        ["app.jobs.records", "app.jobs.factory", "app.jobs.records"],
    )
    (pkg / "jobs" / "records.py").write_text("X = 1\n")
    assert find_cycle(project_graph(tmp_path, ("app",))) is None


def test_the_store_imports_neither_app_nor_training() -> None:
    assert (
        _violations(
            all_imports(),
            lambda mod, dep: (
                _under(mod, "adapters_store") and (_under(dep, "app") or _under(dep, "training"))
            ),
        )
        == []
    )


def test_training_never_imports_app() -> None:
    assert (
        _violations(all_imports(), lambda mod, dep: _under(mod, "training") and _under(dep, "app"))
        == []
    )


def test_only_the_jobs_room_imports_the_trainer() -> None:
    assert (
        _violations(
            all_imports(),
            lambda mod, dep: (
                _under(mod, "app")
                and not _under(mod, "app.jobs")
                and _under(dep, "training.trainer")
            ),
        )
        == []
    )


@pytest.mark.parametrize("web", ["fastapi", "starlette"])
def test_only_the_http_layer_imports_the_web_framework(web: str) -> None:
    assert (
        _violations(
            all_imports(),
            lambda mod, dep: _under(dep, web) and not (_under(mod, "app.api") or mod == "app.main"),
        )
        == []
    )


def _room(module: str) -> str | None:
    """The most specific room of FLOORS holding `module`."""
    rooms = [room for room in FLOORS if _under(module, room)]
    return max(rooms, key=len, default=None)


def _runs_back_up(mod: str, dep: str) -> bool:
    low, high = _room(mod), _room(dep)
    return low is not None and high is not None and FLOORS[high] > FLOORS[low]


def test_no_room_imports_a_room_above_it() -> None:
    assert _violations(all_imports(packages=TREE), _runs_back_up) == []


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_nothing_it_must_not_know(room: str) -> None:
    assert (
        _violations(
            all_imports(packages=TREE),
            lambda mod, dep: _under(mod, room) and any(_under(dep, f) for f in FORBIDDEN[room]),
        )
        == []
    )


def test_the_floor_rule_bites_on_a_room_that_appears(tmp_path: Path) -> None:
    (tmp_path / "app" / "serving").mkdir(parents=True)
    (tmp_path / "app" / "inference").mkdir()
    (tmp_path / "app" / "serving" / "engine.py").write_text("from app.inference import usecase\n")
    (tmp_path / "app" / "inference" / "usecase.py").write_text("import fastapi\n")
    imports = {
        name: imported_names(name, path) for name, path in module_names(tmp_path, ("app",)).items()
    }
    assert _violations(imports, _runs_back_up) == [
        "app.serving.engine imports app.inference",
        "app.serving.engine imports app.inference.usecase",
    ]
    assert _room("app.inference.usecase") == "app.inference" and _room("app.jobs.x") is None


def _long_modules(room: str) -> list[str]:
    folder = REPO / room
    return sorted(
        f"{path.relative_to(REPO)}: {n} lines"
        for path in folder.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    )


@pytest.mark.parametrize("room", TREE)
def test_no_module_is_over_the_line_limit(room: str) -> None:
    assert _long_modules(room) == []


def test_the_app_packages_top_level_stays_small() -> None:
    """app/ keeps at most ten modules of its own; anything new goes into a room (a package)."""
    top = sorted(p.name for p in (REPO / "app").glob("*.py"))
    assert len(top) <= 10, top
