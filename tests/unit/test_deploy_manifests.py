"""The Kubernetes manifests in deploy/k8s, as `kubectl kustomize` renders them, keep what
the deployment promises (deploy/README.md, "Kubernetes"):

* five workers with requests 1Gi / 500m and limits 2Gi / 1000m; two coordinators that
  roll one at a time (one active, one standby on the lock);
* a PodDisruptionBudget and topology spread for every role; startup, readiness and
  liveness probes on every agent container, the HTTP ones on the metrics port;
* ROBEING_RESOURCES built from the container's own limits (downward API) in a form
  robeing reads back as exactly those limits;
* every $(VAR) in an environment value defined before it (Kubernetes expands nothing
  else);
* the KEDA ScaledObject scaling the worker Deployment on the real task queue and the
  coordinator's real series; the RabbitMQ component's three nodes, its definitions the
  same as Compose's, and the agents given all three nodes.

Skipped, with the reason, where kubectl is not installed (CI has it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from robeing.agents import metrics
from robeing.broker import topology as topo
from robeing.protocol.coordinator.queries import KINDS
from robeing.protocol.resources import Resources, parse_resources

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
ROLES = ("coordinator", "worker", "specialist", "messenger", "guardian")
FULL, BASE, OWN_BROKER = "", "base", "overlays/own-broker"
VARIANTS = (FULL, BASE, OWN_BROKER)
GiB = 2**30

Doc = dict[str, Any]

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (which renders deploy/k8s) is not installed"
)


@cache
def render(variant: str) -> tuple[Doc, ...]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / variant)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {variant or '.'}: {out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def objects(variant: str, kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in render(variant) if d["kind"] == kind}


def agent_container(deployment: Doc) -> Doc:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert container["name"] == "agent"
    return container


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def config(variant: str) -> dict[str, str]:
    return objects(variant, "ConfigMap")["robeing-config"]["data"]


def quantity(text: str | int) -> Fraction:
    """A Kubernetes quantity (the suffixes these manifests use)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?", str(text))
    assert m, f"not a quantity: {text!r}"
    scale = {None: 1, "m": Fraction(1, 1000), "k": 10**3, "M": 10**6, "G": 10**9}
    scale |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return Fraction(m.group(1)) * scale[m.group(2)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_role_has_its_deployment_and_disruption_budget(variant: str) -> None:
    """Expect one Deployment per role, and one PodDisruptionBudget per role selecting exactly
    that role's pods and letting at most one go at a time."""
    deployments, budgets = objects(variant, "Deployment"), objects(variant, "PodDisruptionBudget")
    assert set(ROLES) <= set(deployments)
    for role in ROLES:
        pods = deployments[role]["spec"]["template"]["metadata"]["labels"]
        assert pods["app.kubernetes.io/component"] == role
        selecting = [
            name
            for name, pdb in budgets.items()
            if pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()
        ]
        assert selecting == [role], f"{role}: budgets {selecting}"
        assert budgets[role]["spec"].get("maxUnavailable") == 1
        assert "minAvailable" not in budgets[role]["spec"]


def test_five_workers_with_the_designs_requests_and_limits() -> None:
    """Five replicas; with KEDA, at least five, and the count left to the ScaledObject (a
    replicas field would be set back at every apply, in the middle of a burst)."""
    assert objects(BASE, "Deployment")["worker"]["spec"]["replicas"] == 5
    for variant in (FULL, OWN_BROKER):
        assert "replicas" not in objects(variant, "Deployment")["worker"]["spec"]
        (scaled,) = objects(variant, "ScaledObject").values()
        assert scaled["spec"]["minReplicaCount"] == 5
    for variant in VARIANTS:
        worker = objects(variant, "Deployment")["worker"]
        res = agent_container(worker)["resources"]
        assert quantity(res["requests"]["memory"]) == 1 * GiB
        assert quantity(res["requests"]["cpu"]) == Fraction(1, 2)
        assert quantity(res["limits"]["memory"]) == 2 * GiB
        assert quantity(res["limits"]["cpu"]) == 1


def test_two_coordinators_roll_one_at_a_time() -> None:
    """Two replicas (one wins the lock, one waits as standby); a rollout starts a new pod
    before it stops an old one, so one is always there to lead."""
    for variant in VARIANTS:
        coordinator = objects(variant, "Deployment")["coordinator"]
        assert coordinator["spec"]["replicas"] == 2
        strategy = coordinator["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        assert env_of(agent_container(coordinator))["AGENT_ROLE"]["valueFrom"]["fieldRef"] == {
            "fieldPath": "metadata.labels['app.kubernetes.io/component']"
        }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_agent_container_has_startup_readiness_and_liveness_probes(variant: str) -> None:
    """Startup and readiness ask GET /healthz on the metrics port, which the agent serves
    (ROBEING_METRICS_PORT in the ConfigMap); liveness runs `robeing agent --check`."""
    port = int(config(variant)["ROBEING_METRICS_PORT"])
    for name, deployment in objects(variant, "Deployment").items():
        container = agent_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == port, name
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name
        liveness = " ".join(container["livenessProbe"]["exec"]["command"])
        assert 'robeing agent --role "$AGENT_ROLE" --id "$AGENT_ID" --check' in liveness, name
        spec = deployment["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > float(
            config(variant)["ROBEING_GRACE_PERIOD"]
        )
        spread = spec["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}, name
        for c in spread:
            assert "app.kubernetes.io/component" in c["matchLabelKeys"], name


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion; an undefined reference fails the test."""

    def one(m: re.Match[str]) -> str:
        assert m.group(1) in defined, f"$({m.group(1)}) is not defined before it is used"
        return defined[m.group(1)]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, value)


def field_of(deployment: Doc, path: str) -> str:
    """A pod field through the downward API: its name or one of its labels."""
    if path == "metadata.name":
        return f"{deployment['metadata']['name']}-5d9c7b-x2x4q"  # the shape of a pod name
    m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
    assert m, f"unexpected fieldRef {path}"
    return str(deployment["spec"]["template"]["metadata"]["labels"][m.group(1)])


def environment(variant: str, deployment: Doc) -> dict[str, str]:
    """The agent container's environment as the kubelet builds it: the ConfigMap, then each
    variable in order, with the downward API's values for its own limits."""
    container = agent_container(deployment)
    assert container["envFrom"] == [{"configMapRef": {"name": "robeing-config"}}]
    defined = dict(config(variant))
    limits = container["resources"]["limits"]
    for e in container["env"]:
        if "value" in e:
            defined[e["name"]] = expand(e["value"], defined)
        elif "resourceFieldRef" in e["valueFrom"]:
            ref = e["valueFrom"]["resourceFieldRef"]
            assert ref["containerName"] == "agent"
            resource = ref["resource"].removeprefix("limits.")
            amount = quantity(limits[resource]) / quantity(ref["divisor"])
            assert amount.denominator == 1, "the downward API would round this up"
            defined[e["name"]] = str(amount.numerator)
        elif "fieldRef" in e["valueFrom"]:
            defined[e["name"]] = field_of(deployment, e["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            defined[e["name"]] = f"<{e['name']}>"  # a Secret: opaque here
    return defined


@pytest.mark.parametrize("variant", VARIANTS)
def test_robeing_resources_are_the_containers_own_limits(variant: str) -> None:
    """Every role but the coordinator contributes its limits to the pool, through the
    downward API; what robeing parses is exactly those limits (the worker's: 1 core, 2 GiB)."""
    for name, deployment in objects(variant, "Deployment").items():
        env = environment(variant, deployment)
        if name == "coordinator":
            assert "ROBEING_RESOURCES" not in env
            continue
        limits = agent_container(deployment)["resources"]["limits"]
        got = parse_resources(env["ROBEING_RESOURCES"])
        assert got == Resources(
            cpu=float(quantity(limits["cpu"])), memory=int(quantity(limits["memory"]))
        ), name
    worker = environment(variant, objects(variant, "Deployment")["worker"])
    assert parse_resources(worker["ROBEING_RESOURCES"]) == Resources(cpu=1.0, memory=2 * GiB)


@pytest.mark.parametrize("variant", VARIANTS)
def test_amqp_url_is_built_from_variables_defined_before_it(variant: str) -> None:
    for name, deployment in objects(variant, "Deployment").items():
        env = environment(variant, deployment)
        assert env["AGENT_ROLE"] == name and env["AGENT_ID"].startswith(f"{name}-")
        url = env["AMQP_URL"]
        assert url.startswith(f"amqp://pool.{name}:<ROBEING_BROKER_PASSWORD>@"), url
        secret = env_of(agent_container(deployment))["ROBEING_BROKER_PASSWORD"]
        assert secret["valueFrom"]["secretKeyRef"]["name"] == f"robeing-broker-{name}"


def test_the_scaled_object_scales_workers_on_the_task_queue_and_waiting_tasks() -> None:
    for variant in (FULL, OWN_BROKER):
        (scaled,) = objects(variant, "ScaledObject").values()
        spec = scaled["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "worker",
        }
        assert spec["minReplicaCount"] == objects(BASE, "Deployment")["worker"]["spec"]["replicas"]
        assert spec["maxReplicaCount"] > spec["minReplicaCount"]
        triggers = {t["type"]: t for t in spec["triggers"]}
        rabbit = triggers["rabbitmq"]["metadata"]
        assert rabbit["queueName"] == topo.TASK_QUEUE
        # Submissions stay unacknowledged until their results are stored: only the
        # management API counts them (AMQP counts ready messages only).
        assert rabbit["protocol"] == "http" and rabbit.get("excludeUnacknowledged") in (
            None,
            "false",
        )
        assert rabbit["mode"] == "QueueLength"
        auth = triggers["rabbitmq"]["authenticationRef"]["name"]
        assert auth in objects(variant, "TriggerAuthentication")
        query = triggers["prometheus"]["metadata"]["query"]
        series = metrics.P + "coordinator_tasks_waiting"
        m = re.fullmatch(rf'sum\({series}\{{kind=~"([a-z|]+)"\}}\)', query)
        assert m, query
        assert set(m.group(1).split("|")) <= set(KINDS)
        assert triggers["prometheus"]["metadata"]["serverAddress"].startswith("http")
    assert not objects(BASE, "ScaledObject")


def test_the_rabbitmq_component_runs_three_nodes_with_composes_definitions() -> None:
    (cluster,) = objects(FULL, "RabbitmqCluster").values()
    assert cluster["spec"]["replicas"] == 3
    assert (
        "load_definitions = /etc/rabbitmq/robeing/definitions.json"
        in (cluster["spec"]["rabbitmq"]["additionalConfig"])
    )
    assert "rabbitmq_event_exchange" in cluster["spec"]["rabbitmq"]["additionalPlugins"]
    definitions = objects(FULL, "ConfigMap")["rabbitmq-definitions"]["data"]["definitions.json"]
    assert definitions == (DEPLOY / "rabbitmq" / "definitions.json").read_text()
    for name, deployment in objects(FULL, "Deployment").items():
        urls = environment(FULL, deployment)["AMQP_URL"].split(",")
        assert [u.split("@")[1] for u in urls] == [
            f"rabbitmq-server-{i}.rabbitmq-nodes.robeing.svc:5672/" for i in range(3)
        ], name
    for variant in (BASE, OWN_BROKER):
        assert not objects(variant, "RabbitmqCluster")
        for deployment in objects(variant, "Deployment").values():
            address = config(variant)["ROBEING_BROKER_ADDRESS"]
            assert environment(variant, deployment)["AMQP_URL"].endswith(f"@{address}/")
