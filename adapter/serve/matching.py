"""serve's pass matching parked results to EHR Patients, when no MLLP source runs one.

A pushed Observation may name its patient only by identifier (a logical reference, or a
transaction Bundle's Patient entry without an id): it is stored, answered 202 and parked, then
filed under the EHR's Patient carrying that identifier (`adapter.pipeline.matching`). With
`--mllp` the MLLP source's pass does this for both sources.
"""

from __future__ import annotations

from adapter.pipeline.matching import WAKE_MATCHING, MatchingSettings, ParkedMatching
from adapter.serve.extensions import Extension, ServeContext
from adapter.settings import Loaded


class MatchingExtension(Extension):
    name = "matching"

    def __init__(self, settings: MatchingSettings) -> None:
        self.settings = settings
        self.matching: ParkedMatching | None = None

    def start(self, context: ServeContext) -> None:
        pipeline = context.pipeline
        self.matching = ParkedMatching(
            pipeline.intake,
            pipeline.store,
            self.settings,
            ehr=pipeline.ehr,
            registry=pipeline.metrics.registry,
        ).start()
        context.extras[WAKE_MATCHING] = self.matching.wake

    def stop(self) -> None:
        if self.matching is not None:
            self.matching.stop()
            self.matching = None


def matching_extension(loaded: Loaded) -> MatchingExtension | None:
    """The pass for pushed results, unless the MLLP source (``serve.mllp``) runs one."""
    if loaded.settings.serve.mllp is not None:
        return None
    return MatchingExtension(MatchingSettings(interval=loaded.settings.mllp.match_interval))
