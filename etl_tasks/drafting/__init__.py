"""Specs that write themselves: a complete spec drafted from a source's schema.

``baton spec init`` and ``POST /api/v1/specs/draft`` read the source's base
tables, keys and foreign keys (and the target's, when given) and draft a spec
ready to submit: a stream per table, keys, ``create_target`` for tables the
target lacks, ``"as"`` for the columns the target dialect has no counterpart
for (with a comment saying so), and ``after`` from the foreign keys.
"""
