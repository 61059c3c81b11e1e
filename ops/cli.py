"""The ``baton`` command: run the processes, submit and watch migrations."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from etl_tasks.settings import Settings, load_settings
from ops import exit_codes
from ops.live_cmd import sse
from ops.migrations_cmd import COMMANDS as MIGRATION_COMMANDS
from ops.secrets_cmd import secrets_group
from ops.spec_cmd import spec_group
from ops.state_db import existing_db
from ops.verify_cmd import verify

if TYPE_CHECKING:
    from etl_tasks.state.db import StateDB
    from ops.rollout import ApiFleet, Fleet


@click.group()
@click.version_option(package_name="baton")
def main() -> None:
    """Baton: long data migrations that survive any deploy."""


@main.group()
def db() -> None:
    """The state DB."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the state DB's schema to this version (safe to run again)."""
    from etl_tasks.connectors.sql.engines import redact
    from etl_tasks.state.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    click.echo(f"state DB at {redact(settings.database_url)} is up to date")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", "processes", default=2, show_default=True, help="gunicorn processes")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn")
def api(host: str, port: int, processes: int, dev: bool) -> None:
    """Serve the HTTP API (gunicorn; --dev for Flask's server)."""
    settings = load_settings()
    if settings.auth == "off" and not _is_loopback(host):
        raise click.UsageError("BATON_AUTH=off is only allowed when the API listens on loopback")
    from api import create_app
    from etl_tasks.logs import configure_logging

    configure_logging(settings)
    app = create_app(settings)
    if dev:
        app.run(host=host, port=port, threaded=True, use_reloader=False)
        return
    from ops.gunicorn_app import serve

    serve(app, f"{host}:{port}", processes)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a worker: ``celery -A worker worker`` with Baton's defaults, then CELERY_ARGS."""
    from ops.embedded import worker_argv

    args = list(celery_args)
    if not any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in args):
        args += ["-n", f"baton-{secrets.token_hex(3)}@%h"]
    argv = worker_argv(*args)
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # exec: signals reach Celery's main process directly


@main.command()
@click.option("--workers", "count", default=2, show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option(
    "--home",
    default=None,
    type=click.Path(path_type=Path),
    help="its state DB, Redis and logs  [default: BATON_HOME, else $XDG_STATE_HOME/baton, "
    "else ~/.local/state/baton]",
)
def up(count: int, port: int, home: Path | None) -> None:
    """Everything at once: embedded Redis, SQLite state DB, the API and workers."""
    import signal
    import time

    from etl_tasks.settings import default_home
    from ops.embedded import Embedded

    settings = load_settings()
    if home is None:
        home = Path(settings.home).expanduser() if settings.home else default_home()
    system = Embedded(home=home, api_port=port)
    system.start(workers=count)
    exports = up_exports(system.env)
    (home / "env").write_text(exports + "\n")
    click.echo(
        f"Baton is up: API {system.env['BATON_API_URL']}, broker "
        f"{system.env['BATON_BROKER_URL']}, {count} workers; state DB, logs in {home}. "
        "Ctrl-C stops everything.\n"
        f"For the CLI in another shell (also in {home / 'env'}):\n{exports}"
    )
    if system.probe_token_generated:
        click.echo(
            "The workers' probe token was made for this run and is not shown: with "
            "BATON_API_URL set, `baton drain` and `baton rollout` go through the API and need "
            "none (set BATON_PROBE_TOKEN before `baton up` to call the probes yourself)."
        )
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping:
            for code in system.revive():
                click.echo(f"a worker exited ({code}); started a new one")
            time.sleep(0.5)
    finally:
        system.stop()


def up_exports(env: dict[str, str]) -> str:
    """The ``export`` line that points the CLI at what ``baton up`` started."""
    names = ("BATON_API_URL", "BATON_DATABASE_URL", "BATON_BROKER_URL")
    return "export " + " ".join(f"{n}={shlex.quote(env[n])}" for n in names)


@main.group()
def token() -> None:
    """API tokens."""


def _tokens_db() -> StateDB:
    return existing_db()


@token.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@click.option("--json", "as_json", is_flag=True, help="the token's row with the token in it")
def token_create(name: str, role: str, as_json: bool) -> None:
    """Print a new API token once; only its hash is kept."""
    from etl_tasks.errors import BatonError
    from etl_tasks.tokens import issue_token

    try:
        row, secret = issue_token(_tokens_db(), name, role)
    except BatonError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({**row, "token": secret}) if as_json else secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    """Every token: id, name, role, when it was made and revoked (never the token)."""
    from etl_tasks.tokens import list_tokens

    items = list_tokens(_tokens_db())
    if as_json:
        click.echo(json.dumps({"items": items}))
        return
    for t in items:
        revoked = f"revoked {t['revoked_at']}" if t["revoked_at"] else "live"
        click.echo(f"{t['id']:>4}  {t['name']:<24} {t['role']:<8} {t['created_at']}  {revoked}")


@token.command("revoke")
@click.argument("id_or_name")
@click.option("--json", "as_json", is_flag=True)
def token_revoke(id_or_name: str, as_json: bool) -> None:
    """Revoke a token, given by id or by the name of one live token."""
    from etl_tasks.errors import BatonError
    from etl_tasks.tokens import revoke_token

    try:
        row = revoke_token(_tokens_db(), id_or_name)
    except BatonError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(row))
    else:
        click.echo(f"token {row['id']} ({row['name']}) revoked at {row['revoked_at']}")


@main.command()
@click.argument("worker_name", required=False)
@click.option(
    "--local",
    is_flag=True,
    help="drain the worker whose probe is on this machine and wait until it may shut down; "
    "it keeps running until SIGTERM (a preStop hook)",
)
@click.option(
    "--url",
    default=None,
    help="with --local: the probe  [default: BATON_WORKER_HTTP_HOST (127.0.0.1 for 0.0.0.0) "
    "and BATON_WORKER_HTTP_PORT]",
)
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="seconds per phase")
@click.option("--json", "as_json", is_flag=True)
def drain(
    worker_name: str | None, local: bool, url: str | None, timeout_s: float, as_json: bool
) -> None:
    """Stop WORKER taking steps, wait for its steps in flight, then warm-shut it down.

    With BATON_API_URL set, through the API (an operator token; the worker's heartbeat
    picks the request up). Otherwise through the state DB and the worker's probe: its
    POST /drain needs BATON_PROBE_TOKEN; without it (or with a token the worker
    refuses) WORKER is stopped through Celery's remote control, with a warning.

    Exit status: 0 drained (WORKER: and stopped); 1 not (unknown worker, timeout, no
    probe answering --local); 2 wrong usage; 3 with --local: BATON_PROBE_TOKEN is not
    set, or the probe refused it.
    """
    settings = load_settings()
    if local and not worker_name:
        sys.exit(_drain_local(settings, url, timeout_s, as_json))
    if local or not worker_name:
        raise click.UsageError("give either WORKER (a name `baton workers` lists) or --local")
    report = _fleet(settings).drain(worker_name, timeout_s)
    if report.warning:
        click.echo(f"warning: {report.warning}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        phases = ", ".join(f"{k.removesuffix('_s')} at {v:.2f}s" for k, v in report.phases.items())
        click.echo(
            f"{worker_name}: {'drained' if report.ok else 'NOT drained'} "
            f"(via {report.via}; {report.in_flight_at_start} in flight; {phases})"
            + (f": {report.error}" if report.error else "")
        )
    sys.exit(exit_codes.OK if report.ok else exit_codes.INCOMPLETE)


def _fleet(settings: Settings) -> Fleet | ApiFleet:
    """Through the API when BATON_API_URL is set (any machine, an operator token);
    otherwise straight to the state DB, the broker and the workers' probes."""
    from ops.client import ApiClient
    from ops.rollout import ApiFleet, Fleet

    if "api_url" in settings.model_fields_set:
        return ApiFleet(ApiClient.from_settings(settings))
    return Fleet(settings, existing_db(settings))


def _drain_local(settings: Settings, url: str | None, timeout_s: float, as_json: bool) -> int:
    """``baton drain --local``: the probe on this machine, with this machine's token."""
    from ops.probe import ProbeClient, drain_here, local_url

    if url is None:
        if settings.worker_http_port == 0:
            raise click.UsageError("BATON_WORKER_HTTP_PORT is 0 (a free port): give --url")
        url = local_url(settings.worker_http_host, settings.worker_http_port)
    report = drain_here(ProbeClient(url, settings.probe_token), timeout_s)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    elif report.ok:
        click.echo(
            f"{url}: drained ({report.in_flight_at_start} in flight at start; "
            f"may shut down after {report.waited_s:.2f}s)"
        )
    else:
        click.echo(f"{url}: NOT drained: {report.error}")
    if report.refused:
        return exit_codes.PROBE_REFUSED
    return exit_codes.OK if report.ok else exit_codes.INCOMPLETE


@main.command()
@click.option(
    "--start",
    "start_cmd",
    required=True,
    help="command that starts one new worker; {n} is replaced by 1..COUNT",
)
@click.option("--count", default=1, show_default=True, help="new workers to start")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True)
@click.option(
    "--log-dir", default=".baton/rollout", show_default=True, type=click.Path(path_type=Path)
)
@click.option("--json", "as_json", is_flag=True)
def rollout(start_cmd: str, count: int, timeout_s: float, log_dir: Path, as_json: bool) -> None:
    """Start COUNT new workers, wait until they are ready, then drain the old ones one by one
    (through the API when BATON_API_URL is set, as `baton drain` does)."""
    from ops.rollout import rollout as do_rollout

    report = do_rollout(_fleet(load_settings()), start_cmd, count, log_dir, timeout_s)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"started {', '.join(report.started) or 'none'}")
        for d in report.drained:
            click.echo(f"drained {d['worker']}: {'ok' if d['ok'] else d['error']} {d['phases']}")
        click.echo(
            "rollout " + ("done" if report.ok else f"FAILED: {report.error}") + f" {report.phases}"
        )
    for d in report.drained:
        if d.get("warning"):
            click.echo(f"warning: {d['worker']}: {d['warning']}", err=True)
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--home", default=".baton-demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--scale", default=1.0, show_default=True, help="size of the demo legacy DB")
def demo(home: Path, scale: float) -> None:
    """Migrate a generated legacy DB through a rolling restart of the workers; verify it."""
    from ops.demo import run_demo

    sys.exit(run_demo(home, scale))


@main.command()
@click.option(
    "--tier",
    type=click.Choice(["short", "long", "http-outage"]),
    default="short",
    show_default=True,
    help="long: 50 faults, then an HTTP API down for a minute; http-outage: only that",
)
@click.option("--workdir", type=click.Path(path_type=Path), help="default: a new temp dir")
def chaos(tier: str, workdir: Path | None) -> None:
    """Migrate while killing workers and restarting Redis and PostgreSQL; exit 0 if nothing lost."""
    import tempfile

    from ops.chaos.run import run

    home = workdir or Path(tempfile.mkdtemp(prefix="baton-chaos-"))
    click.echo(f"chaos tier {tier}: logs in {home / 'logs'}")
    sys.exit(0 if run(tier, home, out=click.echo).passed else 1)


@main.command()
@click.argument(
    "which",
    type=click.Choice(
        ["shutdown", "deploys", "recovery", "throughput", "scale", "coordination", "eta", "all"]
    ),
    default="all",
)
@click.option("--workdir", type=click.Path(path_type=Path), help="default: a new temp dir")
@click.option("--runs", default=20, show_default=True, help="shutdowns to time")
@click.option("--repeats", default=3, show_default=True, help="migrations with and without")
@click.option(
    "--scale",
    type=float,
    help="size of the deploys' legacy DB  [default: 75, 80 to 90 s without deploys on 2 cores]",
)
@click.option(
    "--rows-scale",
    default=10,
    show_default=True,
    help="throughput: pgbench scale (100,000 rows each); the naive script runs up to 10",
)
@click.option("--json", "as_json", is_flag=True)
def bench(
    which: str,
    workdir: Path | None,
    runs: int,
    repeats: int,
    scale: float | None,
    rows_scale: int,
    as_json: bool,
) -> None:
    """Measure deploy latency (busy warm shutdowns), what rolling deploys cost a migration,
    how fast the default timings recover from a SIGKILL and from a broker loss,
    throughput beside the scripts Baton replaces, how time and memory grow from 1M to 10M
    rows, what a chunk costs the state DB, and how close the ETA shown is to the time
    actually left."""
    import tempfile

    from ops.bench import coordination, deploys, eta, recovery, shutdown, throughput
    from ops.bench import scale as growth

    home = workdir or Path(tempfile.mkdtemp(prefix="baton-bench-"))
    results: dict[str, Any] = {}
    if which in ("shutdown", "all"):
        results["shutdown"] = shutdown.run(home / "shutdown", runs=runs, out=click.echo)
    if which in ("deploys", "all"):
        results["deploys"] = deploys.run(
            home / "deploys", repeats=repeats, scale=scale or deploys.SCALE, out=click.echo
        )
    if which in ("recovery", "all"):
        results["recovery"] = recovery.run(home / "recovery", out=click.echo)
    if which in ("throughput", "all"):
        results["throughput"] = throughput.run(
            home / "throughput", scale=rows_scale, out=click.echo
        )
    if which in ("scale", "all"):
        results["scale"] = growth.run(home / "scale", out=click.echo)
    if which in ("coordination", "all"):
        results["coordination"] = coordination.run(home / "coordination", out=click.echo)
    if which in ("eta", "all"):
        results["eta"] = eta.run(home / "eta", out=click.echo)
    if as_json:
        click.echo(json.dumps(results))
    sys.exit(0 if all(r["met"] for r in results.values()) else 1)


main.add_command(secrets_group)
main.add_command(spec_group)
main.add_command(verify)
for _command in MIGRATION_COMMANDS:
    main.add_command(_command)
main.add_command(sse)

if __name__ == "__main__":
    main()
