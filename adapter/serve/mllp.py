"""`serve --mllp HOST:PORT`: the MLLP source plugged into serve (adapter.pipeline.mllp_source)."""

from __future__ import annotations

from adapter.errors import ConfigurationError
from adapter.hl7v2.oru import Options
from adapter.hl7v2.tables import Hl7v2Tables
from adapter.listen import loopback, parse_listen
from adapter.mappings_loader import load_hl7v2_tables, load_reference_data
from adapter.mllp.server import Limits
from adapter.pipeline.matching import WAKE_MATCHING
from adapter.pipeline.mllp_source import MllpSettings, MllpSource
from adapter.serve.extensions import Extension, ServeContext
from adapter.settings import Loaded
from adapter.watch.config import watch_config


class MllpExtension(Extension):
    name = "mllp"

    def __init__(self, settings: MllpSettings, tables: Hl7v2Tables) -> None:
        self.settings = settings
        self.tables = tables
        self.source: MllpSource | None = None

    def start(self, context: ServeContext) -> None:
        pipeline = context.pipeline
        self.source = MllpSource(
            pipeline.intake,
            pipeline.store,
            self.tables,
            self.settings,
            ehr=pipeline.ehr,
            registry=pipeline.metrics.registry,
        )
        self.source.start()
        context.extras[WAKE_MATCHING] = self.source.matching.wake  # pushed results too
        host, port = self.source.address
        print(f"rems-adapter serve: MLLP listening on {host}:{port}", flush=True)

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
            self.source = None


def mllp_extension(loaded: Loaded) -> MllpExtension | None:
    """The MLLP extension when ``serve.mllp`` is set (else None)."""

    raw = loaded.settings.serve.mllp
    if raw is None:
        return None
    host, port = parse_listen(raw, loaded.name("serve.mllp"))
    section = loaded.settings.mllp
    if not section.allow_remote and not loopback(host):
        raise ConfigurationError(
            f"refusing MLLP on {host} (not a loopback address): MLLP has no authentication; "
            "set mllp.allow_remote on a private network",
            where=loaded.name("serve.mllp"),
        )
    if not section.assigning_authority:
        raise ConfigurationError(
            "needed with --mllp: the PID-3 assigning authority whose identifiers name the "
            "patient (results are never matched by guess)",
            where=loaded.name("mllp.assigning_authority"),
        )
    evaluation = watch_config(loaded, None).evaluation
    data = load_reference_data(evaluation.mappings)
    codes = data.lab_codes
    options = Options(
        assigning_authority=section.assigning_authority,
        identifier_system=section.patient_identifier_system,
        site_tz=evaluation.site_tz,
        codes=frozenset(
            codes.anc | codes.wbc | codes.neutrophil_pct | codes.segs_pct | codes.band_pct
        ),
        processing_ids=frozenset(section.processing_ids),
        enhanced_acks=section.enhanced_acks,
    )
    limits = Limits(
        max_connections=section.max_connections,
        idle_timeout=section.idle_timeout,
        message_timeout=section.message_timeout,
        max_message_bytes=section.max_message_bytes,
    )
    settings = MllpSettings(host, port, options, limits, match_interval=section.match_interval)
    return MllpExtension(settings, load_hl7v2_tables(evaluation.mappings))
