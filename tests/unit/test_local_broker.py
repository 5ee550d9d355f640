"""deploy/local-broker.sh on a machine without RabbitMQ: it installs it when it may, and says
exactly what to run when it may not (every system command is a stub recording its calls)."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local-broker.sh"

# name -> body of a stub; $LOG gets one line per call, $STATE holds what "happened".
STUBS = {
    "curl": 'echo "curl $*" >> "$LOG"; test -e "$STATE/plugins"',
    "sudo": 'echo "sudo $*" >> "$LOG"; exit 1',
    "apt-get": 'echo "apt-get $*" >> "$LOG"\n'
    'case "$*" in *install*) for c in rabbitmqctl rabbitmq-plugins rabbitmq-server; do\n'
    '  cp "$STUBS/.$c" "$STUBS/$c"; chmod +x "$STUBS/$c"; done;; esac',
    ".rabbitmqctl": 'echo "rabbitmqctl $*" >> "$LOG"\n'
    'case "$*" in *status*) test -e "$STATE/started";; *) exit 0;; esac',
    ".rabbitmq-plugins": 'echo "rabbitmq-plugins $*" >> "$LOG"; touch "$STATE/plugins"',
    ".rabbitmq-server": 'echo "rabbitmq-server $*" >> "$LOG"; touch "$STATE/started"',
    "systemctl": 'echo "systemctl $*" >> "$LOG"; touch "$STATE/started"',
    "service": 'echo "service $*" >> "$LOG"; exit 1',
    "sleep": "exit 0",
}


def run(tmp_path: Path, uid: int, ready: bool = False) -> tuple[int, str, list[str]]:
    stubs, state = tmp_path / "bin", tmp_path / "state"
    stubs.mkdir()
    state.mkdir()
    for name, body in {**STUBS, "id": f"echo {uid}"}.items():
        path = stubs / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    if ready:
        (state / "plugins").touch()
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "LOG": str(log),
        "STATE": str(state),
        "STUBS": str(stubs),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stderr, log.read_text().splitlines()


def test_without_rabbitmq_and_without_root_it_says_exactly_what_to_run(tmp_path: Path) -> None:
    code, err, calls = run(tmp_path, uid=1000)
    assert code == 1, err
    assert "sudo apt-get update && sudo apt-get install -y rabbitmq-server" in err
    assert "docker run -d --name rabbitmq" in err
    assert not [c for c in calls if c.startswith("apt-get")], calls


def test_as_root_it_installs_starts_and_enables_the_plugins(tmp_path: Path) -> None:
    code, err, calls = run(tmp_path, uid=0)
    assert code == 0, err
    assert "apt-get install -y -q rabbitmq-server" in calls, calls
    assert any(c.startswith(("rabbitmq-server -detached", "systemctl start")) for c in calls)
    assert (
        "rabbitmq-plugins -q enable rabbitmq_management rabbitmq_event_exchange rabbitmq_prometheus"
        in calls
    ), calls
    assert "rabbitmq ready" in err


def test_a_ready_broker_is_left_alone(tmp_path: Path) -> None:
    code, err, calls = run(tmp_path, uid=1000, ready=True)
    assert code == 0 and "rabbitmq ready" in err
    assert all(c.startswith(("curl", "sudo -n true")) for c in calls), calls
