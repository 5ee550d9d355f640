"""A handler for transferred files: records what arrived, then deletes the spool file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from robeing.agents import App, Message

app = App(name="transfer")


@app.handler("blob")
def blob(msg: Message) -> None:
    info = dict(msg.payload)
    out = os.environ.get("SAMPLE_OUT")
    if out:
        with open(Path(out) / f"{msg.agent.id}.blobs", "a") as fh:
            fh.write(json.dumps(info) + "\n")
    Path(info["file"]).unlink(missing_ok=True)
