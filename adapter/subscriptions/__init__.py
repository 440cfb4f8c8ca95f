"""FHIR Subscriptions, the subscriber's side: pure translators and bookkeeping (no I/O).

- `notification`: what arrives at ``/notify`` (R4 rest-hook, empty or with the resource; R4
  Subscriptions Backport IG 1.1.0 / 1.2.0 notification Bundles) -> frozen values, or an error of
  the one tree naming the FHIR path at fault (a 4xx OperationOutcome at the HTTP edge).
- `gaps`: per-subscription event numbers vs ``events-since-subscription-start`` -> the missing
  numbers to recover.
- `watchdog`: is a subscription silent for longer than twice its heartbeat period?
- `resources`: the Subscription and backported SubscriptionTopic (``Basic``) resources the adapter
  asks an EHR to hold.

Notifications are hints: every one is checked against the EHR (an id-only focus is read, an empty
one triggers a query from the watermark) and never trusted alone. The connector that talks to the
EHR is `adapter.ehr.subscriptions`.
"""
