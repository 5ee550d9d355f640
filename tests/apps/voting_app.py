"""Agents whose vote policy is scripted by the proposal, loaded with ``--app apps.voting_app``.

The proposal payload may hold ``{"reject": [ids], "abstain": [ids],
"sleep": {id: seconds}}``: a listed agent rejects or abstains, or waits that
long before voting; every other agent approves. Otherwise as
:mod:`apps.consensus_app`.
"""

from __future__ import annotations

import asyncio

from apps.consensus_app import app as consensus

from robeing.agents import App
from robeing.agents.consensus import Ballot, vote_policy
from robeing.protocol.voting import Choice

app = App(name="voting")
app.include(consensus)


@vote_policy(app)
async def scripted(ballot: Ballot) -> Choice:
    script = ballot.payload if isinstance(ballot.payload, dict) else {}
    me = ballot.agent.id
    delay = dict(script.get("sleep", {})).get(me)
    if delay:
        await asyncio.sleep(float(delay))
    if me in script.get("reject", ()):
        return Choice.REJECT
    if me in script.get("abstain", ()):
        return Choice.ABSTAIN
    return Choice.APPROVE
