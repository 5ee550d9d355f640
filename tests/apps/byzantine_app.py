"""A Byzantine agent for tests, loaded with ``--app apps.byzantine_app``.

It hosts the PBFT groups of ``ROBEING_BFT_GROUP`` like :mod:`apps.consensus_app`,
but lies with valid signatures of its own:

* votes: on every proposal it votes approve twice (a duplicate), then reject
  (an equivocation), then forges a reject vote in another participant's name
  (its own signature, so it does not verify); when it is not a participant it
  votes anyway.
* PBFT: after each prepare and commit its replica sends, it sends a
  conflicting one for the same slot (equivocation), one claiming to come from
  another member (forged), and random bytes (garbage).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from apps.consensus_app import GROUPS

from robeing.agents import AgentContext, App, Message
from robeing.agents.consensus import ensure_consensus
from robeing.agents.consensus.bft_host import BftGroup, Tamper
from robeing.agents.consensus.votes import send_vote
from robeing.protocol.evidence import ed25519_signer
from robeing.protocol.pbft import Commit, Prepare, sign
from robeing.protocol.pbft import Message as PbftMessage
from robeing.protocol.voting import Choice, Vote, sign_vote, vote_signing_bytes

app = App(name="byzantine")


@app.on_start
async def start(agent: AgentContext) -> None:
    consensus = await ensure_consensus(agent, GROUPS)
    agent.handle("vote.propose", lie_in_votes, replace=True)
    for group in consensus.groups.values():
        group.tamper = equivocate(agent, group)


async def lie_in_votes(msg: Message) -> None:
    agent, p = msg.agent, msg.payload
    pid, participants, me = str(p["id"]), sorted(map(str, p["participants"])), msg.agent.id
    signer = ed25519_signer(agent.identity.signing_key)
    votes = [sign_vote(pid, me, Choice.APPROVE, signer)]
    if me in participants:
        votes += [votes[0], sign_vote(pid, me, Choice.REJECT, signer)]
        victim = next((x for x in participants if x != me), None)
        if victim is not None:
            forged = signer(vote_signing_bytes(pid, victim, Choice.REJECT))
            votes.append(Vote(pid, victim, Choice.REJECT, forged))
    for vote in votes:
        await send_vote(agent, msg.sender, msg.envelope.reply_to or "", vote)


def equivocate(agent: AgentContext, group: BftGroup) -> Tamper:
    signer = ed25519_signer(agent.identity.signing_key)
    others = [m for m in group.spec.members if m != agent.id]

    def tamper(peer: str, msg: PbftMessage) -> Iterator[PbftMessage | bytes]:
        yield msg
        if isinstance(msg, Prepare | Commit):
            yield sign(dataclasses.replace(msg, digest=os.urandom(32)), signer)
            yield sign(dataclasses.replace(msg, replica=others[0]), signer)
            yield os.urandom(48)

    return tamper
