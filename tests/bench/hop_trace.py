"""Where a task's round trip goes: the median time of each hop and each stage.

Usage::

    python tests/bench/hop_trace.py [--rtt 300]

Runs ``bench_tasks.py --systems robeing`` with every robeing process (client,
coordinator, workers) timestamping, with the wall clock shared by processes
on one machine, each ``publish`` it starts and each delivery it starts
handling. It does so through a ``sitecustomize`` module put on
``PYTHONPATH`` for that run, so robeing itself carries no tracing code. In the
one-task-at-a-time phase the events of a task form a chain::

    client publishes → coordinator takes it → coordinator publishes the assignment
    → worker takes it → worker publishes the result → coordinator takes it
    → coordinator publishes the final → client takes it

and the script prints the median of each step over the chains it finds. A
``publish → take`` step is a broker hop (socket writes, broker, frame
parsing); a ``take → publish`` step is work in one process (opening and
sealing envelopes, scheduling, the handler).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SITECUSTOMIZE = """
import os, time
_dir = os.environ.get("ROBEING_HOP_TRACE_DIR")
if _dir:
    try:
        from robeing.broker import amqp as _amqp
    except ImportError:
        _amqp = None
if _dir and _amqp is not None:
    _fh = open(os.path.join(_dir, f"{os.getpid()}.log"), "a", buffering=1)
    _publish = _amqp.AmqpTransport.publish
    _consume = _amqp.AmqpTransport.consume

    async def publish(self, exchange, routing_key, body, **kw):
        _fh.write(f"{time.time_ns()} P {exchange}|{routing_key}\\n")
        return await _publish(self, exchange, routing_key, body, **kw)

    async def consume(self, spec, handler, *args, **kw):
        async def traced(delivery):
            _fh.write(f"{time.time_ns()} D {spec.name}\\n")
            return await handler(delivery)
        return await _consume(self, spec, traced, *args, **kw)

    _amqp.AmqpTransport.publish = publish
    _amqp.AmqpTransport.consume = consume
"""

# A chain is these events in this order: (what happens, event kind, test on where).
CHAIN = (
    ("client publishes the submission", "P", lambda w: w.startswith("robeing.events|task.")),
    ("coordinator takes it", "D", lambda w: w == "robeing.coordinator.tasks"),
    ("coordinator publishes the assignment", "P", lambda w: "|robeing.work." in w),
    ("worker takes it", "D", lambda w: w.startswith("robeing.work.")),
    ("worker publishes the result", "P", lambda w: w.startswith("robeing.direct|")),
    ("coordinator takes the result", "D", lambda w: w.startswith("robeing.agent.")),
    ("coordinator publishes the final", "P", lambda w: "|robeing.reply." in w),
    ("client takes the final", "D", lambda w: w.startswith("robeing.reply.")),
)


def load(directory: str) -> list[tuple[int, str, str]]:
    events = []
    for path in glob.glob(os.path.join(directory, "*.log")):
        with open(path) as fh:
            for line in fh:
                t, kind, where = line.split(maxsplit=2)
                events.append((int(t), kind, where.strip()))
    events.sort()
    return events


def chains(events: list[tuple[int, str, str]]) -> list[list[int]]:
    """Complete chains whose events are consecutive among the chain-relevant ones."""
    steps = []
    for t, kind, where in events:
        for index, (_, step_kind, test) in enumerate(CHAIN):
            if kind == step_kind and test(where):
                steps.append((t, index))
                break
    found, i = [], 0
    while i + len(CHAIN) <= len(steps):
        window = steps[i : i + len(CHAIN)]
        if [index for _, index in window] == list(range(len(CHAIN))):
            found.append([t for t, _ in window])
            i += len(CHAIN)
        else:
            i += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", type=int, default=300, help="one-at-a-time tasks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="robeing-hop-trace-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        logs = Path(tmp) / "logs"
        logs.mkdir()
        env = {
            **os.environ,
            "ROBEING_HOP_TRACE_DIR": str(logs),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        }
        subprocess.run(
            [
                *(sys.executable, str(HERE / "bench_tasks.py"), "--systems", "robeing"),
                *("--n", "200", "--warmup", "200", "--rtt", str(args.rtt), "--decisions", "0"),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        found = chains(load(str(logs)))
    if not found:
        raise SystemExit("no complete chain found")
    print(f"{len(found)} one-at-a-time tasks; median of each step, ms")
    for k in range(1, len(CHAIN)):
        step = statistics.median((c[k] - c[k - 1]) / 1e6 for c in found)
        kind = "hop " if CHAIN[k][1] == "D" else "work"
        print(f"  {kind}  {step:6.3f}  {CHAIN[k - 1][0]} -> {CHAIN[k][0]}")
    total = statistics.median((c[-1] - c[0]) / 1e6 for c in found)
    print(f"  total {total:6.3f}  (from the submission's publish; sealing it comes before)")


if __name__ == "__main__":
    main()
