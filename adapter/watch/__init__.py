"""Watch mode: poll an EHR FHIR R4 server, decide, write DetectedIssues back, keep durable state."""
