"""Moved to `adapter.fhir.collect` (grouping by patient is a translator). Kept while
`adapter.watch` still imports it from here; removed once watch runs on the pipeline."""

from adapter.fhir.collect import Collector, IdentityCollector, identity_refs

__all__ = ["Collector", "IdentityCollector", "identity_refs"]
