"""Specification of the management module's pure parts: URLs and settings."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from robeing.broker.management import (
    ManagementSettings,
    has_credentials,
    vhost_of,
    with_credentials,
)


@pytest.mark.parametrize(
    "url, named",
    [
        ("amqp://rabbit:5672/", False),
        ("amqp://rabbit/prod", False),
        ("amqp://@rabbit/", False),
        ("amqp://worker-1@rabbit/", True),
        ("amqps://worker-1:secret@rabbit:5671/prod", True),
    ],
)
def test_has_credentials_means_a_user_is_named(url: str, named: bool) -> None:
    assert has_credentials(url) is named


def test_with_credentials_percent_encodes_and_keeps_host_port_and_vhost() -> None:
    """Given a user with ':' (valid in agent ids) and a password with URL characters,
    expect them encoded so the URL still parses back to the same login."""
    url = with_credentials("amqp://rabbit:5672/prod%2Fa", "node:1", "p@ss/w:rd%")

    parts = urlsplit(url)
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == (
        "node:1",
        "p@ss/w:rd%",
    )
    assert (parts.hostname, parts.port, vhost_of(url)) == ("rabbit", 5672, "prod/a")


def test_with_credentials_replaces_a_login_already_there() -> None:
    url = with_credentials("amqp://guest:guest@[::1]:5672/", "worker-1", "pw")
    assert url == "amqp://worker-1:pw@[::1]:5672/"


def test_management_settings_never_show_the_password() -> None:
    settings = ManagementSettings.from_amqp_url("amqp://admin:s3cret@rabbit/")
    assert settings.password == "s3cret"
    assert "s3cret" not in repr(settings)
