"""How every ``baton`` command that talks to the API ends: one table of exit codes.

A script tells apart what it can act on: wait longer (``TIMED_OUT``), fix the id
(``NOT_FOUND``, ``USAGE``), look at the migration (``FAILED``, ``INCOMPLETE``),
change the request or wait for another state (``REFUSED``), fix the connection
or the token (``UNAVAILABLE``). docs/operations.md ("Operating from the CLI")
lists them; a test keeps the two in step.
"""

from __future__ import annotations

OK = 0
#: It ended, but not wholly as asked: rows were quarantined (``submit``/``watch``
#: ``--strict``), a verification found differences, a worker was not drained.
INCOMPLETE = 1
#: Wrong usage (click's own code): an unknown option, or an id prefix that names
#: more than one migration.
USAGE = 2
#: The migration failed or was cancelled; a verification could not compare a range.
FAILED = 3
#: The ``--timeout`` passed before the migration (or verification) ended.
TIMED_OUT = 4
#: No such migration (no id starts with the prefix given), or nothing of the kind asked for.
NOT_FOUND = 5
#: The API refused the request: the migration's state does not allow it (409: resume a
#: running migration, verify one that has not succeeded), or the request is invalid
#: (400, 413, 415, 422: a spec that fails preflight).
REFUSED = 6
#: The API could not be reached, did not accept the token (401, 403, 429), or failed (5xx);
#: or a command that reads the state DB found none where it looked (it names the path).
UNAVAILABLE = 7
#: ``baton drain --local`` only: no BATON_PROBE_TOKEN here, or the probe refused it. It
#: predates this table; preStop hooks already test for it, so it keeps its value.
PROBE_REFUSED = 3

#: The exit code of an answer the API refused, by HTTP status.
OF_STATUS = {404: NOT_FOUND, 409: REFUSED, 400: REFUSED, 413: REFUSED, 415: REFUSED, 422: REFUSED}

#: The exit code of a migration that ended (``submit --wait``, ``watch``).
OF_MIGRATION_STATE = {"succeeded": OK, "failed": FAILED, "cancelled": FAILED}


def of_status(status: int) -> int:
    """The exit code of an HTTP error answer."""
    return OF_STATUS.get(status, UNAVAILABLE)
