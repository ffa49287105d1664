"""Per-turn values from the services' Prometheus histograms: scrape before and after, take the delta."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# Service -> offset of its HTTP port from the gateway's, as `voxmesh up --port P` lays them out.
PORT_OFFSETS = {"gateway": 0, "asr": 1, "llm": 2, "tts": 3}


@dataclass(frozen=True)
class MeshStage:
    """A stage read from one service's histogram."""

    key: str
    service: str
    metric: str


MESH_STAGES = (
    MeshStage("endpoint", "asr", "voxmesh_asr_endpoint_seconds"),
    MeshStage("asr_final", "asr", "voxmesh_asr_final_latency_seconds"),
    MeshStage("llm_first_token", "llm", "voxmesh_llm_first_token_seconds"),
    MeshStage("llm_first_phrase", "llm", "voxmesh_llm_first_phrase_seconds"),
    MeshStage("tts_first_byte", "tts", "voxmesh_tts_first_byte_seconds"),
    MeshStage("gateway_first_audio", "gateway", "voxmesh_turn_first_audio_seconds"),
)


@dataclass(frozen=True)
class HistogramTotals:
    """A histogram's `_count` and `_sum`, added up over its label sets."""

    count: float
    total: float


Scrape = dict[str, HistogramTotals]  # histogram name -> totals


def parse_histograms(text: str) -> Scrape:
    """Every histogram in a /metrics text, by name."""
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        count = sum(s.value for s in family.samples if s.name == f"{family.name}_count")
        total = sum(s.value for s in family.samples if s.name == f"{family.name}_sum")
        found[family.name] = HistogramTotals(count, total)
    return found


@dataclass(frozen=True)
class Observed:
    """What a histogram gained between two scrapes: `seconds` is the mean of `count` observations."""

    seconds: float
    count: int

    @property
    def exact(self) -> bool:
        """One observation: the value is this turn's own."""
        return self.count == 1


def delta(before: Scrape, after: Scrape, metric: str) -> Observed | None:
    """The observations `metric` gained from `before` to `after`; None when it gained none."""
    old = before.get(metric, HistogramTotals(0.0, 0.0))
    new = after.get(metric)
    if new is None:
        return None
    count = round(new.count - old.count)
    if count <= 0:
        return None
    return Observed((new.total - old.total) / count, count)


def stage_deltas(before: dict[str, Scrape], after: dict[str, Scrape]) -> tuple[dict[str, float], list[str]]:
    """Each mesh stage in ms from per-service scrapes before and after one turn, and flags: a stage
    observed more than once in the turn is recorded as the mean and flagged, a missing one is flagged."""
    stages: dict[str, float] = {}
    flags: list[str] = []
    for stage in MESH_STAGES:
        if stage.service not in before or stage.service not in after:
            flags.append(f"{stage.key}: {stage.service} /metrics unavailable")
            continue
        observed = delta(before[stage.service], after[stage.service], stage.metric)
        if observed is None:
            flags.append(f"{stage.key}: not observed")
            continue
        stages[stage.key] = observed.seconds * 1000.0
        if not observed.exact:
            flags.append(f"{stage.key}: mean of {observed.count} observations")
    return stages, flags
