"""`rems-adapter backfill`: a FHIR Bulk Data export from the EHR, decided in batch mode."""
