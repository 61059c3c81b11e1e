"""Verification as tasks: a migration's target compared with its source, range by range.

An operator (or a spec's ``"verify": true``) records a request (:mod:`.requests`);
a worker plans it over the key ranges of the migration's done chunks
(:mod:`.planning`); each range is compared by one ``baton.verify`` task
(:mod:`.step`) that claims it with a lease (:mod:`.lease`) and records its result
once (:mod:`.results`); :mod:`.progress` publishes ranges and settles the
verification; :mod:`.sweep` re-sends what the broker lost; :mod:`.report` is what
operators read. The comparison itself, in the canonical form of each target
column, is :mod:`etl_tasks.verify`, with its results in :mod:`.checks` and its
lookups by key in :mod:`.lookups`.
"""
