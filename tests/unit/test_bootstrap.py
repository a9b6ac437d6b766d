"""The one bootstrap (issue 27): each part is built in one place, the Redis-or-SQLite choice
is made once, and the lower rooms never import the rooms that wire them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app.config import BackendView, BatchingView, EngineView, LimiterView, Settings, StoreView
from app.tenancy.limiter import LocalLimiter
from app.tenancy.quotas import build_limiter

APP = Path(__file__).resolve().parents[2] / "app"
# Rooms below the wiring (bootstrap, main, cluster, entry points, HTTP): never import upward.
LOWER = ("app.serving", "app.jobs", "app.observability", "app.metrics", "app.config",
         "app.security")  # fmt: skip
UPPER = ("app.bootstrap", "app.main", "app.__main__", "app.worker", "app.cluster", "app.api")


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in APP.rglob("*.py"):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text())
    return found


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _callers(attr_chain: str) -> set[str]:
    """Modules of app/ that call `attr_chain` (a name, or `Name.attr`)."""
    found = set()
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == attr_chain:
                found.add(module)
    return found


def test_the_lower_rooms_never_import_the_wiring() -> None:
    upward = sorted(
        f"{module} imports {dep}"
        for module, tree in _modules().items()
        if _under(module, LOWER)
        for dep in _imports(tree)
        if _under(dep, UPPER)
    )
    # app.observability.context -> app.api.deps is moved down by the `seam` part of issue 27
    assert [line for line in upward if not line.startswith("app.observability.context ")] == []


def test_each_part_is_built_in_one_place() -> None:
    assert _callers("AdapterStore") == {"app.config.views"}  # StoreView.open
    assert _callers("Engine.load") == {"app.bootstrap"}
    assert _callers("FastAPI") == {"app.api.factory"}


def test_the_backend_choice_is_made_once() -> None:
    readers = {
        module
        for module, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "redis_url"
        and ast.unparse(node.value) in ("settings", "s", "self.settings")
    }  # fmt: skip
    assert readers == {"app.config.views"}


@pytest.mark.parametrize(("url", "kind"), [(None, "sqlite"), ("redis://127.0.0.1:1/0", "redis")])
def test_the_backend_view(tmp_path: Path, url: str | None, kind: str) -> None:
    backend = BackendView.of(Settings(data_dir=tmp_path, redis_url=url))
    assert backend.kind == kind
    assert backend.sqlite_path("jobs") == tmp_path / "jobs.sqlite3"


def test_the_limiter_follows_the_backend(tmp_path: Path) -> None:
    local = build_limiter(LimiterView.of(Settings(data_dir=tmp_path), margin_s=30))
    assert isinstance(local, LocalLimiter)
    shared = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", request_timeout_s=5)
    view = LimiterView.of(shared, margin_s=30)
    assert view.lease_s == 35
    assert type(build_limiter(view)).__name__ == "RedisLimiter"


def test_views_are_frozen_copies_of_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, torch_threads=2, max_batch_size=7, keep_versions=4)
    assert EngineView.of(settings).torch_threads == 2
    assert BatchingView.of(settings).max_batch_size == 7
    store = StoreView.of(settings)
    assert (store.adapters_dir, store.keep_versions) == (tmp_path / "adapters", 4)
    with pytest.raises(AttributeError):
        store.keep_versions = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cores", "api_workers", "threads"), [(2, 2, 1), (2, 4, 1), (16, 4, 12), (8, 1, 7)]
)
def test_the_engine_process_leaves_the_api_processes_their_cores(cores, api_workers, threads):
    from app.config import engine_threads

    assert engine_threads(cores, api_workers) == threads
