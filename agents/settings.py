"""Typed settings: built once at the entry point (CLI or Python) and passed down.

Nothing below the entry point reads ``os.environ``; the CLI maps each option
to its environment variable (the seed's ``AGENT_ROLE``, ``SPECIALIZATION``,
``CLUSTER_ID``, ``AGENT_COUNT`` and ``AMQP_URL`` keep working), and Python
programs read the same variables with :meth:`Settings.from_env` (what
``Client()`` does without settings).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..broker.addresses import amqp_urls, management_urls
from ..broker.topology import TopologySettings
from ..protocol.clusters.names import DEFAULT_CLUSTER, check_cluster_name
from ..protocol.errors import ConfigError
from ..protocol.failure_detector import DetectorConfig
from ..protocol.pbft import GroupSpec, parse_groups
from ..protocol.resources import InvalidResources, Resources, parse_resources
from ..protocol.roles import AGENT_ROLES, ROLES

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_KEYS_DIR = Path(".robeing/keys")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def default_agent_id(role: str) -> str:
    """``<role>-<host>-<pid>``: unique per process on a machine, readable in the UI.

    Clients get ``cli-<host>``: one identity per machine, so command-line use
    does not leave a new key pair behind for every invocation.
    """
    host = socket.gethostname().split(".")[0] or "host"
    if role == "client":
        return f"cli-{host}"
    return f"{role}-{host}-{os.getpid()}"


def check_agent_id(agent_id: str) -> str:
    """Validate an agent id (it becomes part of queue names and routing keys).

    Raises:
        ConfigError: empty, too long, or with characters outside ``[A-Za-z0-9_.:-]``.
    """
    if not _ID_RE.match(agent_id) or agent_id == "*":
        raise ConfigError(
            f"invalid agent id {agent_id!r}: use letters, digits, '_', '.', ':' or '-' (max 128)"
        )
    return agent_id


def parse_specializations(values: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, float]]:
    """Split ``("analysis:0.9", "nlp")`` into skills and the proficiency given with them.

    A suffix that is not a number stays part of the name (``:`` is allowed in names).

    Raises:
        ConfigError: a proficiency outside ``[0, 1]``.
    """
    skills: list[str] = []
    levels: dict[str, float] = {}
    for value in values:
        name, sep, level = value.rpartition(":")
        try:
            number = float(level) if sep and name else None
        except ValueError:
            number = None
        if number is None:
            skills.append(value)
            continue
        if not 0.0 <= number <= 1.0:
            raise ConfigError(f"proficiency in {value!r} must be between 0 and 1")
        skills.append(name)
        levels[name] = number
    return tuple(dict.fromkeys(skills)), levels


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an agent process needs to run.

    Attributes:
        role: one of coordinator, specialist, worker, messenger, guardian
            (``client`` for submitters).
        agent_id: unique id; default ``<role>-<host>-<pid>``.
        specializations: skills offered (e.g. ``data_processing``); a skill
            may carry the proficiency its agent claims in it, ``analysis:0.9``
            (in ``[0, 1]``; without one it counts fully), which is moved to
            ``proficiency``.
        cluster_id: the cluster this agent belongs to.
        amqp_url: broker URL including the vhost; the nodes of a cluster as
            a comma-separated list (same vhost and login in each), tried in an
            order of the process's own so that a fleet spreads over them.
        management_url: the management API (a comma-separated list for a
            cluster) when it is not ``http://<each AMQP host>:15672``.
        keys_dir: where the authority key, certificates and agent keys live.
        app: optional ``module`` or ``module:attribute`` with user handlers.
        heartbeat_interval: seconds between heartbeats.
        concurrency: messages handled at once (the prefetch), also the
            capacity announced in heartbeats.
        publish_timeout: seconds to wait for a broker confirm.
        ack_timeout: default seconds to wait for a receiver's ACK or reply.
        grace_period: seconds to finish in-flight work on SIGTERM.
        max_age: oldest accepted message timestamp, seconds.
        max_skew: furthest-future accepted message timestamp, seconds.
        cluster_key_file: optional 32-byte key file to encrypt broadcasts.
        auto_issue: issue our own certificate when the authority key is at
            hand and we have none (development; never in production).
        acceptable_pause: (coordinator) a silence this much longer than the
            heartbeat interval never makes an agent suspected.
        dead_after: (coordinator) seconds an agent stays suspected before it is
            declared dead and its tasks are reassigned.
        max_attempts: (coordinator) default executions of a task before it is
            dead-lettered.
        attempt_timeout: (coordinator) seconds an attempt may go without a
            result before it is failed and retried.
        standby: a backup in the standby pool of its specializations: it
            takes work only while a primary sharing one of them is dead.
        backup_for: the id of the one primary this agent backs up (implies
            standby): it takes work only while that primary is dead.
        bft_groups: PBFT groups to host (see ``robeing.protocol.pbft.parse_groups``);
            groups that do not list this agent are ignored.
        events_vhost: (coordinator) the vhost where the broker's event exchange
            publishes connection events (``rabbitmq_event_exchange.vhost``).
        resources: what this agent contributes to the resource pool (cpu,
            memory, storage, bandwidth); tasks that ask for resources run
            only on agents with that much free. ``None``: contributes nothing.
        state_dir: where an agent keeps what must outlive it (the quarantine
            orders it enforces), one file per agent; default: ``state``
            beside the keys directory.
        quarantine_after: (guardian) verified refusals of one sender, within
            the alert window and from at least two reporters, that quarantine it.
        verify_rate: (guardian) the fraction of finished tasks it re-runs on
            another agent to validate their results (0: none).
        anomaly_factor: (guardian) a sender this many times above its usual
            message rate is an anomaly (alerted), when also above ``anomaly_floor``.
        anomaly_floor: (guardian) messages per second below which no rate is anomalous.
        anomaly_fanout: (guardian) distinct receivers at once that make a sender anomalous.
        http: (messenger) ``HOST:PORT`` to serve the HTTP/JSON gateway on.
        http_rate: (messenger) requests per second each gateway client may
            make (twice that in a burst).
        proficiency: claimed level per skill in ``[0, 1]`` (from
            ``specializations``); the coordinator weights the skill match by it.
        metrics_port: serve Prometheus metrics on this TCP port (``/metrics``;
            0: any free port); None: no metrics.
        generated_id: set when ``agent_id`` was generated (``<role>-<host>-<pid>``):
            such an agent deletes its queues on a clean stop if they are empty,
            since no later process will ever use them.
    """

    role: str = "worker"
    agent_id: str = ""
    specializations: tuple[str, ...] = ()
    cluster_id: str = "default"
    amqp_url: str = DEFAULT_AMQP_URL
    management_url: str | None = None
    keys_dir: Path = DEFAULT_KEYS_DIR
    app: str | None = None
    heartbeat_interval: float = 1.0
    concurrency: int = 32
    publish_timeout: float = 10.0
    ack_timeout: float = 10.0
    grace_period: float = 30.0
    max_age: float = 300.0
    max_skew: float = 30.0
    cluster_key_file: Path | None = None
    auto_issue: bool = True
    acceptable_pause: float = 3.0
    dead_after: float = 2.0
    max_attempts: int = 3
    attempt_timeout: float = 3600.0
    topology: TopologySettings = field(default_factory=TopologySettings)
    generated_id: bool = False
    standby: bool = False
    backup_for: str | None = None
    bft_groups: tuple[GroupSpec, ...] = ()
    events_vhost: str = "/"
    resources: Resources | None = None
    state_dir: Path | None = None
    quarantine_after: int = 50
    verify_rate: float = 0.05
    anomaly_factor: float = 10.0
    anomaly_floor: float = 100.0
    anomaly_fanout: int = 50
    http: str | None = None
    http_rate: float = 50.0
    proficiency: dict[str, float] = field(default_factory=dict, hash=False)
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        skills, levels = parse_specializations(self.specializations)
        object.__setattr__(self, "specializations", skills)
        object.__setattr__(self, "proficiency", {**levels, **self.proficiency})
        if self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r}; choose one of {', '.join(AGENT_ROLES)}")
        if not self.agent_id:
            object.__setattr__(self, "agent_id", default_agent_id(self.role))
            object.__setattr__(self, "generated_id", True)
        check_agent_id(self.agent_id)
        check_cluster_name(self.cluster_id)
        if self.role == "coordinator" and self.cluster_id != DEFAULT_CLUSTER:
            # It would compete for the one coordinator lock and lead everyone.
            raise ConfigError(
                f"a coordinator leads the default cluster, not {self.cluster_id!r}: named "
                "clusters elect a leader among their own members (drop --cluster-id/CLUSTER_ID)"
            )
        if self.http is not None and not re.fullmatch(r"[^:\s]*:\d{1,5}", self.http):
            raise ConfigError(f"--http takes HOST:PORT, got {self.http!r}")
        if self.http_rate <= 0:
            raise ConfigError("the HTTP rate limit must be positive")
        if not 0.0 <= self.verify_rate <= 1.0 or self.quarantine_after < 1:
            raise ConfigError("verify rate must be in [0, 1] and quarantine-after at least 1")
        if self.heartbeat_interval <= 0:
            raise ConfigError("heartbeat interval must be positive")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if len(amqp_urls(self.amqp_url)) > 1 and not self.topology.clustered:
            # A cluster: per-agent queues must be redeclarable after their node is lost.
            object.__setattr__(self, "topology", replace(self.topology, clustered=True))
        if self.management_url is not None:
            management_urls(self.management_url)
        if self.backup_for is not None:
            check_agent_id(self.backup_for)
            object.__setattr__(self, "standby", True)
        for spec in self.specializations:
            if not _ID_RE.match(spec):
                raise ConfigError(f"invalid specialization {spec!r}")
        for spec, level in self.proficiency.items():
            if spec not in self.specializations or not 0.0 <= level <= 1.0:
                raise ConfigError(f"proficiency {spec}:{level} must be in [0, 1] for a skill")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port must be 0 to 65535, got {self.metrics_port}")

    def detector(self) -> DetectorConfig:
        """Failure detection tuned by these settings (a coordinator's, a cluster leader's)."""
        return DetectorConfig(
            heartbeat_interval=self.heartbeat_interval,
            acceptable_pause=self.acceptable_pause,
            dead_after=self.dead_after,
        )

    def state_file(self, kind: str) -> Path:
        """Where this agent keeps its ``kind`` state (see ``state_dir``)."""
        root = (
            self.state_dir if self.state_dir is not None else Path(self.keys_dir).parent / "state"
        )
        return root / f"{self.agent_id}.{kind}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment variables the CLI reads (``ENVIRONMENT``).

        ``overrides`` (field values) win over the environment. A client
        (``role="client"``) takes its id from ``ROBEING_CLIENT_ID``, not ``AGENT_ID``.

        Raises:
            ConfigError: a variable holds a value its field cannot take (says which).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (target, convert) in ENVIRONMENT.items():
            raw = env.get(name)
            if raw is None or raw == "" or target in values:
                continue
            try:
                values[target] = convert(raw)
            except (ValueError, InvalidResources, ConfigError) as exc:
                raise ConfigError(f"{name}={raw!r}: {exc}") from None
        values.update(overrides)
        if values.get("role") == "client" and "agent_id" not in overrides:
            values["agent_id"] = env.get("ROBEING_CLIENT_ID", "")
        return cls(**values)

    @property
    def connection_name(self) -> str:
        """Readable in the management UI: role, id and specializations."""
        from ..broker.management import vhost_of

        specs = ",".join(self.specializations) or "-"
        return (
            f"robeing {self.role} {self.agent_id} [{specs}] cluster={self.cluster_id} "
            f"vhost={vhost_of(self.amqp_url)}"
        )


def _flag(raw: str) -> bool:
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _skills(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(raw.replace(",", " ").split()))


# Environment variable -> (Settings field, how to read it): the names the CLI's
# options read (tests/unit/test_cli_options.py keeps the two lists equal).
# The first of AGENT_ROLE and ROLE (the original deployment's) that is set wins.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "AMQP_URL": ("amqp_url", str),
    "ROBEING_MANAGEMENT_URL": ("management_url", str),
    "ROBEING_KEYS": ("keys_dir", Path),
    "AGENT_ROLE": ("role", str.lower),
    "ROLE": ("role", str.lower),
    "AGENT_ID": ("agent_id", str),
    "SPECIALIZATION": ("specializations", _skills),
    "CLUSTER_ID": ("cluster_id", str),
    "ROBEING_APP": ("app", str),
    "ROBEING_CONCURRENCY": ("concurrency", int),
    "ROBEING_HEARTBEAT_INTERVAL": ("heartbeat_interval", float),
    "ROBEING_GRACE_PERIOD": ("grace_period", float),
    "ROBEING_STANDBY": ("standby", _flag),
    "ROBEING_BACKUP_FOR": ("backup_for", str),
    "ROBEING_BFT_GROUP": ("bft_groups", parse_groups),
    "ROBEING_RESOURCES": ("resources", parse_resources),
    "ROBEING_METRICS_PORT": ("metrics_port", int),
    "ROBEING_STATE_DIR": ("state_dir", Path),
    "ROBEING_QUARANTINE_AFTER": ("quarantine_after", int),
    "ROBEING_VERIFY_RATE": ("verify_rate", float),
    "ROBEING_ANOMALY_FACTOR": ("anomaly_factor", float),
    "ROBEING_ANOMALY_FLOOR": ("anomaly_floor", float),
    "ROBEING_ANOMALY_FANOUT": ("anomaly_fanout", int),
    "ROBEING_HTTP": ("http", str),
    "ROBEING_HTTP_RATE": ("http_rate", float),
    "ROBEING_ACCEPTABLE_PAUSE": ("acceptable_pause", float),
    "ROBEING_DEAD_AFTER": ("dead_after", float),
    "ROBEING_MAX_ATTEMPTS": ("max_attempts", int),
    "ROBEING_ATTEMPT_TIMEOUT": ("attempt_timeout", float),
    "ROBEING_EVENTS_VHOST": ("events_vhost", str),
    "ROBEING_QUEUE_EXPIRY": (
        "topology",
        lambda raw: TopologySettings(agent_queue_expiry_s=float(raw)),
    ),
}
