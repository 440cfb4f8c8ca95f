"""HTTP plumbing shared by the connectors (EHR and REMS): timeouts and bounded retries.

It knows no FHIR and no REMS; each connector turns its neutral failures into its own errors.
"""
