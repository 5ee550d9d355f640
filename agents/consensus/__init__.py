"""Consensus among agents: signed 2/3-majority votes and PBFT groups.

* :mod:`.votes` — proposals, signed votes and announced outcomes (the
  tally itself is :class:`robeing.protocol.voting.Tally`);
* :mod:`.bft_host` — hosts one PBFT replica (:class:`robeing.protocol.pbft.Replica`)
  per group an agent is a member of, and carries its actions;
* :mod:`.bft_client` — commits values through a group (``f + 1`` matching replies);
* :mod:`.host` — installs all of it on an agent's context, records evidence.

From an app or a program::

    from robeing.agents.consensus import propose, bft_commit, vote_policy

    decision = await propose(client, {"deploy": "v2"}, deadline=10)
    result = await bft_commit(client, GroupSpec.build("orders", ids), {"limit": 5})
"""

from ...protocol.ballots import AnnouncedOutcome
from ...protocol.pbft import GroupSpec, parse_groups
from .bft_client import BftResult, ConsensusTimeout
from .host import (
    Consensus,
    bft_commit,
    consensus_of,
    ensure_consensus,
    install_consensus,
    propose,
    vote_policy,
)
from .votes import Ballot, VotePolicy

__all__ = [
    "AnnouncedOutcome",
    "Ballot",
    "BftResult",
    "Consensus",
    "ConsensusTimeout",
    "GroupSpec",
    "VotePolicy",
    "bft_commit",
    "consensus_of",
    "ensure_consensus",
    "install_consensus",
    "parse_groups",
    "propose",
    "vote_policy",
]
