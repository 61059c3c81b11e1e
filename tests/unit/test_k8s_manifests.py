"""The Kubernetes manifests in ops/k8s keep the properties a safe deploy depends on.

No cluster is needed: every manifest is parsed as YAML, and the worker's preStop
hook is run for real against a stand-in for the worker's probe. Each test names
the property it guards (DESIGN.md, "What the anchors taught"), or the one that
keeps the probe's POST /drain for those who hold the probe token.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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
PROBE_TOKEN = "BATON_PROBE_TOKEN"
EXIT_PROBE_TOKEN = 3  # `baton drain --local`: no token here, or the probe refused it

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


def prestop_command(worker_container: Doc) -> list[str]:
    """The preStop hook: `baton drain --local`, which reads its port and token from the
    container's environment (BATON_WORKER_HTTP_PORT, BATON_PROBE_TOKEN)."""
    command = worker_container["lifecycle"]["preStop"]["exec"]["command"]
    assert isinstance(command, list) and all(isinstance(w, str) for w in command), command
    assert command[:3] == ["baton", "drain", "--local"], command
    assert "--url" not in command, "the hook follows BATON_WORKER_HTTP_PORT, like the probe"
    return command


def prestop_timeout(command: list[str]) -> float:
    assert "--timeout" in command, "the preStop hook bounds its wait with --timeout"
    return float(command[command.index("--timeout") + 1])


def labels_of(owner: Doc) -> dict[str, str]:
    labels = owner["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


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
    deadline = prestop_timeout(prestop_command(container(worker, "worker")))
    assert grace - deadline > budget + SHUTDOWN_MARGIN_S, (grace, deadline)


def test_worker_prestop_drains_through_the_probe_port_with_the_token(
    worker: Doc, config: dict[str, Any], probe_port: int
) -> None:
    c = container(worker, "worker")
    prestop_command(c)
    # The hook runs in the container: the port it asks is the ConfigMap's, the one the
    # container declares, and the token is the one the worker checks.
    env = {e["name"] for e in c["env"]} | set(config)
    assert {"BATON_WORKER_HTTP_PORT", PROBE_TOKEN} <= env
    assert probe_port in {p["containerPort"] for p in c["ports"]}


# --- the probe token: from a Secret, never written in a manifest ------------------------------


def test_worker_reads_the_probe_token_from_the_secret(worker: Doc) -> None:
    (entry,) = [e for e in container(worker, "worker")["env"] if e["name"] == PROBE_TOKEN]
    assert "value" not in entry, "the token never appears in a manifest"
    ref = entry["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("baton-secrets", PROBE_TOKEN)
    assert ref.get("optional", False) is False, "a worker without a token cannot be drained"


def test_no_manifest_but_the_secret_example_holds_a_probe_token(
    docs: dict[tuple[str, str], Doc],
) -> None:
    for (kind, name), doc in docs.items():
        if kind == "ConfigMap":
            assert PROBE_TOKEN not in doc["data"], name
    for owner in pod_owners(docs):
        for c in pod_spec(owner)["containers"]:
            for e in c.get("env", []):
                assert not (e["name"] == PROBE_TOKEN and "value" in e), owner["metadata"]["name"]
            assert PROBE_TOKEN not in json.dumps(c.get("args", [])), owner["metadata"]["name"]
    secret = one(docs, "Secret", "baton-secrets")["stringData"]
    assert PROBE_TOKEN in secret and "CHANGE-ME" in secret[PROBE_TOKEN], "a placeholder only"


# --- the worker probe's NetworkPolicy -----------------------------------------------------------


@pytest.fixture(scope="module")
def probe_policy(docs: dict[tuple[str, str], Doc]) -> Doc:
    return one(docs, "NetworkPolicy", "baton-worker-probe")


def test_network_policy_selects_the_worker_pods_only(
    probe_policy: Doc, worker: Doc, api: Doc
) -> None:
    selector = probe_policy["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}, "labels only: no expression that could widen it"
    assert selector["matchLabels"].items() <= labels_of(worker).items()
    assert not selector["matchLabels"].items() <= labels_of(api).items()
    # Ingress only: workers must still reach the state DB, the broker, sources, targets.
    assert probe_policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in probe_policy["spec"]


def test_network_policy_admits_only_the_api_pods_on_the_probe_port(
    probe_policy: Doc, worker: Doc, api: Doc, probe_port: int
) -> None:
    (rule,) = probe_policy["spec"]["ingress"]
    (peer,) = rule["from"]
    # A podSelector alone means pods of this namespace; no namespaceSelector, no ipBlock.
    assert set(peer) == {"podSelector"}, peer
    admitted = peer["podSelector"]
    assert set(admitted) == {"matchLabels"} and admitted["matchLabels"], admitted
    assert admitted["matchLabels"].items() <= labels_of(api).items()
    assert not admitted["matchLabels"].items() <= labels_of(worker).items()
    (port,) = rule["ports"]
    assert port.get("protocol", "TCP") == "TCP" and "endPort" not in port
    assert container_port(container(worker, "worker"), port["port"]) == probe_port


def test_network_policy_says_why_the_kubelets_probes_still_work() -> None:
    text = (K8S / "worker-networkpolicy.yaml").read_text()
    comment = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "kubelet" in comment and "node" in comment, "which traffic it admits, and why"


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
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert container_port(c, ports["http"]["targetPort"]) == 8080
    assert container_port(c, ports["live"]["targetPort"]) == 8081  # the dashboard's live process


# --- the preStop hook, run for real ----------------------------------------------------------


class FakeProbe:
    """The worker probe's /drain on a free port: drained on the second GET; POST /drain
    only with the right bearer token, as the real probe."""

    def __init__(self, drained_after: int = 2, token: str = "fake-probe-token") -> None:
        self.calls: list[str] = []
        self.authorizations: list[str | None] = []
        self.drained_after = drained_after
        self.token = token
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
                sent = self.headers.get("Authorization")
                probe.authorizations.append(sent)
                if sent != f"Bearer {probe.token}":
                    self._reply(401, False)
                    return
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


# (port, token, timeout_s=None) -> (exit status, seconds, output)
RunHook = Callable[..., tuple[int, float, str]]


@pytest.fixture
def run_hook(worker: Doc) -> Iterator[RunHook]:
    """The manifest's preStop command, run as the container would run it: `baton` is this
    checkout's CLI, the port and the token come from the environment."""
    command = prestop_command(container(worker, "worker"))

    def run(port: int, token: str | None, timeout_s: float | None = None) -> tuple[int, float, str]:
        argv = list(command[1:])
        if timeout_s is not None:
            argv[argv.index("--timeout") + 1] = str(timeout_s)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BATON_WORKER_HTTP_PORT": str(port)}
        env.pop(PROBE_TOKEN, None)
        if token is not None:
            env[PROBE_TOKEN] = token
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "ops.cli", *argv],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, time.monotonic() - started, done.stdout + done.stderr

    yield run


def test_prestop_hook_drains_with_the_token_then_waits_for_may_shut_down(
    run_hook: RunHook,
) -> None:
    with FakeProbe(drained_after=2) as probe:
        code, _, out = run_hook(probe.port, probe.token)
    assert code == 0, out
    assert probe.calls == ["POST /drain", "GET /drain", "GET /drain"]
    assert probe.authorizations == [f"Bearer {probe.token}"]


def test_prestop_hook_gives_up_at_its_deadline(run_hook: RunHook) -> None:
    # A step that overruns: the hook must still end, leaving the rest to SIGTERM.
    with FakeProbe(drained_after=10_000) as probe:
        code, elapsed, out = run_hook(probe.port, probe.token, timeout_s=1)
    assert code == 1 and "still busy" in out, out
    assert probe.calls[0] == "POST /drain" and len(probe.calls) >= 2
    assert elapsed < 10, elapsed


def test_prestop_hook_ends_at_once_without_a_probe(run_hook: RunHook) -> None:
    # A probe that could not bind never stops a worker, so it must not stall its shutdown.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, elapsed, out = run_hook(port, "any-token")
    assert code == 1 and "no probe answers" in out, out
    assert elapsed < 10, elapsed


def test_prestop_hook_without_a_token_says_so_and_sends_nothing(run_hook: RunHook) -> None:
    with FakeProbe() as probe:
        code, _, out = run_hook(probe.port, None)
    assert code == EXIT_PROBE_TOKEN and "BATON_PROBE_TOKEN is not set" in out, out
    assert probe.calls == []


def test_prestop_hook_with_a_refused_token_says_so(run_hook: RunHook) -> None:
    with FakeProbe() as probe:
        code, _, out = run_hook(probe.port, "not-the-token")
    assert code == EXIT_PROBE_TOKEN and "(401)" in out, out
    assert probe.calls == ["POST /drain"]
