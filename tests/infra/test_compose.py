"""Static checks of infra/docker-compose.yml and infra/Dockerfile (no container runtime or image registry here).

Each check is a mistake that would only show when the stack is started: a dependency on a service that
does not exist, a MUSICREC_* name no settings class reads, two services on one host port, a COPY of a
file that is not in the repository, a worker that does not see the shared data root.
"""

from __future__ import annotations

import re
import shlex
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import typer
import yaml

from pipelines.settings import IndexSettings, ServingSettings, Settings
from serving.cli_serve import musicrec_app

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (INFRA / "Dockerfile").read_text()


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}, whichever of the two forms it is written in."""
    dep = service.get("depends_on") or {}
    if isinstance(dep, list):
        return dict.fromkeys(dep, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in dep.items()}


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def runs_project_code(name: str) -> bool:
    return command(SERVICES[name])[:1] in (["musicrec"], ["airflow"])


AIRFLOW = [n for n in SERVICES if command(SERVICES[n])[:1] == ["airflow"]]
PROJECT = [n for n in SERVICES if runs_project_code(n)]
LONG_RUNNING = [n for n, s in SERVICES.items() if s.get("restart") != "no"]


def test_the_stack_has_every_service_the_platform_needs() -> None:
    images = {n: s.get("image", "") for n, s in SERVICES.items()}
    assert images["postgres"].startswith("postgres:15") and images["redis"].startswith("redis:7")
    assert images["milvus"].startswith("milvusdb/milvus:v2.3.")
    assert {"etcd", "minio", "mlflow", "api"} <= set(SERVICES)
    airflow_commands = {" ".join(command(SERVICES[n])[1:]) for n in AIRFLOW}
    assert {"api-server", "scheduler", "dag-processor", "triggerer", "db migrate"} <= airflow_commands
    workers = [n for n in AIRFLOW if command(SERVICES[n])[1:] == ["celery", "worker"]]
    assert len(workers) == 2
    assert len({SERVICES[w].get("hostname") for w in workers}) == 2  # distinct names for their health checks


def test_depends_on_names_existing_services_without_cycles() -> None:
    for name, service in SERVICES.items():
        for dep, condition in depends(service).items():
            assert dep in SERVICES and dep != name, f"{name} depends on {dep}"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy; it has no check"
            if condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart") == "no", f"{dep} must run once, not be restarted"
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in depends(SERVICES[name]):
                visit(dep, (*path, name))
            done.add(name)

    for name in SERVICES:
        visit(name, ())


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name in LONG_RUNNING:
        check = SERVICES[name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_published_host_ports_do_not_collide() -> None:
    published: dict[str, str] = {}
    for name, service in SERVICES.items():
        for spec in service.get("ports", []):
            parts = str(spec).split(":")
            assert len(parts) in (2, 3), f"{name}: publish {spec} with an explicit host port"
            host = ":".join(parts[:-1])
            assert host not in published, f"{name} and {published.get(host)} both publish {host}"
            published[host] = name
    assert {"127.0.0.1:8000", "127.0.0.1:8080", "127.0.0.1:5000"} <= set(published)


def _settings_fields() -> set[str]:
    return {f.upper() for cls in (Settings, ServingSettings, IndexSettings) for f in cls.model_fields}


def test_every_musicrec_variable_is_a_real_setting() -> None:
    fields = _settings_fields()
    names = {k for n in SERVICES for k in env(SERVICES[n]) if k.startswith("MUSICREC_")}
    names |= set(re.findall(r"^ENV\s.*?(MUSICREC_\w+)=", DOCKERFILE, re.M | re.S))
    assert names
    for name in names:
        field = name.removeprefix("MUSICREC_").split("__")[0]  # MUSICREC_FEATURES__N_MFCC -> FEATURES
        assert field in fields, f"{name} is read by no settings class"


def test_project_services_share_one_musicrec_block_matching_the_env_file() -> None:
    def musicrec(name: str) -> dict[str, str]:
        return {k: v for k, v in env(SERVICES[name]).items() if k.startswith("MUSICREC_")}

    assert len(PROJECT) >= 8
    reference = musicrec("api")
    for name in PROJECT:
        assert musicrec(name) == reference, f"{name} has different MUSICREC_* settings"
    env_file = (INFRA / "env" / "musicrec.env").read_text()
    assert set(reference) == set(re.findall(r"^(MUSICREC_\w+)=", env_file, re.M))


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    assert parsed.hostname and parsed.port, url
    return parsed.hostname, parsed.port


def test_urls_point_at_services_of_the_stack() -> None:
    settings = env(SERVICES["api"])
    host, port = _host_port(settings["MUSICREC_MILVUS_URI"])
    assert host == "milvus" and port == 19530
    host, port = _host_port(settings["MUSICREC_MLFLOW_TRACKING_URI"])
    mlflow = command(SERVICES["mlflow"])
    assert host == "mlflow" and str(port) == mlflow[mlflow.index("--port") + 1]
    assert "--serve-artifacts" in mlflow and "--artifacts-destination" in mlflow
    backend = urlparse(mlflow[mlflow.index("--backend-store-uri") + 1])
    assert backend.scheme == "postgresql" and backend.hostname == "postgres" and backend.path == "/mlflow"
    assert any(h.startswith("mlflow") for h in mlflow[mlflow.index("--allowed-hosts") + 1].split(","))
    init = (INFRA / "postgres" / "init-mlflow.sh").read_text()
    assert "CREATE DATABASE mlflow" in init and "MLFLOW_DB_PASSWORD" in env(SERVICES["postgres"])


def test_airflow_services_agree_on_executor_database_broker_and_api() -> None:
    configs = [env(SERVICES[n]) for n in AIRFLOW]
    airflow_keys = {k: v for k, v in configs[0].items() if k.startswith("AIRFLOW__")}
    for name, config in zip(AIRFLOW, configs, strict=True):
        assert {k: v for k, v in config.items() if k.startswith("AIRFLOW__")} == airflow_keys, name
    assert airflow_keys["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    sync = urlparse(airflow_keys["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    asynchronous = urlparse(airflow_keys["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"])
    assert (sync.scheme, asynchronous.scheme) == ("postgresql+psycopg2", "postgresql+asyncpg")
    broker = urlparse(airflow_keys["AIRFLOW__CELERY__BROKER_URL"])
    backend = urlparse(airflow_keys["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert broker.scheme == "redis" and backend.scheme == "db+postgresql"
    assert {sync.hostname, asynchronous.hostname, backend.hostname} == {"postgres"} and broker.hostname == "redis"
    host, port = _host_port(airflow_keys["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    apiserver = next(n for n in AIRFLOW if command(SERVICES[n])[1:] == ["api-server"])
    assert host == apiserver and any(str(p).endswith(f":{port}") for p in SERVICES[apiserver]["ports"])
    assert airflow_keys["AIRFLOW__API_AUTH__JWT_SECRET"]  # one signing secret, shared by every component
    assert Path(airflow_keys["AIRFLOW__CORE__DAGS_FOLDER"]) == Path("/opt/musicrec/dags")
    assert "COPY dags ./dags" in DOCKERFILE and re.search(r"^WORKDIR /opt/musicrec$", DOCKERFILE, re.M)


def test_every_project_service_mounts_the_shared_data_root_and_declared_volumes() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = str(mount).split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).resolve().exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    for name in PROJECT:
        if name == "airflow-init":
            continue
        root = env(SERVICES[name])["MUSICREC_DATA_ROOT"]
        targets = {str(m).split(":")[1]: str(m).split(":")[0] for m in SERVICES[name].get("volumes", [])}
        assert targets.get(root) == "musicrec-data", f"{name} does not mount the shared data root at {root}"


def test_api_command_parses_with_the_real_cli_and_sums_metrics_over_its_workers() -> None:
    args = command(SERVICES["api"])
    group = typer.main.get_command(musicrec_app())
    ctx = group.make_context("musicrec", args[1:])
    sub = group.get_command(ctx, args[1])  # type: ignore[attr-defined]
    assert sub is not None
    params = sub.make_context("serve", args[2:], parent=ctx).params
    assert params["workers"] == 2 and params["milvus_server"] is False and params["host"] == "0.0.0.0"
    assert env(SERVICES["api"])["PROMETHEUS_MULTIPROC_DIR"]
    probe = " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert "/livez" in probe


# ---- the Dockerfile ------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1] if " " in row else "") for row in rows]


def test_dockerfile_copies_only_files_that_exist_and_are_not_ignored() -> None:
    build = SERVICES["api"]["build"]
    context = (INFRA / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).resolve() == INFRA / "Dockerfile"
    ignored = [
        line.strip()
        for line in (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [args.split() for op, args in _instructions() if op == "COPY"]
    assert copies
    for *sources, _dest in copies:
        for source in sources:
            assert not source.startswith("--"), "COPY --from/--chown not expected here"
            assert (context / source).exists(), f"COPY {source}: not in the repository"
            assert not any(fnmatch(source, pattern) for pattern in ignored), f"COPY {source} is .dockerignored"
    for source in ("requirements.lock", "pyproject.toml", "pipelines", "serving", "dags"):
        assert any(source in c[:-1] for c in copies), f"the image lacks {source}"


def test_dockerfile_basic_lint() -> None:
    ops = _instructions()
    assert ops[0] == ("FROM", "python:3.11-slim")
    assert not any(op == "ADD" for op, _ in ops), "use COPY for local files"
    assert ops[[op for op, _ in ops].index("CMD")][1].startswith("["), "CMD in exec (JSON) form"
    users = [args for op, args in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    for op, args in ops:
        if op == "RUN":
            assert not re.search(r"(^|&&|;)\s*cd\s", args), "use WORKDIR, not cd"
            if "apt-get install" in args:
                assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists" in args
    env_block = " ".join(args for op, args in ops if op == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in env_block
    install = " ".join(args for op, args in ops if op == "RUN" and "requirements.lock" in args)
    assert "download.pytorch.org/whl/cpu" in install  # the lock pins torch's +cpu build
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^torch==[\d.]+\+cpu$", lock, re.M)


def test_service_requirements_are_pinned_and_agree_with_the_lock() -> None:
    def pins(path: Path) -> dict[str, str]:
        rows = [line.strip() for line in path.read_text().splitlines() if "==" in line and not line.startswith("#")]
        return {row.split("==")[0].lower().replace("_", "-"): row.split("==")[1] for row in rows}

    lock = pins(ROOT / "requirements.lock")
    services = pins(INFRA / "requirements-services.txt")
    assert {"apache-airflow-providers-celery", "celery", "psycopg2-binary", "asyncpg"} <= set(services)
    for name, version in services.items():
        assert version and lock.get(name, version) == version, f"{name}=={version}, the lock has {lock[name]}"
    assert int(services["celery"].split(".")[1]) < 7  # the Celery provider needs celery.backends.database.retry
