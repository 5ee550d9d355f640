"""Result validation: re-run sampled finished tasks on other agents and compare.

The guardian announces ``verify_rate`` (``--verify-rate``, default 0.05) in
its heartbeats; the coordinator samples that fraction of successful attempts
(:mod:`robeing.protocol.coordinator.audit`) and sends each as
``guardian.audit``: the task's type, input and skills, and the coordinator's
signed claim of what the agent reported. The guardian then asks another live
agent that runs the type (and has a required skill) to run it again
(``guardian.rerun``, which only guardians may send) and compares the signed
claims (:mod:`robeing.protocol.validation`). When they differ, a third agent
breaks the tie; the one outvoted two to one is blamed, the two claims that
contradict each other become signed evidence in a ``guardian.alert``, and
past ``MISMATCHES_TO_QUARANTINE`` blamed results the agent is quarantined.

Validation comes after the fact: the submitter already has the result. Its
cost is one more execution per sampled task, on another agent, and two
messages (measured in the closing note of issue 12).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from typing import Any

from ....protocol.errors import DecodeError, Reject
from ....protocol.validation import Claim, Mismatch, digest, judge
from ...context import AgentContext, Message
from ...heartbeats import AgentStatus

log = logging.getLogger(__name__)

MISMATCHES_TO_QUARANTINE = 2
MAX_PENDING = 100
CONCURRENCY = 8
ALIVE_WITHIN_S = 5.0
RERUN_TIMEOUT_S = 30.0
RUNS_TASKS = ("worker", "specialist", "messenger")


class Validator:
    """A guardian's validation of sampled results."""

    def __init__(self, agent: AgentContext, guardian: Any) -> None:
        self.agent = agent
        self.guardian = guardian  # signs quarantine orders and alerts
        self.rate = agent.settings.verify_rate
        self.agents: dict[str, AgentStatus] = {}
        self.counts: Counter[str] = Counter()
        self.blamed: Counter[str] = Counter()
        self.evidence: deque[dict[str, Any]] = deque(maxlen=20)
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._pending: set[asyncio.Task[None]] = set()

    def on_status(self, status: AgentStatus) -> None:
        self.agents[status.id] = status
        if len(self.agents) > 10_000:
            self.agents.pop(next(iter(self.agents)))

    def on_audit(self, msg: Message) -> None:
        """``guardian.audit`` from a coordinator: validate it in the background.

        Raises:
            Reject: not from a coordinator, or its claim does not verify.
        """
        if msg.sender_role != "coordinator":
            raise Reject("only coordinators hand out audits")
        p = msg.payload if isinstance(msg.payload, dict) else {}
        try:
            claim = Claim.verify(p.get("claim"), self.agent.check_signature)
        except DecodeError as exc:
            raise Reject(f"audit claim refused: {exc}") from exc
        if claim.signer != msg.sender or claim.payload != digest(p.get("payload")):
            raise Reject("the audit's claim is not about this input, or not its sender's")
        if len(self._pending) >= MAX_PENDING:
            self.counts["dropped"] += 1
            return
        skills = frozenset(s for s in p.get("skills") or () if isinstance(s, str))
        task = asyncio.create_task(self._validate(claim, p.get("payload"), skills))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _validate(self, original: Claim, payload: Any, skills: frozenset[str]) -> None:
        async with self._slots:
            self.counts["audits"] += 1
            try:
                claims = {original.computed_by: original}
                second = await self._rerun(original, payload, skills, claims)
                if second is None:
                    self.counts["no_other_agent"] += 1
                    return
                if second.result == original.result:
                    self.counts["confirmed"] += 1
                    return
                third = await self._rerun(original, payload, skills, claims)
                await self._mismatch(original, second, third)
            except Exception:
                log.exception("validating %s failed", original.task_id)
                self.counts["errors"] += 1

    async def _rerun(
        self, original: Claim, payload: Any, skills: frozenset[str], claims: dict[str, Claim]
    ) -> Claim | None:
        """Run the task on one more agent (none of ``claims``'); its verified claim, or None."""
        agent_id = self._candidate(original.type, skills, set(claims))
        if agent_id is None:
            return None
        request = {"task_id": original.task_id, "type": original.type, "payload": payload}
        answer = await self.agent.request(
            agent_id, "guardian.rerun", request, timeout=RERUN_TIMEOUT_S
        )
        claim = Claim.verify(answer.get("claim"), self.agent.check_signature)
        if (claim.signer, claim.computed_by, claim.task_id, claim.payload) != (
            agent_id,
            agent_id,
            original.task_id,
            original.payload,
        ):
            raise DecodeError(f"{agent_id}'s re-run claim is about something else")
        self.counts["reruns"] += 1
        claims[agent_id] = claim
        return claim

    def _candidate(self, task_type: str, skills: frozenset[str], exclude: set[str]) -> str | None:
        now = self.agent.clock()
        quarantine = self.agent.quarantine
        fit = [
            a
            for a in self.agents.values()
            if a.id not in exclude
            and a.role in RUNS_TASKS
            and a.state == "alive"
            and now - a.last_seen <= ALIVE_WITHIN_S
            and not quarantine.blocks(a.id)
            and (a.extra.get("task_types") is None or task_type in a.extra["task_types"])
            and (not skills or skills & set(a.specializations))
        ]
        return min(fit, key=lambda a: (a.load / max(1, a.capacity), a.id)).id if fit else None

    async def _mismatch(self, original: Claim, second: Claim, third: Claim | None) -> None:
        results = {original.computed_by: original.result, second.computed_by: second.result}
        if third is not None:
            results[third.computed_by] = third.result
        blamed = judge(results)
        evidence = Mismatch.of(original, second).to_data()
        self.counts["mismatches"] += 1
        self.evidence.append({"task_id": original.task_id, "blamed": blamed, "results": results})
        offender = blamed or original.computed_by
        log.warning("results of %s disagree %s; blamed: %s", original.task_id, results, blamed)
        await self.guardian.alert(
            offender,
            "result_mismatch",
            task_id=original.task_id,
            blamed=blamed,
            evidence=evidence,
        )
        if blamed is None:
            self.counts["inconclusive"] += 1
            return
        self.blamed[blamed] += 1
        if self.blamed[blamed] >= MISMATCHES_TO_QUARANTINE and not self.agent.quarantine.blocks(
            blamed
        ):
            tasks = tuple(e["task_id"] for e in self.evidence if e["blamed"] == blamed)
            await self.guardian.order(
                blamed,
                "quarantine",
                f"{self.blamed[blamed]} results contradicted by two other agents each",
                tasks[-8:],
            )

    def report(self) -> dict[str, Any]:
        return {
            "verify_rate": self.rate,
            "validation": {**self.counts, "blamed": dict(self.blamed.most_common(10))},
        }
