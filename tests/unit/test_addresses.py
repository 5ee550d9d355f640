"""Several broker addresses: parsing, validation, failover order, management URLs."""

from __future__ import annotations

import asyncio

import pytest

from robeing.agents.settings import Settings
from robeing.broker.addresses import (
    amqp_urls,
    default_management_urls,
    failover_order,
    management_urls,
    safe,
)
from robeing.broker.failover import CLUSTER_HEARTBEAT_S, Nodes, confirmed
from robeing.broker.management import (
    ManagementSettings,
    vhost_of,
    with_credentials,
    with_vhost,
)
from robeing.protocol.errors import ConfigError

THREE = "amqp://u:p@r1:5672/prod,amqp://u:p@r2:5672/prod, amqp://u:p@r3:5673/prod"


def test_a_comma_separated_list_gives_every_node_in_order() -> None:
    """Given three URLs (spaces allowed after commas), Expect the three, stripped, in order."""
    assert amqp_urls(THREE) == (
        "amqp://u:p@r1:5672/prod",
        "amqp://u:p@r2:5672/prod",
        "amqp://u:p@r3:5673/prod",
    )
    assert amqp_urls("amqps://u:p@one/") == ("amqps://u:p@one/",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("amqp://a/v,,amqp://b/v", r"empty entry \(number 2 of 3\)"),
        ("amqp://a/v,", r"empty entry \(number 2 of 2\)"),
        ("", r"empty entry \(number 1 of 1\)"),
        ("amqp://a/v;amqp://b/v", "with ',', not ';'"),
        ("amqp://a/v,http://b/v", "must start with amqp:// or amqps://, got 'http://b/v'"),
        ("amqp://a/v,b:5672/v", "must start with amqp://"),
        ("amqp://a/one,amqp://b/two", "different vhosts .'one', 'two'."),
        ("amqp://a/v,amqp://a/v", "names the same URL twice"),
        ("amqp://u:p@a/v,amqp://u:q@b/v", "log in differently"),
        ("amqp://u:p@a/v,amqp://b/v", "log in differently"),
        ("amqp:///v", "names no host"),
        ("amqp://a:port/v", "amqp://a:port/v"),
    ],
)
def test_a_bad_list_is_one_line_naming_the_problem(raw: str, message: str) -> None:
    """Given a bad AMQP_URL list, Expect one ConfigError line that says what is wrong."""
    with pytest.raises(ConfigError, match=message) as exc:
        amqp_urls(raw)
    assert "\n" not in str(exc.value)


def test_errors_never_show_a_password() -> None:
    """Given a bad list with passwords, Expect the message without them."""
    with pytest.raises(ConfigError) as exc:
        amqp_urls("amqp://u:secret@a/v;amqp://u:secret@b/v")
    assert "secret" not in str(exc.value)
    assert safe("amqp://u:secret@a/v,amqp://u:secret@b/v") == "amqp://u@a/v,amqp://u@b/v"


def test_settings_refuse_a_bad_list_and_take_a_good_one() -> None:
    """Expect Settings to validate AMQP_URL and ROBEING_MANAGEMENT_URL lists alike."""
    assert Settings(amqp_url=THREE).amqp_url == THREE
    with pytest.raises(ConfigError, match="different vhosts"):
        Settings(amqp_url="amqp://a/x,amqp://b/y")
    with pytest.raises(ConfigError, match="http"):
        Settings(management_url="http://a:15672,amqp://b:15672")
    env = {"AMQP_URL": THREE, "ROBEING_MANAGEMENT_URL": "https://m1,https://m2"}
    assert Settings.from_env(env).management_url == "https://m1,https://m2"


def test_the_failover_order_is_a_per_process_shuffle() -> None:
    """Given one list, Expect the same seed to give the same order, and many seeds
    (a fleet) to start on every node about equally often."""
    urls = amqp_urls(THREE)
    assert failover_order(urls, "worker-1:42") == failover_order(urls, "worker-1:42")
    assert sorted(failover_order(urls, 7)) == sorted(urls)
    firsts = [failover_order(urls, f"worker-{i}:{1000 + i}")[0] for i in range(300)]
    counts = [firsts.count(u) for u in urls]
    assert min(counts) > 60, counts  # 100 expected each; a fixed order would give 300/0/0


def test_vhost_and_credentials_apply_to_every_entry() -> None:
    """Given a list, Expect its vhost, and a changed vhost or login on every entry."""
    assert vhost_of(THREE) == "prod"
    moved = with_vhost(THREE, "test/1")
    assert amqp_urls(moved) and all(u.endswith("/test%2F1") for u in amqp_urls(moved))
    login = with_credentials(THREE, "w-1", "pw")
    assert all(u.startswith("amqp://w-1:pw@r") for u in amqp_urls(login))


def test_the_management_api_defaults_to_each_node_and_can_be_overridden() -> None:
    """Given an AMQP list, Expect http://<host>:15672 per node (once per host); given
    ROBEING_MANAGEMENT_URL, Expect it instead, validated."""
    assert default_management_urls(THREE) == (
        "http://r1:15672",
        "http://r2:15672",
        "http://r3:15672",
    )
    assert default_management_urls("amqp://a:5681/,amqp://a:5682/") == ("http://a:15672",)
    s = ManagementSettings.from_amqp_url(THREE)
    assert (s.base_url, s.username, s.password) == (
        "http://r1:15672,http://r2:15672,http://r3:15672",
        "u",
        "p",
    )
    s = ManagementSettings.from_amqp_url(THREE, override="https://m1:443/,https://m2")
    assert s.base_url == "https://m1:443,https://m2"
    with pytest.raises(ConfigError, match="empty entry"):
        management_urls("http://a,,http://b")


def test_on_a_cluster_a_short_amqp_heartbeat_is_asked_for_unless_set() -> None:
    """Given several nodes, Expect each address to ask for a short heartbeat (a paused
    node keeps TCP open) unless its URL sets one; given one node, Expect it untouched."""
    nodes = Nodes(amqp_urls("amqp://a/v%2Fx,amqp://b/v%2Fx?heartbeat=7"), seed=1)
    assert sorted(nodes.addresses) == [
        f"amqp://a/v%2Fx?heartbeat={CLUSTER_HEARTBEAT_S}",
        "amqp://b/v%2Fx?heartbeat=7",
    ]
    assert Nodes(["amqp://a/"], seed=1).addresses == ["amqp://a/"]


async def test_a_confirm_cancelled_by_a_dying_connection_is_a_connection_error() -> None:
    """Given a publish whose confirm aiormq cancels (its connection died), Expect a
    ConnectionError (retried as a lost connection); given our own task cancelled,
    Expect the cancellation to propagate."""

    async def cancelled_inside() -> None:
        raise asyncio.CancelledError

    with pytest.raises(ConnectionError, match="waiting for the broker's confirm"):
        await confirmed(cancelled_inside())

    waiting = asyncio.create_task(confirmed(asyncio.sleep(10)))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
