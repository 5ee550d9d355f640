"""The monitoring shipped in deploy/ matches the code: what Compose runs, what Prometheus
scrapes, what the Grafana dashboard plots, and what the agents serve (agents/metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from robeing.agents import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_rabbitmq_keeps_its_prometheus_plugin() -> None:
    """Expect the plugins file mounted into the broker to enable rabbitmq_prometheus (a mounted
    file replaces the image's own list) and the broker's metrics port to be published."""
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins
    assert "127.0.0.1:15692:15692" in compose()["services"]["rabbitmq"]["ports"]


def test_prometheus_scrapes_the_broker_and_every_agent_service() -> None:
    """Given the Compose stack, Expect a Prometheus service whose config scrapes RabbitMQ and
    each service running `robeing agent`, on the port the agents are told to serve."""
    services = compose()["services"]
    assert "prometheus" in services
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
        for job in config["scrape_configs"]
    }
    assert targets["rabbitmq"] == {"rabbitmq:15692"}
    agents = {name for name, svc in services.items() if svc.get("command", [None])[0] == "agent"}
    port = services["coordinator"]["environment"]["ROBEING_METRICS_PORT"]
    assert agents and targets["robeing"] == {f"{name}:{port}" for name in agents}


def test_the_dashboard_plots_only_series_that_exist() -> None:
    """Expect every robeing_ series in the Grafana dashboard to be one agents/metrics.py
    documents (a histogram's _bucket, _sum and _count included)."""
    documented = set(re.findall(r"``(\w+?)(?:\{[^}]*\})?``", metrics.__doc__ or ""))
    names = {f"robeing_{n}" for n in documented}
    for n in list(names):
        names |= {n + suffix for suffix in ("_bucket", "_sum", "_count")}
    dashboard = json.loads((DEPLOY / "grafana" / "robeing.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\brobeing_\w+", target["expr"])
    }
    assert used and used <= names, sorted(used - names)
