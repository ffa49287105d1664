"""Per-turn values from the services' Prometheus histograms: scrape before and after, take the delta."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# Service -> offset of its /metrics port from the gateway's, as `voxmesh up --port P` lays them out (the
# gateway serves /metrics on a port of its own, P+4, never on its public port).
PORT_OFFSETS = {"gateway": 4, "asr": 1, "llm": 2, "tts": 3}


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
class MeshCount:
    """A counter (one label set) read from one service: how often something happened during a turn."""

    key: str
    service: str
    sample: str  # as `counter_key` spells it


def counter_key(name: str, labels: dict[str, str]) -> str:
    """A counter sample's key in a scrape: its name and labels as Prometheus writes them."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


MESH_COUNTS = (
    MeshCount(
        "speculations_started",
        "gateway",
        counter_key("voxmesh_speculative_replies_total", {"outcome": "started"}),
    ),
    MeshCount(
        "speculations_used", "gateway", counter_key("voxmesh_speculative_replies_total", {"outcome": "used"})
    ),
    MeshCount(
        "speculations_discarded",
        "gateway",
        counter_key("voxmesh_speculative_replies_total", {"outcome": "discarded"}),
    ),
    MeshCount(
        "verdicts_complete", "asr", counter_key("voxmesh_asr_turn_verdicts_total", {"verdict": "complete"})
    ),
    MeshCount(
        "verdicts_incomplete",
        "asr",
        counter_key("voxmesh_asr_turn_verdicts_total", {"verdict": "incomplete"}),
    ),
    MeshCount("partials", "asr", counter_key("voxmesh_asr_partials_total", {})),
)


@dataclass(frozen=True)
class HistogramTotals:
    """A histogram's `_count` and `_sum`, added up over its label sets."""

    count: float
    total: float


Scrape = dict[str, HistogramTotals]  # histogram name -> totals


def parse_histograms(text: str) -> Scrape:
    """Every histogram in a /metrics text, by name, and every counter sample by `counter_key` (its value
    as the count)."""
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[counter_key(sample.name, sample.labels)] = HistogramTotals(sample.value, 0.0)
            continue
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
    if "asr_final" in stages and "endpoint" in stages:
        stages["final_after_endpoint"] = stages["asr_final"] - stages["endpoint"]
    return stages, flags


def count_deltas(before: dict[str, Scrape], after: dict[str, Scrape]) -> dict[str, int]:
    """How much each counter of `MESH_COUNTS` rose between two scrapes (services that answered both)."""
    counts: dict[str, int] = {}
    for count in MESH_COUNTS:
        old, new = before.get(count.service), after.get(count.service)
        if old is None or new is None:
            continue
        zero = HistogramTotals(0.0, 0.0)
        counts[count.key] = round(new.get(count.sample, zero).count - old.get(count.sample, zero).count)
    return counts
