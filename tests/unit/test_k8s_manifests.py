"""The Kubernetes manifests in ops/k8s keep the properties a safe deploy depends on.

No cluster is needed: every manifest is parsed as YAML, and the worker's preStop
hook is run for real against a stand-in for the worker's probe. Each test names
the property it guards (DESIGN.md, "What the anchors taught").
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl_tasks.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "ops" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
# Applied by hand, on purpose (see kustomization.yaml): placeholders, and a one-shot Job.
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "migrate-job.yaml"}

SHUTDOWN_MARGIN_S = 5.0  # time beyond one step for the pool's own exit and slow I/O
SETTINGS_VARIABLES = {env_name(name) for name in Settings.model_fields}
POD_OWNERS = ("Deployment", "Job")

Doc = dict[str, Any]


# --- reading the manifests ---------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


@pytest.fixture(scope="module")
def docs() -> dict[tuple[str, str], Doc]:
    """Every object in ops/k8s, by (kind, name)."""
    found: dict[tuple[str, str], Doc] = {}
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), path
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def one(docs: dict[tuple[str, str], Doc], kind: str, name: str) -> Doc:
    assert (kind, name) in docs, f"no {kind} {name!r} in ops/k8s"
    return docs[(kind, name)]


def pod_spec(owner: Doc) -> Doc:
    spec = owner["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(owner: Doc, name: str) -> Doc:
    by_name: dict[str, Doc] = {c["name"]: c for c in pod_spec(owner)["containers"]}
    assert name in by_name, f"{owner['metadata']['name']} has no container {name!r}"
    return by_name[name]


def pod_owners(docs: dict[tuple[str, str], Doc]) -> list[Doc]:
    return [doc for (kind, _), doc in docs.items() if kind in POD_OWNERS]


def container_port(c: Doc, port: int | str) -> int:
    """A probe's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    assert port in named, f"{c['name']}: no container port named {port!r}"
    return int(named[port])


def prestop_snippet(worker_container: Doc) -> str:
    command = worker_container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"] and len(command) == 3, command
    snippet = command[2]
    assert isinstance(snippet, str)
    return snippet


@pytest.fixture(scope="module")
def config(docs: dict[tuple[str, str], Doc]) -> dict[str, Any]:
    data = one(docs, "ConfigMap", "baton-config")["data"]
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def worker(docs: dict[tuple[str, str], Doc]) -> Doc:
    return one(docs, "Deployment", "baton-worker")


@pytest.fixture(scope="module")
def api(docs: dict[tuple[str, str], Doc]) -> Doc:
    return one(docs, "Deployment", "baton-api")


@pytest.fixture(scope="module")
def probe_port(config: dict[str, Any]) -> int:
    port = int(config["BATON_WORKER_HTTP_PORT"])
    assert port != 0, "probes and the preStop hook need a fixed port"
    return port


# --- the files as a whole ------------------------------------------------------------------


def test_every_object_is_named_and_lives_in_the_baton_namespace(
    docs: dict[tuple[str, str], Doc],
) -> None:
    assert ("Namespace", "baton") in docs
    for (kind, name), doc in docs.items():
        assert doc.get("apiVersion"), (kind, name)
        if kind != "Namespace":
            assert doc["metadata"].get("namespace") == "baton", (kind, name)


def test_kustomization_lists_every_manifest_but_the_secret_example_and_the_job() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == {p.name for p in manifest_files()} - NOT_IN_KUSTOMIZATION
    assert kustomization.get("namespace") == "baton"


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out.stdout) if doc}
    assert {"Deployment", "ConfigMap", "PodDisruptionBudget", "Service"} <= kinds


def test_every_image_is_the_release_the_kustomization_names(
    docs: dict[tuple[str, str], Doc],
) -> None:
    # The schema Job is applied without kustomize: it must already name the same image.
    images = yaml.safe_load(KUSTOMIZATION.read_text())["images"]
    assert len(images) == 1
    release = f"{images[0]['newName']}:{images[0]['newTag']}"
    for owner in pod_owners(docs):
        for c in pod_spec(owner)["containers"]:
            assert c["image"] == release, (owner["metadata"]["name"], c["image"], release)


# --- settings ------------------------------------------------------------------------------


def test_configmap_sets_what_the_workers_need(config: dict[str, Any]) -> None:
    assert config["BATON_STEP_BUDGET_S"] == "2"
    assert config["BATON_WORKER_HTTP_HOST"] == "0.0.0.0"
    assert config["BATON_WORKER_HTTP_PORT"] == "8081"
    assert config["BATON_LOG_FORMAT"] == "json"


def test_every_baton_variable_is_a_setting_with_a_string_value(
    docs: dict[tuple[str, str], Doc],
) -> None:
    # Settings ignore unknown variables, so a typo would silently keep the default; and a
    # ConfigMap or env value must be a string (an unquoted 2 or on is not).
    found: dict[str, Any] = {}
    for (kind, _), doc in docs.items():
        if kind == "ConfigMap":
            found.update(doc["data"])
        elif kind == "Secret":
            found.update(doc.get("stringData", {}))
    for owner in pod_owners(docs):
        for c in pod_spec(owner)["containers"]:
            found.update({e["name"]: e.get("value", "") for e in c.get("env", [])})
    names = {k for k in found if k.startswith("BATON_")}
    assert len(names) >= 6, names
    assert not sorted(names - SETTINGS_VARIABLES), "not fields of Settings"
    for name in names:
        assert isinstance(found[name], str), f"{name}: quote {found[name]!r}"


def test_configmap_values_are_valid_settings(config: dict[str, Any]) -> None:
    values = {k.removeprefix("BATON_").lower(): v for k, v in config.items()}
    settings = Settings(**values)
    assert settings.worker_http_port == int(config["BATON_WORKER_HTTP_PORT"])


def test_pods_read_the_shared_config_and_secret(docs: dict[tuple[str, str], Doc]) -> None:
    for owner in pod_owners(docs):
        for c in pod_spec(owner)["containers"]:
            refs = {
                (kind, ref["name"])
                for source in c.get("envFrom", [])
                for kind, ref in source.items()
            }
            assert refs == {("configMapRef", "baton-config"), ("secretRef", "baton-secrets")}
    assert ("Secret", "baton-secrets") in docs, "secret.example.yaml shows the Secret's keys"


# --- the image's entrypoint and the pods' security -------------------------------------------


def test_args_are_arguments_of_the_baton_entrypoint(
    docs: dict[tuple[str, str], Doc], worker: Doc, api: Doc
) -> None:
    # The image's ENTRYPOINT is `tini -- baton`. A `command` would replace it and take tini
    # (and its signal forwarding) away from PID 1.
    for owner in pod_owners(docs):
        for c in pod_spec(owner)["containers"]:
            assert "command" not in c, owner["metadata"]["name"]
    assert container(worker, "worker")["args"][0] == "worker"
    assert container(api, "api")["args"][0] == "api"
    job = one(docs, "Job", "baton-migrate")
    assert container(job, "migrate")["args"][:2] == ["db", "upgrade"]


def test_pods_run_as_the_images_unprivileged_user(docs: dict[tuple[str, str], Doc]) -> None:
    user = re.search(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user, "the Dockerfile's USER is numeric, so runAsNonRoot can verify it"
    for owner in pod_owners(docs):
        security = pod_spec(owner)["securityContext"]
        assert security["runAsNonRoot"] is True, owner["metadata"]["name"]
        assert security["runAsUser"] == int(user.group(1)), owner["metadata"]["name"]
        for c in pod_spec(owner)["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_deployment_selectors_match_their_pods(docs: dict[tuple[str, str], Doc]) -> None:
    for (kind, name), doc in docs.items():
        if kind == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), name


# --- the workers -----------------------------------------------------------------------------


def test_worker_rollout_never_goes_below_the_wanted_count(worker: Doc) -> None:
    strategy = worker["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    rolling = strategy["rollingUpdate"]
    assert rolling["maxUnavailable"] in (0, "0%")
    assert rolling["maxSurge"] in (1, "25%")


def test_worker_grace_period_outlasts_a_step(worker: Doc, config: dict[str, Any]) -> None:
    budget = float(config["BATON_STEP_BUDGET_S"])
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace > budget + SHUTDOWN_MARGIN_S, (grace, budget)
    # The grace period also counts the preStop wait: when the hook gives up, a whole warm
    # shutdown must still fit in what is left.
    deadline = re.search(
        r"^DEADLINE_S = (\d+)$", prestop_snippet(container(worker, "worker")), re.M
    )
    assert deadline, "the preStop hook bounds its wait with DEADLINE_S"
    assert grace - int(deadline.group(1)) > budget + SHUTDOWN_MARGIN_S, (grace, deadline[1])


def test_worker_prestop_drains_through_the_probe_port(worker: Doc, probe_port: int) -> None:
    snippet = prestop_snippet(container(worker, "worker"))
    urls = set(re.findall(r"http://[\w.]+:\d+/\w+", snippet))
    assert urls == {f"http://127.0.0.1:{probe_port}/drain"}, urls
    assert 'method="POST"' in snippet


def test_worker_probes_ask_the_workers_own_probe(worker: Doc, probe_port: int) -> None:
    c = container(worker, "worker")
    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == "/readyz"  # 503 while draining
    assert container_port(c, ready["port"]) == probe_port
    live = c["livenessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert container_port(c, live["port"]) == probe_port
    assert probe_port in {p["containerPort"] for p in c["ports"]}


def test_pdb_keeps_a_worker_and_selects_only_workers(
    docs: dict[tuple[str, str], Doc], worker: Doc, api: Doc
) -> None:
    pdb = one(docs, "PodDisruptionBudget", "baton-worker")
    assert pdb["spec"]["minAvailable"] == 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert worker["spec"]["replicas"] > pdb["spec"]["minAvailable"], "a node drain would block"


# --- the API ---------------------------------------------------------------------------------


def test_api_probes_and_service(docs: dict[tuple[str, str], Doc], api: Doc) -> None:
    c = container(api, "api")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container_port(c, c[probe]["httpGet"]["port"]) == 8080
    assert "8080" in c["args"] and "0.0.0.0" in c["args"]
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] in (0, "0%")
    service = one(docs, "Service", "baton-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert container_port(c, port["targetPort"]) == 8080


# --- the preStop hook, run for real ----------------------------------------------------------


class FakeProbe:
    """The worker probe's /drain, on a free port: drained on the second GET."""

    def __init__(self, drained_after: int = 2) -> None:
        self.calls: list[str] = []
        self.drained_after = drained_after
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = int(self.server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _reply(self, code: int, may_shut_down: bool) -> None:
                body = json.dumps(
                    {
                        "draining": True,
                        "in_flight": 0 if may_shut_down else 1,
                        "may_shut_down": may_shut_down,
                    }
                ).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                probe.calls.append(f"POST {self.path}")
                self._reply(202 if self.path == "/drain" else 404, False)

            def do_GET(self) -> None:
                probe.calls.append(f"GET {self.path}")
                gets = sum(1 for call in probe.calls if call.startswith("GET"))
                self._reply(200 if self.path == "/drain" else 404, gets >= probe.drained_after)

        return Handler

    def __enter__(self) -> FakeProbe:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def snippet_for(worker: Doc, probe_port: int) -> Iterator[Any]:
    snippet = prestop_snippet(container(worker, "worker"))

    def for_port(port: int, deadline_s: int | None = None) -> str:
        text = snippet.replace(f"127.0.0.1:{probe_port}", f"127.0.0.1:{port}")
        assert text != snippet
        if deadline_s is not None:
            text, n = re.subn(r"^DEADLINE_S = \d+$", f"DEADLINE_S = {deadline_s}", text, flags=re.M)
            assert n == 1
        return text

    yield for_port


def run_snippet(snippet: str, timeout_s: float = 15) -> tuple[int, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=timeout_s
    )
    assert not done.stderr, done.stderr
    return done.returncode, time.monotonic() - started


def test_prestop_snippet_drains_then_waits_for_may_shut_down(snippet_for: Any) -> None:
    with FakeProbe(drained_after=2) as probe:
        code, _ = run_snippet(snippet_for(probe.port))
    assert code == 0
    assert probe.calls == ["POST /drain", "GET /drain", "GET /drain"]


def test_prestop_snippet_gives_up_at_its_deadline(snippet_for: Any) -> None:
    # A step that overruns: the hook must still end, leaving the rest to SIGTERM.
    with FakeProbe(drained_after=10_000) as probe:
        code, elapsed = run_snippet(snippet_for(probe.port, deadline_s=1))
    assert code == 0
    assert probe.calls[0] == "POST /drain" and len(probe.calls) >= 2
    assert elapsed < 5, elapsed


def test_prestop_snippet_ends_at_once_without_a_probe(snippet_for: Any) -> None:
    # A probe that could not bind never stops a worker, so it must not stall its shutdown.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, elapsed = run_snippet(snippet_for(port))
    assert code == 0
    assert elapsed < 5, elapsed
