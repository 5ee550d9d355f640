"""Guardian: security, monitoring and validation.

* :mod:`.watch` — verified refusals per sender from the dead-letter feed
  (alerts at ``ALERT_THRESHOLD``, quarantine at ``quarantine_after``, each
  needing two reporters);
* :mod:`.orders` — what *every* agent installs to learn and keep the
  guardians' signed quarantine orders (the runtime enforces them);
* :mod:`.guardian` — the guardian itself: it signs and distributes orders
  (automatic, or ``robeing guardian quarantine|release``), answers
  starting agents' ``hello`` with the orders in force, and ``guardian.report``;
* :mod:`.verify` — re-runs a sample of finished tasks on another agent and
  compares;
* :mod:`.rates` — rate anomalies per sender from the receivers' counts;
* :mod:`.policy` — a signed, tighter role → message-type policy.
"""

from __future__ import annotations

from .guardian import Guardian, install
from .orders import Enforcement, enforce
from .watch import ALERT_THRESHOLD, ALERT_WINDOW, MIN_REPORTERS, DeadLetterWatch

__all__ = [
    "ALERT_THRESHOLD",
    "ALERT_WINDOW",
    "MIN_REPORTERS",
    "DeadLetterWatch",
    "Enforcement",
    "Guardian",
    "enforce",
    "install",
]
