"""The pipeline is declared once (``constants.PIPELINE``); everything about the steps follows."""

from __future__ import annotations

from itertools import pairwise

from etl_tasks.constants import PIPELINE, QUEUE_KINDS, STEPS, next_step
from etl_tasks.settings import Settings
from etl_tasks.state.enums import Step
from etl_tasks.state.models import Chunk


def test_each_step_reads_what_the_one_before_it_wrote() -> None:
    assert PIPELINE[0].reads is None and PIPELINE[-1].writes is None
    for before, after in pairwise(PIPELINE):
        assert before.writes is not None and after.reads == before.writes


def test_the_step_enum_and_its_order_follow_the_pipeline() -> None:
    assert [s.value for s in Step] == [s.name for s in PIPELINE]
    chain, step = [], Step(PIPELINE[0].name)
    while step is not None:
        chain.append(step.value)
        step = step.next  # type: ignore[assignment]
    assert chain == [s.name for s in PIPELINE]
    assert next_step(PIPELINE[-1].name) is None


def test_queues_put_later_steps_first_so_started_chunks_finish_first() -> None:
    steps = [kind for kind in QUEUE_KINDS if kind in STEPS]
    assert steps == [s.name for s in reversed(PIPELINE)]
    assert QUEUE_KINDS[0] == "control" and QUEUE_KINDS[-1] == "verify"


def test_every_step_has_a_shim_under_its_wire_name_and_a_route_to_its_queue() -> None:
    from etl_tasks import tasks
    from worker.celery_app import celery_config

    routes = celery_config(Settings())["task_routes"]
    for step in PIPELINE:
        assert tasks.STEP_TASKS[step.name].name == step.task
        assert routes[step.task] == {"queue": step.queue}


def test_timings_read_the_json_and_the_columns_older_versions_wrote() -> None:
    # A chunk an older worker extracted (its column only), then loaded by this version.
    chunk = Chunk(extract_ms=12, timings=None)
    chunk.record_timing("load", 30)
    assert chunk.step_timings() == {"extract": 12, "load": 30}
    assert chunk.load_ms == 30  # still written, for the older versions that read it
    # Where both are set, the JSON wins (it is what this version wrote last).
    assert Chunk(transform_ms=1, timings={"transform": 2}).step_timings() == {"transform": 2}


def test_a_kind_without_a_connector_waits_rather_than_fails() -> None:
    import pytest

    from etl_tasks.connectors import registry
    from etl_tasks.errors import TransientError, Unsupported

    with pytest.raises(Unsupported, match="no connector for s3 endpoints") as caught:
        registry.connector("s3")
    assert isinstance(caught.value, TransientError) and caught.value.connection
