"""A chained step takes its chunk's rows from memory (etl_tasks/staging.held_rows): the
rows the step before it produced, as decoding its staged blob would give them. The blob
reaches Redis only when the step it feeds runs elsewhere or later (a drain, a wait, a
failure); the rows never outlive the task."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from etl_tasks import codec
from etl_tasks.constants import TASK_EXTRACT
from etl_tasks.errors import TransientError
from etl_tasks.settings import Settings
from etl_tasks.staging import StagingStore
from etl_tasks.steps import common as common_module
from etl_tasks.steps import load as load_module
from etl_tasks.steps import transform as transform_module
from tests.checks import assert_migrated
from tests.faults import expire_leases
from tests.harness import Driver
from tests.integration.fidelity_support import migrate, one_stream, pg_exec, reasons, sqlite_db

ROWS = 240
AWKWARD = """CREATE TABLE "A" (
    id INTEGER PRIMARY KEY, amount NUMERIC(30, 10), price REAL, at DATETIME, born DATE,
    data BLOB, doc JSON, note TEXT, big INTEGER, ok BOOLEAN)"""


def _row(i: int) -> tuple[Any, ...]:
    """Values of every awkward kind, NULLs among them; every 60th row's ``big`` is text."""
    n = i % 6
    return (
        i,
        ["12345678901234567890.0123456789", "-0.0000000001", "0", None, "1.5", "-7"][n],
        [-0.0, 0.1, 1e308, 5e-324, None, -2.5][n],
        ["2024-01-02 03:04:05.123456", "1999-12-31 23:59:59", None, "2024-02-29 00:00:00"][i % 4],
        ["2024-02-29", "0001-01-01", None][i % 3],
        [b"\x00\xff\n", b"", None, bytes(range(256))][i % 4],
        ['{"a": [1, 2.5, null], "b": "\u00e9"}', "[]", None, '{"n": 1e400}'][i % 4],
        ["", "h\u00e9llo \u2603 \U0001d11e", None, 'tab\t"q"\\'][i % 4],
        "not a number" if i % 60 == 0 else [2**62, -(2**63), None, 0][i % 4],
        [0, 1, None][i % 3],
    )


@pytest.fixture
def source(tmp_path: Path) -> str:
    return sqlite_db(tmp_path / "awkward.db", AWKWARD, {"A": [_row(i) for i in range(1, ROWS + 1)]})


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many staged blobs were decoded (the real decoder runs)."""
    calls: list[int] = []
    real = codec.decode_rows

    def counting(blob: bytes) -> codec.Staged:
        calls.append(len(blob))
        return real(blob)

    monkeypatch.setattr(codec, "decode_rows", counting)
    return calls


def _spec(source: str, target: str) -> dict[str, Any]:
    spec = one_stream(source, target, source_table="A", target_table="a", chunk_rows=100)
    return {**spec, "max_bad_rows": 1000}


def _target(url: str) -> list[tuple[Any, ...]]:
    rows = pg_exec(url, "SELECT * FROM a ORDER BY id")
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]


@pytest.fixture
def owned() -> Iterator[Callable[[Driver], Driver]]:
    """Closes every driver the test hands it, however the test ends."""
    drivers: list[Driver] = []

    def own(driver: Driver) -> Driver:
        drivers.append(driver)
        return driver

    yield own
    for driver in drivers:
        driver.close()


def _run(
    settings: Settings, spec: dict[str, Any], own: Callable[[Driver], Driver], *, chain: bool
) -> tuple[str, Driver]:
    driver = own(Driver(settings, f"w-{chain}", chain=chain))
    mid, view = migrate(driver, spec)
    assert view["state"] == "succeeded", view
    return mid, driver


def test_a_chained_chunk_is_loaded_from_the_rows_in_memory_as_an_unchained_one_decodes_them(
    make_settings: Callable[..., Settings],
    source: str,
    pg_url_factory: Callable[[], str],
    decodes: list[int],
    monkeypatch: pytest.MonkeyPatch,
    owned: Callable[[Driver], Driver],
) -> None:
    settings = make_settings()
    # Given the same awkward table migrated once with every step a message (each decodes)
    plain_url = pg_url_factory()
    plain_mid, plain = _run(settings, _spec(source, plain_url), owned, chain=False)
    assert decodes, "an unchained step reads its rows from Redis"
    # When it is migrated again with chained steps, recording what the transform kept
    # and what each load was given
    kept: list[object] = []
    loaded: list[object] = []
    real_write = load_module.write_chunk

    def recording(tx: Any, token: int, job: load_module.Job) -> Any:
        loaded.append(job.batch.rows)
        return real_write(tx, token, job)

    monkeypatch.setattr(load_module, "write_chunk", recording)
    decodes.clear()
    chained_url = pg_url_factory()
    chained = owned(Driver(settings, "w-chained", chain=True))
    put = chained.rt.staging.put

    def keeping(
        chunk_id: int, token: int, kind: str, blob: bytes, rows: Any = None, **kw: Any
    ) -> None:
        if kind == "transformed":
            kept.append(rows[1])
        put(chunk_id, token, kind, blob, rows, **kw)

    chained.rt.staging.put = keeping  # type: ignore[method-assign]
    mid, view = migrate(chained, _spec(source, chained_url))
    # Then no step decoded a blob: each load wrote the very rows its transform produced
    assert view["state"] == "succeeded", view
    assert decodes == []
    assert loaded and len(loaded) == len(kept)
    assert all(a is b for a, b in zip(loaded, kept, strict=True))
    # and the target and the quarantine are those of the unchained run, value for value
    assert _target(chained_url) == _target(plain_url)
    assert reasons(chained, mid) == reasons(plain, plain_mid)
    assert len(reasons(chained, mid)) == ROWS // 60
    assert_migrated(chained.rt.db, mid, _spec(source, chained_url))


def test_a_transform_retried_on_another_worker_decodes_the_chained_extract_from_redis(
    make_settings: Callable[..., Settings],
    source: str,
    pg_url_factory: Callable[[], str],
    decodes: list[int],
    monkeypatch: pytest.MonkeyPatch,
    owned: Callable[[Driver], Driver],
) -> None:
    settings = make_settings()
    reference_url = pg_url_factory()
    _run(settings, _spec(source, reference_url), owned, chain=False)
    # Given worker A's chained transform fails once, after its extract staged the rows
    failures: list[int] = []
    real = transform_module._mapped

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise TransientError("the worker is about to be replaced")
        return real(*args, **kwargs)

    monkeypatch.setattr(transform_module, "_mapped", flaky)
    target = pg_url_factory()
    a = owned(Driver(settings, "worker-a", chain=True))
    mid = _submit_one_extract(a, _spec(source, target))
    assert failures == [1]
    assert a.rt.staging.held_rows(*_staged(a, mid)) is None  # A's task ended
    # When worker B retries the transform (and all the rest), expired leases and all
    # Then B decoded the extract's blob from Redis, and the target is the reference
    _carried_on_elsewhere(settings, owned, monkeypatch, decodes, mid, source, target, reference_url)


def _submit_one_extract(driver: Driver, spec: dict[str, Any]) -> str:
    """Submit; deliver messages on ``driver`` until one extract (and its chain) has run."""
    from tests.data import submit

    mid = submit(driver.rt.db, driver.publisher, spec)
    while driver.publisher.queue:
        task, kwargs = driver.publisher.queue.popleft()
        driver.deliver(task, kwargs)
        if task == TASK_EXTRACT:
            return mid
    raise AssertionError("no extract was sent")


def _staged(driver: Driver, mid: str) -> tuple[int, int, str]:
    """The key of the rows staged for the one chunk waiting for its transform."""
    from sqlalchemy import select

    from etl_tasks.state.models import Chunk

    with driver.rt.db.reading() as s:
        chunk = s.scalars(
            select(Chunk).where(Chunk.migration_id == mid, Chunk.step == "transform")
        ).one()
    assert chunk.stage_token is not None
    return chunk.id, chunk.stage_token, "extracted"


@pytest.fixture
def store(make_settings: Callable[..., Settings]) -> Iterator[StagingStore]:
    settings = make_settings()
    s = StagingStore(settings.effective_staging_url, settings.key_prefix, 60)
    yield s
    s.close()


def test_held_rows_are_only_those_of_the_same_chunk_token_and_kind(store: StagingStore) -> None:
    # Given rows staged for chunk 1 under token 3 with the rows kept
    blob, rows = codec.encode_rows_kept(["id"], [(1,), (2,)])
    store.put(1, 3, "extracted", blob, rows)
    assert store.held_rows(1, 3, "extracted") is rows
    # Then no other chunk, token or kind sees them, nor another thread
    assert store.held_rows(2, 3, "extracted") is None
    assert store.held_rows(1, 4, "extracted") is None
    assert store.held_rows(1, 3, "transformed") is None
    seen: list[object] = []
    other = threading.Thread(target=lambda: seen.append(store.held_rows(1, 3, "extracted")))
    other.start()
    other.join()
    assert seen == [None]
    # When another chunk is staged on this thread, the first chunk's rows are gone
    store.put(2, 3, "extracted", blob, rows)
    assert store.held_rows(1, 3, "extracted") is None
    # and when the task ends, nothing is held; Redis still has the blob
    store.drop_held()
    assert store.held_rows(2, 3, "extracted") is None
    assert store.get(2, 3, "extracted") == blob
    # A put without rows (a pass-through chunk) holds none; a delete drops what is held
    store.put(5, 1, "transformed", blob)
    assert store.held_rows(5, 1, "transformed") is None
    store.put(6, 1, "transformed", blob, rows)
    store.delete(6, 1, "transformed")
    assert store.held_rows(6, 1, "transformed") is None


def test_nothing_is_held_once_a_chained_task_has_ended(
    make_settings: Callable[..., Settings], source: str, pg_url: str
) -> None:
    # Given a chained run that records every key it staged rows under
    driver = Driver(make_settings(), "w", chain=True)
    put = driver.rt.staging.put
    keys: list[tuple[int, int, str]] = []

    def recording(
        chunk_id: int, token: int, kind: str, blob: bytes, rows: Any = None, **kw: Any
    ) -> None:
        put(chunk_id, token, kind, blob, rows, **kw)
        keys.append((chunk_id, token, kind))
        assert driver.rt.staging.held_rows(chunk_id, token, kind) is rows

    driver.rt.staging.put = recording  # type: ignore[method-assign]
    try:
        mid = _submit_one_extract(driver, _spec(source, pg_url))
        # Then after the task, no chunk's rows are held for the next task on this thread
        assert keys
        assert all(driver.rt.staging.held_rows(*k) is None for k in keys)
        assert driver.run_to_end(mid) == "succeeded"
        assert all(driver.rt.staging.held_rows(*k) is None for k in keys)
    finally:
        driver.close()


def test_with_chaining_off_no_rows_are_kept_beside_the_blob(
    make_settings: Callable[..., Settings], source: str, pg_url: str
) -> None:
    # Given a worker whose every step is a message (no step runs on the thread after it)
    driver = Driver(make_settings(chain_steps=False), "w", chain=True)
    put = driver.rt.staging.put
    kept: list[object] = []

    def recording(
        chunk_id: int, token: int, kind: str, blob: bytes, rows: Any = None, **kw: Any
    ) -> None:
        kept.append(rows)
        put(chunk_id, token, kind, blob, rows, **kw)

    driver.rt.staging.put = recording  # type: ignore[method-assign]
    try:
        _, view = migrate(driver, _spec(source, pg_url))
        # Then the blobs were staged and no step spent time keeping rows for another
        assert view["state"] == "succeeded", view
        assert kept and all(rows is None for rows in kept)
    finally:
        driver.close()


def test_held_only_blobs_reach_redis_when_the_step_they_feed_will_not_run_here(
    store: StagingStore,
) -> None:
    blob, rows = codec.encode_rows_kept(["id"], [(1,), (2,)])
    # Given a blob staged for a step this thread means to run next
    store.put(7, 1, "extracted", blob, rows, held_only=True)
    # Then this thread reads it from memory, and Redis has none of it
    assert store.get(7, 1, "extracted") == blob
    assert store.client.exists(_stage_key(store, 7, 1, "extracted")) == 0
    # When the step's output replaces it and the step commits, deleting its input asks
    # Redis nothing; the output reaches Redis when the task ends before its step ran
    store.put(7, 2, "transformed", blob, rows, held_only=True)
    deletes: list[object] = []
    real_delete = store.client.delete
    store.client.delete = lambda *keys: deletes.append(keys) or real_delete(*keys)  # type: ignore[method-assign]
    store.delete(7, 1, "extracted")
    assert deletes == []
    store.drop_held()
    assert store.get(7, 2, "transformed") == blob
    # and write_held writes once: a step about to be handed on
    store.put(8, 1, "extracted", blob, held_only=True)
    store.write_held()
    store.write_held()
    assert store.client.exists(_stage_key(store, 8, 1, "extracted")) == 1


def _stage_key(store: StagingStore, chunk_id: int, token: int, kind: str) -> str:
    return store._key(chunk_id, token, kind)


@pytest.fixture
def stage_writes(monkeypatch: pytest.MonkeyPatch) -> Callable[[Driver], list[str]]:
    """The staged-row keys a driver's Redis client is asked to write."""

    def watch(driver: Driver) -> list[str]:
        written: list[str] = []
        client = driver.rt.staging.client
        real_set = client.set

        def counting(name: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            if ":stage:" in str(name):
                written.append(str(name))
            return real_set(name, value, *args, **kwargs)

        monkeypatch.setattr(client, "set", counting)
        return written

    return watch


def test_a_chained_chunk_stages_nothing_in_redis(
    make_settings: Callable[..., Settings],
    source: str,
    pg_url_factory: Callable[[], str],
    owned: Callable[[Driver], Driver],
    stage_writes: Callable[[Driver], list[str]],
) -> None:
    # Given the same migration on a chained worker and on one whose steps go by message
    plain_url, chained_url = pg_url_factory(), pg_url_factory()
    settings = make_settings()
    plain = owned(Driver(settings, "w-plain", chain=False))
    chained = owned(Driver(settings, "w-chained", chain=True))
    by_message, in_memory = stage_writes(plain), stage_writes(chained)
    _, plain_view = migrate(plain, _spec(source, plain_url))
    mid, view = migrate(chained, _spec(source, chained_url))
    # Then steps sent by message staged their rows in Redis, and chained steps never did,
    # with the same rows in the target
    assert plain_view["state"] == view["state"] == "succeeded", view
    assert len(by_message) >= 2 * plain_view["chunks_done"]
    assert in_memory == []
    assert _target(chained_url) == _target(plain_url)
    assert_migrated(chained.rt.db, mid, _spec(source, chained_url))


def test_a_draining_worker_stages_the_input_of_the_step_it_hands_on(
    make_settings: Callable[..., Settings],
    source: str,
    pg_url_factory: Callable[[], str],
    decodes: list[int],
    monkeypatch: pytest.MonkeyPatch,
    owned: Callable[[Driver], Driver],
) -> None:
    settings = make_settings()
    reference_url, target = pg_url_factory(), pg_url_factory()
    _run(settings, _spec(source, reference_url), owned, chain=False)
    # Given a chained worker that starts draining while its extract runs
    a = owned(Driver(settings, "worker-a", chain=True))
    with monkeypatch.context() as draining:
        draining.setattr(common_module, "may_start_step", lambda: False)
        mid = _submit_one_extract(a, _spec(source, target))
    # Then the extract's rows are in Redis for the transform it handed on
    key = _staged(a, mid)
    assert a.rt.staging.held_rows(*key) is None  # A's task ended
    assert a.rt.staging.client.exists(_stage_key(a.rt.staging, *key)) == 1
    # and another worker carries on from them without reading the chunk again
    extracted = _carried_on_elsewhere(
        settings, owned, monkeypatch, decodes, mid, source, target, reference_url
    )
    assert extracted and key[0] not in extracted


def _carried_on_elsewhere(
    settings: Settings,
    owned: Callable[[Driver], Driver],
    monkeypatch: pytest.MonkeyPatch,
    decodes: list[int],
    mid: str,
    source: str,
    target: str,
    reference_url: str,
) -> list[int]:
    """Worker B takes the migration over (A's leases expired) and runs it to its end: it
    decoded staged rows from Redis, and the target holds what the reference run loaded.
    Returns the chunks B extracted."""
    b = owned(Driver(settings, "worker-b", chain=True))
    expire_leases(b.rt.db)
    decodes.clear()
    extracted = _extracted_chunks(monkeypatch)
    assert b.run_to_end(mid) == "succeeded"
    assert decodes, "B read the staged rows from Redis"
    assert _target(target) == _target(reference_url)
    assert_migrated(b.rt.db, mid, _spec(source, target))
    return extracted


def _extracted_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The chunks extracted from now on."""
    from etl_tasks.steps import extract as extract_module

    chunks: list[int] = []
    real = extract_module.extract_claimed

    def recording(rt: Any, c: Any) -> None:
        chunks.append(c.chunk_id)
        real(rt, c)

    monkeypatch.setattr(extract_module, "extract_claimed", recording)
    return chunks
