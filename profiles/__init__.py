"""Data package: FHIR conformance resources and JSON Schemas for what the adapter writes."""
