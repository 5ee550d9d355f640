"""Clusters: named groups of agents, their definitions and how they are formed (pure).

* :mod:`.names` — the default cluster and valid names.
* :mod:`.directory` — definitions folded from the coordinator's signed records.
* :mod:`.forming` — which live agents a new cluster takes.
* :mod:`.leaders` — the weighted score that picks a cluster's leader.
* :mod:`.orders` — the coordinator's membership orders, and their fence.
"""

from .directory import RECORD_TYPE, ClusterDef, ClusterDirectory, ClusterRecord
from .forming import MAX_SIZE, FormRefused, choose_members
from .leaders import (
    DEFAULT_MARGIN,
    LeaderScore,
    MemberView,
    choose_leader,
    member_view,
    score_members,
)
from .names import DEFAULT_CLUSTER, MAX_CLUSTER_NAME, check_cluster_name, cluster_name_problem
from .orders import ORDER_TYPE, MembershipOrder, OrderFence

__all__ = [
    "DEFAULT_CLUSTER",
    "DEFAULT_MARGIN",
    "MAX_CLUSTER_NAME",
    "MAX_SIZE",
    "ORDER_TYPE",
    "RECORD_TYPE",
    "ClusterDef",
    "ClusterDirectory",
    "ClusterRecord",
    "FormRefused",
    "LeaderScore",
    "MemberView",
    "MembershipOrder",
    "OrderFence",
    "check_cluster_name",
    "choose_leader",
    "choose_members",
    "cluster_name_problem",
    "member_view",
    "score_members",
]
