"""HL7 v2 (ORU^R01) translators: parse, map to FHIR R4 Observations, acknowledge. Pure."""
