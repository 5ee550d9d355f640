"""The event loop choice (``ROBEING_LOOP`` / ``--loop``): uvloop when there, asyncio on request.

Given each choice, expect the coroutine to run on the loop it names, a bad
choice to be one ConfigError line, and the CLI to refuse an unknown value
before anything runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest
from click.testing import CliRunner

from robeing.agents import loop
from robeing.agents.cli import cli
from robeing.protocol.errors import ConfigError

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _which() -> str:
    await asyncio.sleep(0)
    return loop.loop_name()


def test_asyncio_choice_runs_on_asyncio_loop() -> None:
    assert loop.run(_which(), "asyncio") == "asyncio"


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop not installed")
@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_auto_and_uvloop_run_on_uvloop_when_installed(choice: str) -> None:
    assert loop.run(_which(), choice) == "uvloop"


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake_import(name: str) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real(name)

    monkeypatch.setattr(loop.importlib, "import_module", fake_import)


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert loop.loop_factory("auto") is None
    assert loop.run(_which(), "auto") == "asyncio"


def test_uvloop_requested_but_missing_is_one_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_uvloop(monkeypatch)
    coro = _which()
    with pytest.raises(ConfigError, match=r"uvloop is not installed") as info:
        loop.run(coro, "uvloop")
    assert "\n" not in str(info.value)
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


def test_unknown_choice_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"ROBEING_LOOP must be one of auto, uvloop, asyncio"):
        loop.loop_factory("tokio")


def test_cli_refuses_an_unknown_loop_in_one_line() -> None:
    result = CliRunner().invoke(cli, ["status", "--json"], env={"ROBEING_LOOP": "tokio"})
    assert result.exit_code == 2
    assert "Invalid value for '--loop'" in result.output
    assert "tokio" in result.output


def test_cli_verbs_run_on_the_chosen_loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Given ROBEING_LOOP=asyncio, when a verb runs its coroutine, expect that choice used."""
    seen: list[str] = []

    def spy(main: Any, choice: str = "auto") -> Any:
        seen.append(choice)
        main.close()  # no broker in unit tests: the choice is what is checked

    monkeypatch.setattr(loop, "run", spy)
    result = CliRunner().invoke(
        cli, ["--keys-dir", str(tmp_path), "status", "--json"], env={"ROBEING_LOOP": "asyncio"}
    )
    assert result.exit_code == 0, result.output
    assert seen == ["asyncio"]
