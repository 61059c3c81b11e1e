"""Column transforms: the registry, the built-ins and the row mapper built from a spec.

Importing this package registers the built-in transforms; plugins from the
``baton.transforms`` entry-point group are loaded on first lookup.
"""

from __future__ import annotations

# Imported for its side effect: registering the built-in transforms.
from etl_tasks.transforms import builtin as _builtin  # noqa: F401
from etl_tasks.transforms.mapper import RowMapper, compile_mapper, mapper_problems
from etl_tasks.transforms.registry import (
    Transform,
    check_transform,
    get_transform,
    known_transforms,
    register,
)

__all__ = [
    "RowMapper",
    "Transform",
    "check_transform",
    "compile_mapper",
    "get_transform",
    "known_transforms",
    "mapper_problems",
    "register",
]
