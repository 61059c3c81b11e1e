"""Migrations through real workers with RabbitMQ as the Celery broker (staging stays on Redis).

Each test gets a RabbitMQ vhost of its own (``baton-test-<hex>``), made and deleted
with ``rabbitmqctl``, and its own Redis key prefix for the staged rows. Locally a
missing RabbitMQ (or ``rabbitmqctl``) skips these tests; with ``CI=true`` it fails them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from etl_tasks.constants import QUEUES_IN_PRIORITY_ORDER, STEPS
from etl_tasks.publisher import publish_step
from etl_tasks.settings import Settings
from tests import services
from tests.e2e import scenarios
from tests.e2e.conftest import Cluster
from tests.harness import wait_for
from worker.celery_app import CeleryPublisher, celery_config, create_celery

#: Where RabbitMQ listens; the vhost part is replaced by each test's own vhost.
RABBITMQ_URL = os.environ.get("BATON_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

slow = pytest.mark.slow


# --- fixtures ------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=120, check=False)


def _rabbitmq_answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this test's own; yields the broker URL pointing at it."""
    url = urlsplit(RABBITMQ_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 5672
    if shutil.which("rabbitmqctl") is None:
        services.unavailable("rabbitmqctl")
    if not _rabbitmq_answers(host, port):
        services.unavailable(f"RabbitMQ at {host}:{port}")
    vhost = f"baton-test-{uuid.uuid4().hex[:10]}"
    made = _rabbitmqctl("add_vhost", vhost)
    if made.returncode != 0:
        services.unavailable(f"rabbitmqctl add_vhost ({(made.stderr or made.stdout).strip()})")
    try:
        user = url.username or "guest"
        perms = _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        assert perms.returncode == 0, perms.stderr or perms.stdout
        yield url._replace(path=f"/{vhost}").geturl()
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def rabbit_cluster(
    rabbitmq_vhost: str,
    redis_server: str,
    make_settings: Callable[..., Settings],
    cluster_factory: Callable[[Settings], Cluster],
) -> Callable[..., Cluster]:
    """Real workers with RabbitMQ as broker and Redis (this test's key prefix) as staging.

    The vhost fixture is set up before the cluster factory, so the workers are gone
    before the vhost is deleted.
    """

    def make(**overrides: Any) -> Cluster:
        settings = make_settings(broker_url=rabbitmq_vhost, staging_url=redis_server, **overrides)
        return cluster_factory(settings)

    return make


def _vhost(cluster: Cluster) -> str:
    return urlsplit(cluster.settings.broker_url).path.lstrip("/")


def _baton_queues(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Baton's queues in the test's vhost as RabbitMQ reports them (name → type, durable)."""
    listed = _rabbitmqctl(
        "list_queues", "-p", _vhost(cluster), "name", "type", "durable", "--formatter", "json"
    )
    assert listed.returncode == 0, listed.stderr or listed.stdout
    rows = json.loads(listed.stdout)
    return {row["name"]: row for row in rows if row["name"] in QUEUES_IN_PRIORITY_ORDER}


# --- configuration (no broker needed) ------------------------------------------------------


@pytest.mark.parametrize("quorum", [False, True])
def test_amqp_config_declares_durable_queues_without_redis_options(quorum: bool) -> None:
    settings = Settings(
        broker_url="amqp://guest:guest@127.0.0.1:5672/x",
        staging_url="redis://127.0.0.1:6379/0",
        quorum_queues=quorum,
    )
    conf = celery_config(settings)
    assert conf["broker_transport_options"] == {"confirm_publish": True}
    assert conf["task_acks_late"] is True and conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_detect_quorum_queues"] is True
    queues = conf["task_queues"]
    assert [q.name for q in queues] == list(QUEUES_IN_PRIORITY_ORDER)
    for q in queues:
        assert q.durable and not q.exclusive and not q.auto_delete, q
        assert q.routing_key == q.name and q.exchange.name == q.name, q
        expected = {"x-queue-type": "quorum"} if quorum else None
        assert q.queue_arguments == expected, q


def test_redis_config_keeps_its_transport_options() -> None:
    conf = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0", key_prefix="p:"))
    options = conf["broker_transport_options"]
    assert options["queue_order_strategy"] == "priority" and options["global_keyprefix"] == "p:"
    assert "confirm_publish" not in options
    assert "worker_detect_quorum_queues" not in conf


# --- publisher confirms (a broker, no workers) ----------------------------------------------


def test_a_publish_rabbitmq_refuses_raises_and_is_logged(
    rabbitmq_vhost: str, redis_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_celery(Settings(broker_url=rabbitmq_vhost, staging_url=redis_server))
    try:
        publisher = CeleryPublisher(app)
        publish_step(publisher, "load", 1)  # declares the queue; RabbitMQ takes the message
        # Given a queue that refuses every new message (a full queue with reject-publish)
        vhost = urlsplit(rabbitmq_vhost).path.lstrip("/")
        full = '{"max-length": 0, "overflow": "reject-publish"}'
        made = _rabbitmqctl("set_policy", "-p", vhost, "full", "^baton\\.", full)
        assert made.returncode == 0, made.stderr or made.stdout

        def policy_applied() -> bool:
            out = _rabbitmqctl("list_queues", "-p", vhost, "name", "policy", "-q").stdout
            return f"{STEPS['load'].queue}\tfull" in out

        wait_for(policy_applied, 30, 0.2, "the policy")
        # When a step is published into it
        with caplog.at_level(logging.WARNING, logger="worker.celery_app"):
            publish_step(publisher, "load", 2)
        # Then RabbitMQ's nack reached the publisher, which logged it (the sweeper re-sends)
        assert "could not publish baton.load: OperationalError <- MessageNacked" in caplog.text
    finally:
        app.close()


# --- real workers --------------------------------------------------------------------------


@slow
def test_sqlite_to_postgres_over_rabbitmq(
    rabbit_cluster: Callable[..., Cluster], tmp_path: Path, pg_url: str
) -> None:
    cluster = rabbit_cluster()
    scenarios.migrate_with_two_workers(cluster, tmp_path, pg_url)
    queues = _baton_queues(cluster)
    assert sorted(queues) == sorted(QUEUES_IN_PRIORITY_ORDER), queues
    assert all(q["type"] == "classic" and q["durable"] for q in queues.values()), queues


@slow
def test_sqlite_to_postgres_over_quorum_queues(
    rabbit_cluster: Callable[..., Cluster], tmp_path: Path, pg_url: str
) -> None:
    cluster = rabbit_cluster(quorum_queues=True)
    scenarios.migrate_with_two_workers(cluster, tmp_path, pg_url)
    queues = _baton_queues(cluster)
    assert sorted(queues) == sorted(QUEUES_IN_PRIORITY_ORDER), queues
    assert all(q["type"] == "quorum" and q["durable"] for q in queues.values()), queues
    # Celery noticed them: quorum queues have no global QoS, so prefetch is per consumer
    assert all("Global QoS is disabled" in w.log_path.read_text() for w in cluster.workers)


@slow
@pytest.mark.chaos  # the same fault over Redis runs in make test (test_real_workers.py)
@pytest.mark.parametrize("quorum", [False, True], ids=["classic", "quorum"])
def test_sigkill_in_the_middle_of_a_load(
    rabbit_cluster: Callable[..., Cluster],
    tmp_path: Path,
    pg_url_factory: Callable[[], str],
    quorum: bool,
) -> None:
    cluster = rabbit_cluster(database_url=pg_url_factory(), quorum_queues=quorum)
    scenarios.sigkill_in_the_middle_of_a_load(cluster, tmp_path, pg_url_factory())


@slow
@pytest.mark.chaos  # the same fault over Redis runs in make test (test_real_workers.py)
@pytest.mark.parametrize("quorum", [False, True], ids=["classic", "quorum"])
def test_sigterm_finishes_the_step_in_hand_and_exits_0(
    rabbit_cluster: Callable[..., Cluster],
    tmp_path: Path,
    pg_url_factory: Callable[[], str],
    quorum: bool,
) -> None:
    cluster = rabbit_cluster(quorum_queues=quorum)
    scenarios.sigterm_finishes_the_step_in_hand(cluster, tmp_path, pg_url_factory())
