"""rems-adapter: clozapine ANC monitoring decisions for FHIR R4 systems."""

__version__ = "0.1.0"
