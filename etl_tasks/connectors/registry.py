"""Connectors by endpoint kind, as transforms are found by name.

A spec's endpoint object names its kind by its form: ``{"url": …}`` or
``{"url_env": …}`` is SQL, ``{"http": …}`` and ``{"file": …}`` name theirs
(:func:`etl_tasks.spec.endpoint_kind`). Built-in connectors register here;
third-party ones through the ``baton.connectors`` entry-point group, whose
objects are :class:`Connector` values (the entry point's name is the kind).

A worker advertises the kinds it has (its registry row's capabilities), so a
migration whose kind no live worker supports waits, saying so, instead of
failing on an older worker (:func:`etl_tasks.views.migration_view`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from etl_tasks.connectors.base import Source, Target
from etl_tasks.errors import PermanentError, Unsupported

if TYPE_CHECKING:
    from etl_tasks.runtime import Runtime

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "baton.connectors"

#: Builds one stream's source or target of one migration, from the worker's runtime.
SourceFactory = Callable[["Runtime", str, str], Source]
TargetFactory = Callable[["Runtime", str, str], Target]


@dataclass(frozen=True)
class Connector:
    """One endpoint kind: how to build its source and its target (either may be missing)."""

    kind: str
    source: SourceFactory | None = None
    target: TargetFactory | None = None


_connectors: dict[str, Connector] = {}
_lock = threading.Lock()
_plugins_loaded = False


def register(connector: Connector) -> None:
    """Make a kind available in this process (built-ins at import, plugins when first asked)."""
    with _lock:
        _connectors[connector.kind] = connector


def connector(kind: str) -> Connector:
    """The connector for ``kind``; a kind this worker lacks waits for a worker that has it
    (the API accepted it, so some version of Baton has it)."""
    _ensure_plugins()
    found = _connectors.get(kind)
    if found is None:
        raise Unsupported(f"this worker has no connector for {kind} endpoints")
    return found


def source_factory(kind: str) -> SourceFactory:
    factory = connector(kind).source
    if factory is None:
        raise PermanentError(f"{kind} endpoints cannot be a source")
    return factory


def target_factory(kind: str) -> TargetFactory:
    factory = connector(kind).target
    if factory is None:
        raise PermanentError(f"{kind} endpoints cannot be a target")
    return factory


def kinds() -> dict[str, list[str]]:
    """What this process can do: ``{"sources": [...], "targets": [...]}``, sorted."""
    _ensure_plugins()
    with _lock:
        known = list(_connectors.values())
    return {
        "sources": sorted(c.kind for c in known if c.source is not None),
        "targets": sorted(c.kind for c in known if c.target is not None),
    }


def _ensure_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _register_builtins()
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
    _load_plugins()


def _register_builtins() -> None:
    """The kinds a spec can name. The memory connector is not one: a test registers
    :func:`etl_tasks.connectors.memory.connector` over databases of its own."""
    from etl_tasks.connectors.files import factory as files
    from etl_tasks.connectors.http import factory as http
    from etl_tasks.connectors.sql import factory as sql

    if "sql" not in _connectors:
        register(Connector("sql", sql.source, sql.target))
    if "file" not in _connectors:
        register(Connector("file", files.source))  # exported files are only ever read
    if "http" not in _connectors:
        register(Connector("http", None, http.target))


def _load_plugins() -> None:
    try:
        eps = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # a broken installation must not stop the built-ins
        log.warning("cannot list %s entry points: %s", ENTRY_POINT_GROUP, exc)
        return
    for ep in eps:
        try:
            loaded = ep.load()
        except Exception as exc:
            log.warning("skipping connector plugin %r (%s): %s", ep.name, ep.value, exc)
            continue
        if not isinstance(loaded, Connector):
            log.warning("skipping connector plugin %r (%s): not a Connector", ep.name, ep.value)
        elif ep.name in _connectors:
            log.warning("skipping connector plugin %r: kind already registered", ep.name)
        else:
            register(Connector(ep.name, loaded.source, loaded.target))
