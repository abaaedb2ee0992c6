"""A local service stack without containers: the platform's servers as plain processes on loopback.

PostgreSQL 15 (Airflow's metadata database and MLflow's backend store), Redis 7 (the Celery broker), the
Milvus 2.3 standalone server from PyPI's ``milvus``, an MLflow tracking server that serves artifacts, and
Airflow 3 with the CeleryExecutor (api-server, scheduler, dag-processor, triggerer, Celery workers), then
the musicrec API. Every service runs in its own process group, writes one log under ``<dir>/logs`` and
is health-checked with a deadline; ``up`` is idempotent and ``down`` stops each group, waiting for it.
Only ``MUSICREC_*`` and ``AIRFLOW__*`` settings differ from the embedded defaults: :func:`client_env`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import UserError
from pipelines.settings import Settings

log = logging.getLogger(__name__)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_USER = "musicrec"
DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"
MILVUS_PORTS = (
    "etcd",
    "root-coord",
    "proxy-internal",
    "query-coord",
    "query-node",
    "index-coord",
    "index-node",
    "data-coord",
    "data-node",
)


class StackError(UserError):
    """A service could not be started or stopped; the message names its log."""


@dataclass
class Service:
    """One long-running process: how to start it and how to tell that it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    deadline_s: float = 120.0
    stop_signal: int = signal.SIGTERM
    stop_grace_s: float = 30.0
    tier: int = 0  # stopped after every service of a higher tier (its clients)


class Stack:
    """The services under ``settings.stack.dir``, started and stopped in dependency order."""

    def __init__(self, settings: Settings) -> None:
        self.ports = settings.stack
        self.root = self.ports.dir.expanduser().resolve()
        self.logs = self.root / "logs"
        self.run = self.root / "run"
        self.bin = Path(sys.executable).parent
        self._started: dict[str, subprocess.Popen[bytes]] = {}  # this process's children, reaped when they exit

    # --- settings every client of the stack uses --------------------------------------------------

    @property
    def data_root(self) -> Path:
        """The musicrec data root shared by workers, the API and the CLI (a shared volume across hosts)."""
        return self.root / "data"

    def _secret(self, name: str) -> str:
        path = self.root / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def _db_url(self, db: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{DB_USER}:{self._secret('postgres')}@127.0.0.1:{self.ports.postgres}/{db}"

    def client_env(self) -> dict[str, str]:
        """What a process needs to use the stack: the CLI, Airflow's own CLI, the API, the workers."""
        airflow_url = f"http://127.0.0.1:{self.ports.airflow}"
        home = self.root / "airflow"
        return {
            "MUSICREC_DATA_ROOT": str(self.data_root),
            "MUSICREC_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.ports.mlflow}",
            "MUSICREC_MILVUS_URI": f"http://127.0.0.1:{self.ports.milvus}",
            "MUSICREC_AIRFLOW_API_URL": airflow_url,
            "MUSICREC_AIRFLOW_USERNAME": "admin",
            "MUSICREC_AIRFLOW_PASSWORD": self._secret("airflow-admin"),
            "MUSICREC_SERVING_START_MILVUS": "false",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self._db_url("airflow"),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self._db_url("airflow"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.ports.airflow),
            "AIRFLOW__API__BASE_URL": airflow_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow"),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # --- the services -----------------------------------------------------------------------------

    def services(self) -> list[Service]:
        p = self.ports
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        milvus_ports = {name: p.milvus + 1 + i for i, name in enumerate(MILVUS_PORTS)}
        airflow = str(self.bin / "airflow")
        base = [
            Service(
                "postgres",
                [
                    *as_postgres,
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.root / "postgres"),
                    "-p",
                    str(p.postgres),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.root / "postgres-socket"),
                ],
                ready=lambda: _pg_ready(self.root / "postgres-socket", p.postgres),
                stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client to leave
            ),
            Service(
                "redis",
                [
                    "redis-server",
                    "--port",
                    str(p.redis),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.root / "redis"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                ready=lambda: _redis_ping(p.redis),
            ),
            Service(
                "milvus",
                [str(self.bin / "milvus-server"), "--data", str(self.root / "milvus"), "--proxy-port", str(p.milvus)]
                + [arg for name, port in milvus_ports.items() for arg in (f"--{name}-port", str(port))],
                ready=lambda: _milvus_ready(p.milvus),
                deadline_s=240.0,
            ),
            Service(
                "mlflow",
                [
                    str(self.bin / "mlflow"),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(p.mlflow),
                    "--backend-store-uri",
                    self._db_url("mlflow"),
                    "--serve-artifacts",
                    "--artifacts-destination",
                    str(self.root / "mlflow-artifacts"),
                    "--workers",
                    "1",
                ],
                ready=lambda: _http_ok(f"http://127.0.0.1:{p.mlflow}/health"),
                deadline_s=240.0,
                tier=1,
            ),
            Service(
                "airflow-api-server",
                [airflow, "api-server"],
                ready=lambda: _http_ok(f"http://127.0.0.1:{p.airflow}/api/v2/monitor/health"),
                deadline_s=240.0,
                tier=2,
            ),
        ]
        loops = [  # Airflow's loops, ready once their heartbeat shows in the api-server's health report
            Service(
                f"airflow-{component.replace('_', '-')}",
                [airflow, component.replace("_", "-")],
                ready=functools.partial(_airflow_component, p.airflow, component),
                deadline_s=240.0,
                tier=2,
            )
            for component in ("scheduler", "dag_processor", "triggerer")
        ]
        workers = [
            Service(
                f"airflow-worker-{i}",
                [airflow, "celery", "worker", "--celery-hostname", f"worker{i}@%h", "--concurrency", "1"],
                ready=functools.partial(_log_says, self.logs / f"airflow-worker-{i}.log", "ready."),
                env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(p.airflow + 10 + i)},
                deadline_s=240.0,
                tier=3,
            )
            for i in range(1, p.celery_workers + 1)
        ]
        api = Service(
            "api",
            [str(self.bin / "musicrec"), "serve", "--host", "127.0.0.1", "--port", str(p.api), "--no-milvus-server"],
            ready=lambda: _http_ok(f"http://127.0.0.1:{p.api}/livez"),  # ready needs a catalogue: none yet
            deadline_s=180.0,
            tier=3,
        )
        return [*base, *loops, *workers, api]

    # --- lifecycle --------------------------------------------------------------------------------

    def up(self, echo: Callable[[str], None] = log.info) -> None:
        """Start what is not running, in order, each ready before the next; a no-op when all are up."""
        _require_binaries()
        for folder in (self.logs, self.run, self.data_root, self.root / "redis", self.root / "milvus"):
            folder.mkdir(parents=True, exist_ok=True)
        self._init_postgres()
        for service in self.services():
            if self._running(service.name):
                if service.ready():
                    echo(f"{service.name}: already up")
                    continue
                self._wait_ready(service)
                echo(f"{service.name}: up")
                continue
            if service.name == "mlflow":
                self._create_databases()
            if service.name == "airflow-api-server":
                self._migrate_airflow()
            self._start(service)
            self._wait_ready(service)
            echo(f"{service.name}: up (log {self.logs / (service.name + '.log')})")

    def down(self, echo: Callable[[str], None] = log.info) -> None:
        """Stop every service, clients before the servers they use: the services of one tier together,
        each process group waited for up to its grace time, then killed."""
        services = self.services()
        for tier in sorted({s.tier for s in services}, reverse=True):
            running = [(s, pid) for s in services if s.tier == tier and (pid := self._pid(s.name)) is not None]
            start = time.monotonic()
            for service, pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, service.stop_signal)
            for service, pid in running:
                _stop_group(pid, service.stop_signal, service.stop_grace_s - (time.monotonic() - start))
                (self.run / f"{service.name}.pid").unlink(missing_ok=True)
                echo(f"{service.name}: stopped ({time.monotonic() - start:.1f}s)")

    def status(self) -> list[tuple[str, str]]:
        """(service, "up" | "starting or unhealthy" | "stopped") for every service."""
        out = []
        for service in self.services():
            if not self._running(service.name):
                out.append((service.name, "stopped"))
            else:
                out.append((service.name, "up" if service.ready() else "starting or unhealthy"))
        return out

    # --- internals --------------------------------------------------------------------------------

    def _pid(self, name: str) -> int | None:
        path = self.run / f"{name}.pid"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def _running(self, name: str) -> bool:
        pid = self._pid(name)
        if pid is not None and _group_alive(pid):
            return True
        (self.run / f"{name}.pid").unlink(missing_ok=True)
        return False

    def _start(self, service: Service) -> None:
        env = {**os.environ, **self.client_env(), **service.env}
        logfile = self.logs / f"{service.name}.log"
        with logfile.open("ab") as out:
            proc = subprocess.Popen(
                service.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.root,
                start_new_session=True,  # its own process group, stopped as one
            )
        self._started[service.name] = proc
        (self.run / f"{service.name}.pid").write_text(str(proc.pid))

    def _wait_ready(self, service: Service) -> None:
        deadline = time.monotonic() + service.deadline_s
        while not service.ready():
            pid = self._pid(service.name)
            proc = self._started.get(service.name)
            if pid is None or not _group_alive(pid) or (proc is not None and proc.poll() is not None):
                raise StackError(f"{service.name} exited at start; see {self.logs / (service.name + '.log')}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"{service.name} not ready after {service.deadline_s:.0f}s; "
                    f"see {self.logs / (service.name + '.log')}"
                )
            time.sleep(0.5)

    def _run_tool(self, argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=600)
        if out.returncode != 0:
            raise StackError(f"{what} failed: {(out.stderr or out.stdout).strip()[-800:]}")

    def _init_postgres(self) -> None:
        data, sock = self.root / "postgres", self.root / "postgres-socket"
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        for folder in (data, sock):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if as_postgres:
                shutil.chown(folder, "postgres", "postgres")
        if (data / "PG_VERSION").exists():
            return
        pwfile = self.root / "secrets" / "postgres"
        self._secret("postgres")
        if as_postgres:
            # the server's user reads the password once, from a copy it owns
            pwfile = sock / "initdb-password"
            shutil.copy(self.root / "secrets" / "postgres", pwfile)
            shutil.chown(pwfile, "postgres", "postgres")
        argv = [*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "-U", DB_USER, "--pwfile", str(pwfile)]
        argv += ["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"]
        try:
            self._run_tool(argv, "initdb (is the postgres user able to reach this folder?)")
        finally:
            if as_postgres:
                pwfile.unlink(missing_ok=True)

    def _create_databases(self) -> None:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(
            host=str(self.root / "postgres-socket"), port=self.ports.postgres, user=DB_USER, dbname="postgres"
        )
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            for db in ("airflow", "mlflow"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(DB_USER))
                    )
        conn.close()

    def _migrate_airflow(self) -> None:
        home = self.root / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self._secret("airflow-admin")}))
        passwords.chmod(0o600)
        env = {**os.environ, **self.client_env()}
        self._run_tool([str(self.bin / "airflow"), "db", "migrate"], "airflow db migrate", env)


# --- health checks (each answers quickly, never raises) ---------------------------------------------


def _pg_ready(sock: Path, port: int) -> bool:
    out = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-h", str(sock), "-p", str(port), "-t", "2"], capture_output=True, check=False
    )
    return out.returncode == 0


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _milvus_ready(port: int) -> bool:
    try:
        from pymilvus import MilvusClient

        client = MilvusClient(f"http://127.0.0.1:{port}", timeout=3)
        try:
            client.list_collections()
        finally:
            client.close()
        return True
    except Exception:
        return False


def _airflow_component(port: int, component: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=3) as resp:
            return json.load(resp).get(component, {}).get("status") == "healthy"
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _log_says(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")[-20000:]
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies waiting for their parent do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop_group(pgid: int, sig: int, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + max(grace_s, 1.0)
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.2)
    log.warning("process group %d did not stop in %.0fs; killing it", pgid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)


def _require_binaries() -> None:
    missing = [str(b) for b in (PG_BIN / "postgres", PG_BIN / "initdb") if not b.exists()]
    missing += [b for b in ("redis-server", "runuser") if shutil.which(b) is None]
    if missing:
        raise StackError(
            f"missing {', '.join(missing)}: run `make stack-deps` (apt-get install postgresql-15 redis-server)"
        )
