"""The decision backends: one interface beside the core, used by batch, watch and serve alike.

    Backend.decide(evaluation, inputs, directory, clock) -> Outcome

- `local` (`adapter.decide.local`): the core decides; the outcome is the evaluation's own
  findings, withdrawals, authorization records and PSF records.
- `rems` (`adapter.decide.rems`): a REMS service decides the dispenses and takes the forms,
  after the core has evaluated the patient (clinical-rules section 3). A patient not on
  clozapine is decided locally.

`evaluation` is the core's `evaluate_patient` for `inputs`; `directory` the Patient,
Practitioner and Organization resources the forms need; `clock` the evaluation clock. A
backend may be called from one thread at a time; `close()` releases its connections.
"""

from __future__ import annotations

from adapter.decide.base import Backend, Directory, Outcome
from adapter.decide.local import LocalBackend, local_outcome

__all__ = ["Backend", "Directory", "LocalBackend", "Outcome", "local_outcome"]
