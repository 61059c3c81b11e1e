"""Environment variables a spec may name (``url_env`` and, later, every ``*_env`` field).

``BATON_ENV_ALLOWED`` lists names or globs (``CLOUD_*``), each optionally bound
to hosts (``CLOUD_DB_URL@db.example.com``): the value may then only be used for
an endpoint on one of those hosts. Unset, nothing may be read when auth is on
(an admin allows names first) and anything but ``BATON_*`` when auth is off
(loopback only). A ``BATON_*`` name is always refused: those hold Baton's own
state DB, broker and keys.

A refused name gets the same answer whether or not the variable is set, so
the API cannot be used to probe its own environment.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from etl_tasks.errors import BoundaryError

RESERVED_PREFIX = "BATON_"


@dataclass(frozen=True)
class EnvRule:
    pattern: str
    hosts: frozenset[str] = frozenset()  # empty: any host

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class EnvPolicy:
    """Which variables a spec may read; ``rules=None`` means any name but ``BATON_*``."""

    rules: tuple[EnvRule, ...] | None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @classmethod
    def parse(cls, text: str | None, *, auth_on: bool) -> EnvPolicy:
        if text is None or not text.strip():
            return cls(() if auth_on else None)
        by_pattern: dict[str, set[str]] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            pattern, _, host = item.partition("@")
            hosts = by_pattern.setdefault(pattern.strip(), set())
            if host:
                hosts.add(host.strip().lower())
        rules = tuple(EnvRule(p, frozenset(h)) for p, h in by_pattern.items())
        return cls(rules)

    def allowed(self, name: str) -> bool:
        """Whether ``name`` may be read at all (hosts are checked by :meth:`hosts_for`)."""
        if not name or name.upper().startswith(RESERVED_PREFIX):
            return False
        if self.rules is None:
            return True
        return any(rule.matches(name) for rule in self.rules)

    def hosts_for(self, name: str) -> frozenset[str] | None:
        """The hosts the value may be used with; ``None`` when any host will do."""
        if self.rules is None:
            return None
        hosts: set[str] = set()
        for rule in self.rules:
            if rule.matches(name):
                if not rule.hosts:
                    return None
                hosts |= rule.hosts
        return frozenset(hosts)

    def resolve(self, name: str, field: str = "url_env") -> str:
        """The variable's value; raises :class:`BoundaryError` with a message safe to show."""
        if not self.allowed(name):
            raise BoundaryError(
                f"environment variable {name} may not be used by a spec "
                "(BATON_ENV_ALLOWED does not allow it; BATON_* never is)",
                field,
            )
        value = self.environ.get(name)
        if not value:
            raise BoundaryError(f"environment variable {name} is not set", field)
        return value
