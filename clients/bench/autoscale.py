"""What the deployment's autoscalers would ask for at a measured load: the HPA on the gateway's sessions,
KEDA on the work queues' pending entries and lag (deploy/k8s/base/hpa.yaml and keda.yaml; a unit test
keeps these numbers equal to the manifests')."""

from __future__ import annotations

import math
from dataclasses import dataclass

GATEWAY_SESSIONS_PER_POD = 100
GATEWAY_REPLICAS = (2, 10)
WORKER_REPLICAS = (1, 10)


@dataclass(frozen=True)
class QueueTrigger:
    """A worker's KEDA triggers: entries pending per replica, backlog per replica (None: no lag trigger)."""

    pending_per_replica: int
    lag_per_replica: int | None


TRIGGERS = {
    "asr": QueueTrigger(pending_per_replica=8, lag_per_replica=None),
    "llm": QueueTrigger(pending_per_replica=1, lag_per_replica=1),
    "tts": QueueTrigger(pending_per_replica=1, lag_per_replica=1),
}


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return min(max(value, bounds[0]), bounds[1])


def gateway_replicas(sessions: float) -> int:
    """The HPA's answer for this many open sessions (averageValue per pod, within min and max)."""
    return _clamp(math.ceil(sessions / GATEWAY_SESSIONS_PER_POD), GATEWAY_REPLICAS)


def worker_replicas(service: str, pending: float, lag: float | None) -> int:
    """KEDA's answer for a queue's pending entries and lag: the larger of its triggers' (AverageValue)."""
    trigger = TRIGGERS[service]
    wanted = math.ceil(pending / trigger.pending_per_replica)
    if trigger.lag_per_replica is not None and lag is not None:
        wanted = max(wanted, math.ceil(lag / trigger.lag_per_replica))
    return _clamp(wanted, WORKER_REPLICAS)
