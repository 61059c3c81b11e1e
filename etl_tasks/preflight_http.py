"""Preflight of an HTTP target: reachable, credential allowed and set, nothing written.

The endpoint goes through the boundary first (host allow-list, the credential's
variable through the ``*_env`` allow-list). Then one OPTIONS request goes to
``check_url``, or to each stream's URL: any answer but 401 or 403 counts (an API
may well refuse OPTIONS itself), since no request that writes is ever sent.
Options that mean something only to a SQL target are refused, not ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import requests

from etl_tasks.boundary.deadline import Deadline
from etl_tasks.boundary.http_urls import HttpAccess, http_access
from etl_tasks.boundary.policy import Boundary
from etl_tasks.connectors.http.client import Client
from etl_tasks.endpoints import HttpEndpoint
from etl_tasks.errors import BoundaryError, EndpointUnavailable
from etl_tasks.spec import MigrationSpec

Add = Callable[[str, str], None]


def check_http_target(
    spec: MigrationSpec, boundary: Boundary, deadline: Deadline, add: Add, reveal: bool
) -> bool:
    """Check the spec's HTTP target; report problems through ``add``; say whether it is fine."""
    endpoint = spec.target
    assert isinstance(endpoint, HttpEndpoint)
    before = _Count(add)
    if spec.verify:
        before("verify", "verify compares SQL targets: an HTTP target cannot be read back")
    try:
        access = http_access(boundary, endpoint.http, deadline.remaining())
    except BoundaryError as exc:
        before(f"target/{exc.field}", exc.message)
        return False
    except EndpointUnavailable as exc:
        message = exc.public_message("target")
        before("target/http/url", f"{message}: {exc.detail}" if reveal and exc.detail else message)
        return False
    client = Client(endpoint.http.method, access.headers, pin=(access.host, access.address))
    for url in _probe_urls(spec, access):
        problem = _probe(client, url, deadline, reveal)
        if problem:
            before("target/http/" + ("check_url" if access.check_url else "url"), problem)
            break
    return not before.count


def _probe_urls(spec: MigrationSpec, access: HttpAccess) -> list[str]:
    if access.check_url is not None:
        return [access.check_url]
    urls: list[str] = []
    for stream in spec.streams:
        url = access.url_for(stream.target_table)
        if url not in urls:
            urls.append(url)
    return urls


def _probe(client: Client, url: str, deadline: Deadline, reveal: bool) -> str | None:
    try:
        status = client.probe(url, deadline.remaining())
    except requests.Timeout:
        return f"the target did not answer in {deadline.seconds:g} s"
    except requests.RequestException as exc:
        return "cannot connect to the target" + (f": {type(exc).__name__}" if reveal else "")
    if status in (401, 403):
        return f"the target refused the credentials (HTTP {status})"
    return None


class _Count:
    def __init__(self, add: Add) -> None:
        self.add = add
        self.count = 0

    def __call__(self, path: str, message: str) -> None:
        self.count += 1
        self.add(path, message)
