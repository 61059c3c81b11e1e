"""Values on their way from a source to a target, changed only where a spec says so.

DESIGN invariant 9: a value arrives exactly, or its row is quarantined, never
changed. This package holds what that takes, database by database:

* :mod:`.types` describes each column as its database declares it (read from the
  catalog, not guessed from SQLAlchemy's generic types);
* :mod:`.ddl` says what a created target column becomes on each dialect, or why
  it cannot be carried and which option would carry it;
* :mod:`.casts` holds the one strict conversion into a target column's type,
  whose failure quarantines the row with its reason;
* :mod:`.encoders` turns a value into what each target dialect receives, the same
  for every load path;
* :mod:`.canonical` is the form verification compares, read back from both sides.
"""
