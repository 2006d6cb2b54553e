"""Prometheus, its alert rules and the Grafana dashboard (deploy/) hold together with the services and the compose
stack. Neither runs here: the files are parsed, and every metric they read must be one Refundflow defines (the
e2e tests check the same against the running services' /metrics)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from prometheus_client import REGISTRY, generate_latest

import refundflow_shared.metrics  # noqa: F401 - defines every metric in the process registry
from refundflow_cli.main import app as refundflow
from refundflow_shared import event_decoding
from tests.support.metrics_scrape import (
    DASHBOARD_FILE,
    DEPLOY,
    alert_rule_metrics,
    alert_rules,
    dashboard_expressions,
    dashboard_metrics,
    parse,
)

ROOT = DEPLOY.parent
TARGETS = {"intake:8000", "processor:8001", "notifier:8002"}


def _defined_sample_names() -> set[str]:
    return parse(generate_latest(REGISTRY).decode()).sample_names()


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return compose


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path, for the bind mounts of files in the repository."""
    binds = [str(v).removesuffix(":ro").split(":") for v in service.get("volumes", []) if str(v).startswith("./")]
    return {container: host for host, container in binds}


def test_prometheus_scrapes_the_three_services_metrics_and_loads_the_alert_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert {target for group in job["static_configs"] for target in group["targets"]} == TARGETS
    mounts = _mounts(_compose()["services"]["prometheus"])
    for rule_file in config["rule_files"]:
        assert (ROOT / mounts[rule_file]).resolve() == (DEPLOY / "prometheus" / "alerts.yml").resolve()
    assert (ROOT / mounts["/etc/prometheus/prometheus.yml"]).is_file()


def test_the_alert_rules_cover_what_must_wake_someone_and_say_what_to_do() -> None:
    rules = alert_rules()
    reads = {rule["alert"]: rule["expr"] for rule in rules}
    for needed in (
        "refundflow_outbox_oldest_unsent_seconds",
        "refundflow_dlq_messages_total",
        "refundflow_consumer_lag",
        "refundflow_consumer_batch_age_seconds",
        "refundflow_refunds_processing_oldest_seconds",
        "refundflow_provider_calls_total",
        "refundflow_messages_oldest_due_seconds",
    ):
        assert any(needed in expr for expr in reads.values()), needed
    assert len(reads) == len(rules), "alert names are unique"
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


@pytest.mark.parametrize("used", [alert_rule_metrics, dashboard_metrics], ids=["alert rules", "dashboard"])
def test_every_metric_read_is_one_refundflow_defines(used: Any) -> None:
    names = used()
    assert names
    assert names <= _defined_sample_names(), sorted(names - _defined_sample_names())


def test_the_dashboard_shows_every_area_an_operator_watches_on_the_provisioned_data_source() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )
    [source] = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert {panel["datasource"]["uid"] for panel in panels} == {source["uid"]}
    expressions = " ".join(dashboard_expressions())
    for metric in (
        "refundflow_events_handled_total",
        "refundflow_handler_seconds_bucket",
        "refundflow_consumer_lag",
        "refundflow_outbox_unsent",
        "refundflow_dlq_messages_total",
        "refundflow_provider_calls_total",
        "refundflow_emails_total",
        "refundflow_webhook_deliveries_total",
        "refundflow_http_requests_total",
    ):
        assert metric in expressions, metric
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_is_provisioned_from_the_repository_and_has_no_default_password() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    assert (provisioning / "datasources" / "prometheus.yml").is_file()
    [provider] = yaml.safe_load((provisioning / "dashboards" / "refundflow.yml").read_text())["providers"]
    dashboards = Path(ROOT / mounts[provider["options"]["path"]])
    assert (dashboards / DASHBOARD_FILE.name).resolve() == DASHBOARD_FILE.resolve()
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_every_code_a_message_can_be_dead_lettered_for_on_decoding_is_one_whose_count_starts_at_zero() -> None:
    """The consumers show a dead-letter count at 0 for each of INVALID_EVENT_CODES: a code missing there would
    appear at 1 with its first dead letter, which the alert's increase() does not see."""
    source = Path(event_decoding.__file__).read_text(encoding="utf-8")
    raised = set(re.findall(r'InvalidEvent\(\s*"(\w+)"', source))
    assert raised and raised == set(event_decoding.INVALID_EVENT_CODES)


def _parse_refundflow(args: list[str]) -> dict[str, Any]:
    """The options the real `refundflow` parser makes of ``args`` (down to the subcommand), without running it."""
    command: Any = typer.main.get_command(refundflow)
    context = command.make_context("refundflow", args)
    while hasattr(command, "resolve_command"):  # a group: its subcommand parses the rest
        name, command, rest = command.resolve_command(context, [*context._protected_args, *context.args])
        context = command.make_context(name, rest, parent=context)
    params: dict[str, Any] = context.params
    return params


def test_every_refundflow_command_an_alert_tells_the_operator_to_run_is_one_the_command_line_takes() -> None:
    """An alert told the operator to run `refundflow outbox retry`, which the command line refuses."""
    texts = [text for rule in alert_rules() for text in rule["annotations"].values()]
    commands = [shlex.split(found) for text in texts for found in re.findall(r"`refundflow ([^`]*)`", text)]
    assert len(commands) >= 2
    for args in commands:
        _parse_refundflow(args)  # raises a usage error for a command or option it does not have
    assert _parse_refundflow(["outbox", "--retry-parked"])["retry_parked"] is True
