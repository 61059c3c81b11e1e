"""Verification as tasks: a migration's target compared with its source, range by range.

A verification (:class:`~etl_tasks.state.models.Verification`) is planned over
the key ranges of its migration's done chunks (:mod:`.planning`); each range is
compared by one ``baton.verify`` task (:mod:`.step`) that claims it with a lease
(:mod:`.lease`) and records its result once. :mod:`.progress` publishes ranges and
settles the verification; :mod:`.sweep` re-sends what the broker lost;
:mod:`.report` is what operators read. The comparison itself, in the canonical
form of each target column, is :mod:`etl_tasks.verify`.
"""
