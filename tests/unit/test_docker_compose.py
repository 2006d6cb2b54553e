"""The container stack (docker-compose.yml and the one parametrised Dockerfile) holds together.

There is no Docker engine where these tests run, so they read the files and check
the structure that decides whether `docker compose up --build` can work: the
services exist, each image builds from the Dockerfile with its SERVICE and PORT,
every connection string names a service of the stack on a port it listens on,
start-up waits on health, nothing is published beyond the loopback interface, and
each image starts the console script its package declares.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from refundflow_intake.notifier_client import NotifierLinkSettings
from refundflow_intake.settings import IntakeSettings
from refundflow_notifier.settings import NotifierSettings
from refundflow_processor.settings import ProcessorSettings
from refundflow_sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

INFRA_SERVICES = {"kafka", "postgres", "mailpit", "prometheus", "grafana"}
BUILT_SERVICES = {"sandbox", "intake", "processor", "notifier"}
# The services that read the database and the broker (the sandbox reads neither).
APP_SERVICES = {"intake", "processor", "notifier"}
Compose = dict[str, Any]
Services = dict[str, dict[str, Any]]

HTTP_PORTS = {"intake": 8000, "processor": 8001, "notifier": 8002}
# What each service reads from its environment.
SETTINGS_OF: dict[str, tuple[type[BaseSettings], ...]] = {
    "intake": (IntakeSettings, NotifierLinkSettings),
    "processor": (ProcessorSettings,),
    "notifier": (NotifierSettings,),
}
SANDBOX_PORT = 12111


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> Compose:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: Compose) -> Services:
    services = compose.get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services mapping"
    return services


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict of strings, whichever form it is written in."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {key: value for key, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def strip_default(value: str) -> str:
    """`${VAR:-default}` -> `default`, the value compose uses when VAR is unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


class MissingVariable(Exception):
    """Compose refuses to start: a `${VAR:?message}` variable is unset or empty."""


def interpolate(value: str, given: dict[str, str]) -> str:
    """What compose makes of `value` when only `given` is set: `${VAR}`, `${VAR:-default}`, `${VAR:?error}`."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2) or "", match.group(3) or ""
        if given.get(name):
            return given[name]
        if operator == ":?":
            raise MissingVariable(name)
        return argument if operator == ":-" else ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-|:\?)?([^}]*)\}", substitute, value)


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """(host_ip, host_port, container_port) for each published port."""
    result: list[tuple[str | None, str, str]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append((entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])))
            continue
        parts = str(entry).split(":")
        if len(parts) == 3:
            result.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            result.append((None, parts[0], parts[1]))
        else:
            result.append((None, "", parts[0]))
    return result


def depends_on(service: dict[str, Any]) -> dict[str, Any]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no condition at all
        return {name: {} for name in deps}
    return deps


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def dockerfile_path(service: dict[str, Any]) -> Path:
    build = service["build"]
    context = ROOT / str(build.get("context", "."))
    return context / str(build.get("dockerfile", "Dockerfile"))


def build_args(service: dict[str, Any]) -> dict[str, str]:
    args = service["build"].get("args") or {}
    if isinstance(args, list):
        return dict(item.split("=", 1) for item in args)
    return {str(key): str(value) for key, value in args.items()}


def image_instructions(service: dict[str, Any]) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as Docker builds them for this service: its build args substituted."""
    args = build_args(service)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return args.get(name, match.group(0))

    pattern = r"\$\{([A-Z_][A-Z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)"
    return [
        (keyword, re.sub(pattern, substitute, rest))
        for keyword, rest in dockerfile_instructions(dockerfile_path(service))
    ]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def member_dir(name: str) -> Path:
    return ROOT / "services" / name


def workspace_member_manifests() -> list[str]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    manifests = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for directory in sorted(ROOT.glob(pattern)):
            if (directory / "pyproject.toml").is_file():
                manifests.append(str((directory / "pyproject.toml").relative_to(ROOT)))
    return manifests


# ---------------------------------------------------------------- the stack


def test_the_stack_has_kafka_postgres_mailpit_and_the_four_refundflow_services(services: Services) -> None:
    assert set(services) == INFRA_SERVICES | BUILT_SERVICES


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_each_refundflow_service_is_built_from_the_one_dockerfile_with_its_service_and_port(
    services: Services, name: str
) -> None:
    service = services[name]
    assert "build" in service, f"{name} is not built from source"
    assert (ROOT / service["build"].get("context", ".")).resolve() == ROOT, "context must be the workspace root"
    path = dockerfile_path(service)
    assert path == ROOT / "Dockerfile"
    assert path.is_file(), f"{path} does not exist"
    port = HTTP_PORTS.get(name, SANDBOX_PORT)
    assert build_args(service) == {"SERVICE": name, "PORT": str(port)}


def test_there_is_one_dockerfile_whose_service_and_port_must_be_given() -> None:
    assert not list(ROOT.glob("services/*/Dockerfile")), "one parametrised Dockerfile, not one per service"
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    declared = [args for keyword, args in instructions if keyword == "ARG"]
    assert "SERVICE" in declared and "PORT" in declared, "ARG SERVICE and ARG PORT, without defaults"
    checks = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert 'test -n "$SERVICE"' in checks and 'test -n "$PORT"' in checks, "a build without them fails at once"


@pytest.mark.parametrize("name", sorted(INFRA_SERVICES | BUILT_SERVICES))
def test_every_service_restarts_unless_stopped(services: Services, name: str) -> None:
    assert services[name].get("restart") == "unless-stopped"


def test_infrastructure_uses_the_official_kafka_postgres_and_mailpit_images(services: Services) -> None:
    assert services["kafka"]["image"].split(":")[0] == "apache/kafka"
    assert services["postgres"]["image"] == "postgres:17"
    assert services["mailpit"]["image"].split(":")[0] == "axllent/mailpit"


# ---------------------------------------------------------------- kafka


def test_kafka_runs_as_a_single_kraft_node_that_is_both_broker_and_controller(services: Services) -> None:
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["CLUSTER_ID"], "KRaft storage is formatted with CLUSTER_ID"

    node_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node_id == env["KAFKA_NODE_ID"]
    voter_host, _, voter_port = voter.rpartition(":")
    assert voter_host in {"kafka", services["kafka"].get("hostname")}

    controller_name = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert listeners(env["KAFKA_LISTENERS"])[controller_name][1] == int(voter_port)


def test_kafka_advertises_an_in_network_listener_and_a_host_listener_that_is_published(services: Services) -> None:
    kafka = services["kafka"]
    env = env_of(kafka)
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))

    assert set(advertised) <= set(bound)
    assert set(bound) <= set(protocols)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    hosts = {host for host, _ in advertised.values()}
    assert "kafka" in hosts, "containers need a listener advertised as kafka:<port>"
    assert "localhost" in hosts, "the host needs a listener advertised as localhost:<port>"

    (host_name,) = [name for name, (host, _) in advertised.items() if host == "localhost"]
    host_port = advertised[host_name][1]
    assert ("127.0.0.1", str(host_port), str(bound[host_name][1])) in published_ports(kafka)


def test_kafka_internal_topics_fit_one_broker_and_new_topics_get_six_partitions(services: Services) -> None:
    env = env_of(services["kafka"])
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_NUM_PARTITIONS"] == "6"


def test_kafka_keeps_its_log_in_a_named_volume(compose: Compose, services: Services) -> None:
    env = env_of(services["kafka"])
    mounts = dict(volume.split(":", 1) for volume in services["kafka"]["volumes"])
    assert env["KAFKA_LOG_DIRS"] in mounts.values()
    assert set(mounts) <= set(compose.get("volumes") or {})


def test_postgres_keeps_its_data_in_a_named_volume_at_the_pg17_data_directory(
    compose: Compose, services: Services
) -> None:
    mounts = dict(volume.split(":", 1) for volume in services["postgres"]["volumes"])
    assert "/var/lib/postgresql/data" in mounts.values()
    assert set(mounts) <= set(compose.get("volumes") or {})


# ---------------------------------------------------------------- wiring between services


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_database_url_points_at_the_postgres_service_and_its_database(
    services: Services, name: str
) -> None:
    given = {"POSTGRES_PASSWORD": "a-password-from-dot-env"}
    env = env_of(services[name])
    url = urlsplit(interpolate(env["DATABASE_URL"], given))
    postgres = env_of(services["postgres"])
    assert url.scheme in {"postgresql", "postgres"}
    assert url.hostname in services
    assert url.hostname == "postgres"
    assert (url.port or 5432) == 5432
    assert url.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == interpolate(postgres["POSTGRES_PASSWORD"], given) == "a-password-from-dot-env"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_bootstrap_servers_point_at_kafkas_in_network_listener(services: Services, name: str) -> None:
    env = env_of(services[name])
    kafka_env = env_of(services["kafka"])
    advertised = set(listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"]).values())
    for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        host, _, port = server.strip().rpartition(":")
        assert host in services, f"{host} is not a service of the stack"
        assert (host, int(port)) in advertised, f"{server} is not an advertised Kafka listener"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_listens_on_all_interfaces_on_the_port_it_publishes_to_localhost(
    services: Services, name: str
) -> None:
    service = services[name]
    env = env_of(service)
    assert env["HTTP_HOST"] == "0.0.0.0"
    assert env["HTTP_PORT"] == str(HTTP_PORTS[name])
    assert published_ports(service) == [("127.0.0.1", str(HTTP_PORTS[name]), str(HTTP_PORTS[name]))]
    assert env["LOG_LEVEL"]


def test_sandbox_listens_on_all_interfaces_on_its_stripe_mock_port(services: Services) -> None:
    env = env_of(services["sandbox"])
    assert env["SANDBOX_HOST"] == "0.0.0.0"
    assert env["SANDBOX_PORT"] == str(SANDBOX_PORT)
    assert published_ports(services["sandbox"]) == [("127.0.0.1", str(SANDBOX_PORT), str(SANDBOX_PORT))]


def test_the_sandbox_is_given_only_settings_it_reads_each_one_it_takes(services: Services) -> None:
    """The sandbox reads SANDBOX_* only (its log level in lower case): LOG_LEVEL was passed and never read."""
    env = {key: strip_default(value) for key, value in env_of(services["sandbox"]).items()}
    fields = {f"SANDBOX_{name.upper()}" for name in SandboxSettings.model_fields}
    assert set(env) <= fields, set(env) - fields
    given = {"STRIPE_WEBHOOK_SECRET": "whsec_x"}
    values = {key.removeprefix("SANDBOX_").lower(): interpolate(value, given) for key, value in env.items()}
    SandboxSettings.model_validate(values)


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_is_given_only_settings_it_reads(services: Services, name: str) -> None:
    env = env_of(services[name])
    fields = {field.upper() for settings in SETTINGS_OF[name] for field in settings.model_fields}
    assert set(env) <= fields, set(env) - fields


def test_intake_served_over_plain_http_sets_cookies_a_browser_keeps_over_http(services: Services) -> None:
    """Compose serves http://localhost:8000: a Secure cookie is not kept over http (Safari), so no one signed in."""
    assert published_ports(services["intake"]) == [("127.0.0.1", "8000", "8000")]
    assert strip_default(env_of(services["intake"])["DASHBOARD_COOKIE_SECURE"]) == "false"


def test_intake_gets_an_admin_token(services: Services) -> None:
    token = env_of(services["intake"])["REFUNDFLOW_ADMIN_TOKEN"]
    assert interpolate(token, {"REFUNDFLOW_ADMIN_TOKEN": "t0ken"}) == "t0ken"


# Every secret, and where it is read. None has a default: compose refuses to start until each is set.
SECRETS = {
    ("postgres", "POSTGRES_PASSWORD"): "POSTGRES_PASSWORD",
    ("intake", "DATABASE_URL"): "POSTGRES_PASSWORD",
    ("processor", "DATABASE_URL"): "POSTGRES_PASSWORD",
    ("notifier", "DATABASE_URL"): "POSTGRES_PASSWORD",
    ("intake", "REFUNDFLOW_ADMIN_TOKEN"): "REFUNDFLOW_ADMIN_TOKEN",
    # Its own, not derived from the admin token: rotating a leaked admin token must not void every customer's link.
    ("intake", "REFUNDFLOW_PORTAL_SECRET"): "REFUNDFLOW_PORTAL_SECRET",
    ("intake", "WEBHOOK_SECRET_KEYS"): "WEBHOOK_SECRET_KEYS",
    ("notifier", "WEBHOOK_SECRET_KEYS"): "WEBHOOK_SECRET_KEYS",
    ("intake", "REFUNDFLOW_INTERNAL_TOKEN"): "REFUNDFLOW_INTERNAL_TOKEN",
    ("notifier", "REFUNDFLOW_INTERNAL_TOKEN"): "REFUNDFLOW_INTERNAL_TOKEN",
    ("processor", "STRIPE_WEBHOOK_SECRET"): "STRIPE_WEBHOOK_SECRET",
    ("sandbox", "SANDBOX_WEBHOOK_SECRET"): "STRIPE_WEBHOOK_SECRET",
}


@pytest.mark.parametrize(
    ("place", "variable"), [pytest.param(p, v, id=f"{p[0]}-{p[1]}") for p, v in sorted(SECRETS.items())]
)
def test_no_secret_has_a_default_compose_refuses_to_start_without_it(
    services: Services, place: tuple[str, str], variable: str
) -> None:
    service, key = place
    value = env_of(services[service])[key]
    assert f"${{{variable}:?" in value, f"{service}: {key} must be ${{{variable}:?...}}"
    with pytest.raises(MissingVariable, match=variable):
        interpolate(value, {})
    assert interpolate(value, {variable: "s3cret"}), "it is read from the environment or .env"


def test_no_known_default_secret_is_left_in_the_file() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for leaked in ("cmVmdW5kZmxvdy1kZXYtb25seS13ZWJob29rLWtleSE=", "dev-admin-token-change-me", "whsec_refundflow"):
        assert leaked not in text
    assert "POSTGRES_PASSWORD: refundflow" not in text
    assert "refundflow:refundflow@" not in text


def test_only_intake_and_the_notifier_hold_the_sealing_keys_and_the_internal_token(services: Services) -> None:
    holders = {
        name
        for name, service in services.items()
        if {"WEBHOOK_SECRET_KEYS", "WEBHOOK_SECRET_KEY", "REFUNDFLOW_INTERNAL_TOKEN"} & env_of(service).keys()
    }
    assert holders == {"intake", "notifier"}


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_sends_webhooks_only_to_public_addresses(services: Services, name: str) -> None:
    assert "REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS" not in env_of(services[name])


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_topics_fit_the_single_broker(services: Services, name: str) -> None:
    env = env_of(services[name])
    assert env["TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["TOPIC_MIN_INSYNC_REPLICAS"] == "1"


def test_processor_talks_to_the_sandbox_with_a_test_mode_key(services: Services) -> None:
    env = env_of(services["processor"])
    assert strip_default(env["STRIPE_API_KEY"]).startswith("sk_test_")
    base = urlsplit(env["STRIPE_API_BASE"])
    assert (base.scheme, base.hostname, base.port) == ("http", "sandbox", SANDBOX_PORT)


def test_notifier_sends_mail_through_mailpits_smtp_port(services: Services) -> None:
    env = env_of(services["notifier"])
    assert env["SMTP_HOST"] == "mailpit"
    assert env["SMTP_PORT"] == "1025"
    assert "@" in env["MAIL_FROM"]
    assert ("127.0.0.1", "1025", "1025") in published_ports(services["mailpit"])
    assert ("127.0.0.1", "8025", "8025") in published_ports(services["mailpit"])


# ---------------------------------------------------------------- start-up order and health


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        ("intake", {"postgres", "kafka"}),
        ("processor", {"postgres", "kafka", "sandbox"}),
        ("notifier", {"postgres", "kafka", "mailpit"}),
    ],
)
def test_app_service_starts_only_after_what_it_needs_is_healthy(services: Services, name: str, needs: set[str]) -> None:
    deps = depends_on(services[name])
    assert needs <= set(deps)
    for dependency, spec in deps.items():
        assert spec.get("condition") == "service_healthy", f"{name} -> {dependency} does not wait for health"


def test_every_service_that_is_waited_on_has_a_healthcheck(services: Services) -> None:
    waited_on = {dependency for service in services.values() for dependency in depends_on(service)}
    assert waited_on, "nothing waits on anything"
    for name in waited_on:
        assert name in services, f"depends_on names {name}, which is not a service"
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_kafka_health_is_a_real_broker_round_trip(services: Services) -> None:
    test = services["kafka"]["healthcheck"]["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    assert re.search(r"/opt/kafka/bin/kafka-(broker-api-versions|topics)\.sh", command)
    assert "--bootstrap-server" in command


def test_postgres_health_uses_pg_isready_for_its_own_database(services: Services) -> None:
    test = services["postgres"]["healthcheck"]["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    assert "pg_isready" in command
    assert env_of(services["postgres"])["POSTGRES_DB"] in command


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("intake", "http://127.0.0.1:8000/readyz"),
        ("processor", "http://127.0.0.1:8001/readyz"),
        ("notifier", "http://127.0.0.1:8002/readyz"),
        ("sandbox", f"http://127.0.0.1:{SANDBOX_PORT}/healthz"),
    ],
)
def test_refundflow_health_probes_its_own_http_port_with_python_since_slim_has_no_curl(
    services: Services, name: str, url: str
) -> None:
    test = services[name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1] == "python"
    assert "urllib.request" in test[-1]
    assert url in test[-1]


def test_every_published_port_binds_only_the_loopback_interface(services: Services) -> None:
    exposed = [
        (name, host_ip, host_port)
        for name, service in services.items()
        for host_ip, host_port, _ in published_ports(service)
        if host_ip != "127.0.0.1"
    ]
    assert exposed == []


def test_the_compose_file_says_how_to_start_it_and_where_to_look(compose: Compose) -> None:
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nname:", 1)[0]
    assert "docker compose up --build" in header
    assert "http://localhost:8000/docs" in header
    assert "Swagger" not in header, "/docs is the project's own page of the API (FastAPI's Swagger UI is off)"
    assert "http://localhost:8025" in header


# ---------------------------------------------------------------- the Dockerfiles


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_cmd_runs_the_console_script_its_package_declares(services: Services, name: str) -> None:
    project = tomllib.loads((member_dir(name) / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    scripts = project["scripts"]
    instructions = image_instructions(services[name])
    cmd = [args for keyword, args in final_stage(instructions) if keyword == "CMD"]
    assert cmd, f"{name}'s Dockerfile has no CMD in its final stage"
    argv = yaml.safe_load(cmd[-1]) if cmd[-1].startswith("[") else shlex.split(cmd[-1])
    # The CMD is one name for every image, a link the build makes to the service's own console script.
    links = [
        shlex.split(args.split("&&")[-1])
        for keyword, args in instructions
        if keyword == "RUN" and "ln -s" in args and args.split()[-1].endswith(f"/{argv[0]}")
    ]
    assert links, f"nothing links {argv[0]} to a console script"
    target = links[-1][-2]
    assert target in scripts, f"CMD {argv} runs {target}, not one of {sorted(scripts)}"
    assert target == f"refundflow-{name}"


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_uses_python_311_slim_and_uv_from_its_official_image(services: Services, name: str) -> None:
    instructions = image_instructions(services[name])
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    copies_uv = [args for keyword, args in instructions if keyword == "COPY" and "--from=ghcr.io/astral-sh/uv" in args]
    assert copies_uv and "/uv " in copies_uv[0] + " "


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_syncs_only_its_package_from_the_frozen_lock_without_dev_dependencies(
    services: Services, name: str
) -> None:
    instructions = image_instructions(services[name])
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in env
    assert "UV_LINK_MODE=copy" in env

    dist = tomllib.loads((member_dir(name) / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    syncs = [args for keyword, args in instructions if keyword == "RUN" and "uv sync" in args]
    assert len(syncs) == 2, "one layer for third-party dependencies, one for the workspace members"
    for sync in syncs:
        assert "--frozen" in sync
        assert "--no-dev" in sync
        assert f"--package {dist}" in sync
    assert "--no-install-workspace" in syncs[0]
    assert "--no-install-workspace" not in syncs[1]


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_dependency_layer_sees_every_workspace_manifest_but_no_source(services: Services, name: str) -> None:
    instructions = image_instructions(services[name])
    first_sync = next(i for i, (keyword, args) in enumerate(instructions) if keyword == "RUN" and "uv sync" in args)
    copied_before = [
        source
        for keyword, args in instructions[:first_sync]
        if keyword == "COPY" and "--from" not in args
        for source in args.split()[:-1]
    ]
    assert "uv.lock" in copied_before
    assert "pyproject.toml" in copied_before
    for manifest in workspace_member_manifests():
        assert manifest in copied_before, f"uv cannot discover the workspace without {manifest}"
    assert all(source.endswith(("pyproject.toml", "uv.lock")) for source in copied_before)


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_copies_only_paths_that_exist_and_are_not_dockerignored(services: Services, name: str) -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in ignore:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").removeprefix("**/")
            parts = Path(path).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes) or fnmatch.fnmatch(path, pattern):
                verdict = not negate
        return verdict

    instructions = image_instructions(services[name])
    for keyword, args in instructions:
        if keyword != "COPY" or "--from" in args:
            continue
        for source in [token for token in args.split()[:-1] if not token.startswith("--")]:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the build context"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_runs_the_service_as_a_non_root_user(services: Services, name: str) -> None:
    stage = final_stage(image_instructions(services[name]))
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, f"{name} runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_includes_only_the_workspace_members_the_service_depends_on(services: Services, name: str) -> None:
    instructions = image_instructions(services[name])
    sources = " ".join(args for keyword, args in instructions if keyword == "COPY")
    assert f"services/{name}/refundflow_{name} " in sources + " "
    others = BUILT_SERVICES - {name}
    assert not any(f"services/{other}/refundflow_{other}" in sources for other in others)
    assert "devstack/refundflow_devstack" not in sources
    assert "cli/refundflow_cli" not in sources
    # shared's sources are in every build context; uv installs them only where the package depends on them.
    dependencies = tomllib.loads((member_dir(name) / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert ("refundflow-shared" in dependencies["dependencies"]) is (name != "sandbox")


def test_dockerignore_keeps_local_state_caches_git_and_tests_out_of_the_build_context() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git", "tests"} <= patterns
    assert any("__pycache__" in pattern for pattern in patterns)
