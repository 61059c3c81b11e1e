"""Baton's domain: specs, planning, the three steps, connectors, transforms, the state store."""

from __future__ import annotations

__version__ = "0.1.0"
