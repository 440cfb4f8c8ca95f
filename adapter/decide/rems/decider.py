"""The `rems` backend behind the one interface (`adapter.decide.Backend`)."""

from __future__ import annotations

from datetime import datetime, tzinfo

from adapter.core.evaluate import Evaluation
from adapter.core.model import PatientInputs
from adapter.core.protocol import Protocol
from adapter.decide.base import Backend, Directory, Outcome
from adapter.decide.local import local_outcome
from adapter.decide.rems.backend import RemsBackend
from adapter.decide.rems.case import Breaker
from adapter.decide.rems.settings import RemsSettings
from adapter.rems import RemsClient


class RemsDecider(Backend):
    """Decides patients on clozapine with a REMS service (one client, reused); patients not on
    clozapine locally. Within one run (batch) a REMS that did not answer is not asked again
    (the breaker); `start_run` resets that."""

    name = "rems"

    def __init__(
        self,
        settings: RemsSettings,
        protocol: Protocol,
        site_tz: tzinfo,
        client: RemsClient | None = None,
    ) -> None:
        self.settings = settings
        self.protocol = protocol
        self.site_tz = site_tz
        self.client = client or RemsClient(
            settings.url, timeouts=settings.timeouts, retry=settings.retry
        )
        if settings.token:
            self.client.session.headers["Authorization"] = f"Bearer {settings.token}"
        self.breaker = Breaker()

    def start_run(self) -> None:
        self.breaker = Breaker()

    def decide(
        self,
        evaluation: Evaluation,
        inputs: PatientInputs,
        directory: Directory,
        clock: datetime,
    ) -> Outcome:
        if not evaluation.on_clozapine:
            return local_outcome(evaluation)
        backend = RemsBackend(
            self.client,
            self.settings,
            directory,
            self.protocol,
            self.site_tz,
            clock,
            self.breaker,
        )
        decided = backend.decide(evaluation, inputs)
        return Outcome(
            backend=self.name,
            findings=decided.findings,
            withdrawals=decided.withdrawals,
            authorizations=decided.authorizations,
            forms=decided.forms,
            decisions=decided.decisions,
            notes=decided.notes,
        )

    def close(self) -> None:
        self.client.close()
