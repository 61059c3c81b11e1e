"""The transform registry: built-ins plus plugins from the ``baton.transforms`` entry points.

A spec names transforms by string, so every name a spec may use must resolve here, both
at submit time (to refuse a bad spec early) and in the worker (to apply it). Plugins are
loaded lazily and once, so importing Baton never pays for, or breaks on, a plugin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from typing import Any, TypeVar, overload

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "baton.transforms"

ApplyFn = Callable[[Any, Mapping[str, Any]], Any]
CheckFn = Callable[[Mapping[str, Any]], list[str]]
F = TypeVar("F", bound=Callable[..., Any])


def accept_any_args(args: Mapping[str, Any]) -> list[str]:
    """The checker for transforms that declare none: nothing can be verified up front."""
    return []


@dataclass(frozen=True)
class Transform:
    """A named pure function ``apply(value, args)``, with a checker for its args.

    ``apply`` raises :class:`~etl_tasks.errors.BadRowError` for a value it cannot convert;
    ``check_args`` returns human-readable problems with ``args`` (empty when they are fine),
    so a bad spec is refused before any row is read.
    """

    name: str
    apply: ApplyFn
    check_args: CheckFn = accept_any_args


_transforms: dict[str, Transform] = {}
_plugins_loaded = False
_lock = threading.RLock()


@overload
def register(name: str, apply: ApplyFn, check_args: CheckFn | None = None) -> Transform: ...


@overload
def register(
    name: str, apply: None = None, check_args: CheckFn | None = None
) -> Callable[[F], F]: ...


def register(
    name: str, apply: ApplyFn | None = None, check_args: CheckFn | None = None
) -> Transform | Callable[[F], F]:
    """Register ``apply`` under ``name`` (a later registration replaces an earlier one).

    Without ``apply`` it is a decorator: ``@register("name", check_args=...)``, which
    returns the function unchanged so it stays directly callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a transform name must be a non-empty string")
    if apply is None:

        def decorator(fn: F) -> F:
            register(name, fn, check_args)
            return fn

        return decorator
    transform = Transform(name, apply, check_args or accept_any_args)
    with _lock:
        _transforms[name] = transform
    return transform


def get_transform(name: str) -> Transform:
    """The transform registered as ``name``; raises :class:`KeyError` if there is none."""
    _ensure_plugins()
    try:
        return _transforms[name]
    except KeyError:
        raise KeyError(name) from None


def known_transforms() -> list[str]:
    """Every registered name, sorted (for error messages and the API)."""
    _ensure_plugins()
    return sorted(_transforms)


def check_transform(name: str, args: Mapping[str, Any]) -> list[str]:
    """Problems with using transform ``name`` with ``args``; empty when it is fine."""
    try:
        transform = get_transform(name)
    except KeyError:
        return [f"unknown transform {name!r}; known: {', '.join(known_transforms())}"]
    try:
        return list(transform.check_args(args))
    except Exception as exc:  # a buggy plugin checker must not crash validation
        return [f"checking the args of {name!r} failed: {exc}"]


def _ensure_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True  # set first: a plugin may itself call into the registry
        _load_plugins()


def _load_plugins() -> None:
    try:
        eps = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:
        log.warning("cannot list %s entry points: %s", ENTRY_POINT_GROUP, exc)
        return
    for ep in eps:
        try:
            loaded = ep.load()
        except Exception as exc:
            log.warning("skipping transform plugin %r (%s): %s", ep.name, ep.value, exc)
            continue
        _register_plugin(ep.name, ep.value, loaded)


def _register_plugin(name: str, origin: str, loaded: object) -> None:
    if name in _transforms:
        log.warning("skipping transform plugin %r (%s): name already registered", name, origin)
    elif isinstance(loaded, Transform):
        _transforms[name] = replace(loaded, name=name)
    elif callable(loaded):
        _transforms[name] = Transform(name, loaded)
    else:
        log.warning("skipping transform plugin %r (%s): not callable", name, origin)
