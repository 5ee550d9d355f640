#!/usr/bin/env python3
"""The image's health check: is the agent in this container ready?

    robeing-healthcheck            (installed so in the image; Docker HEALTHCHECK, Compose)

Asks ``GET http://127.0.0.1:$ROBEING_METRICS_PORT/healthz`` of the agent's metrics
server, which answers 200 while the agent has started and is connected to the
broker, 503 with its state otherwise (agents/metrics.py). Exit 0 when healthy,
1 when not, with the reason on one line. Without a metrics port (unset or 0,
a port picked at random) there is nothing to ask, and the check passes: the
container is then judged by its restart policy alone.

Only the standard library, so a check costs a few milliseconds of Python start
and no import of robeing.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def check(port: str | None) -> tuple[int, str]:
    """(exit code, one line) for the agent whose metrics are on ``port``."""
    if not port or port.strip() == "0":
        return 0, "no ROBEING_METRICS_PORT: nothing to check"
    url = f"http://127.0.0.1:{port.strip()}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return 0, resp.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return 1, f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}"
    except (OSError, ValueError) as exc:
        return 1, f"{url}: {getattr(exc, 'reason', exc)}"


def main() -> int:
    code, line = check(os.environ.get("ROBEING_METRICS_PORT"))
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
