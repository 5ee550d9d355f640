"""Test helpers: the ``robeing`` command run as a user runs it (a subprocess, configured by
environment), and what it printed."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

# Variables that would change what the commands under test do.
LEAKY_ENV = (
    "AGENT_ROLE",
    "ROLE",
    "AGENT_ID",
    "SPECIALIZATION",
    "CLUSTER_ID",
    "AGENT_COUNT",
    "COORDINATOR_URL",
    "ROBEING_CLIENT_ID",
    "ROBEING_APP",
    "ROBEING_LOG_LEVEL",
    "ROBEING_LOG_FORMAT",
    "ROBEING_METRICS_PORT",
)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def describe(self) -> str:
        return (
            f"exit {self.code} after {self.seconds:.1f}s\nstdout:\n{self.out}\nstderr:\n{self.err}"
        )


RunCli = Callable[..., Awaitable[CliResult]]


async def run_robeing(
    *args: str,
    amqp_url: str,
    keys: Path,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> CliResult:
    """Run ``python -m robeing.agents ARGS`` with AMQP_URL and ROBEING_KEYS set (and ``env``)."""
    full = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    full.update(AMQP_URL=amqp_url, ROBEING_KEYS=str(keys), **(env or {}))
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "robeing.agents",
        *args,
        env=full,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        command = " ".join(args)
        raise AssertionError(f"robeing {command} still running after {timeout}s") from None
    assert proc.returncode is not None
    return CliResult(
        proc.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - started,
    )
