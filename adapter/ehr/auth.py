"""Authorisation for the EHR FHIR server: a static bearer token, or SMART Backend Services.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html): the client
signs a short-lived JWT (RS384 or ES384) with its private key and exchanges it at the token
endpoint (client_credentials grant, private_key_jwt client authentication) for an access token.
The token endpoint comes from `{fhir base}/.well-known/smart-configuration` unless configured.
Access tokens are cached until shortly before they expire, and re-requested once when the FHIR
server answers 401 (a token revoked or expired early).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapter.http.retry import RETRYABLE_STATUSES, Clock

from .errors import (
    EhrConfigurationError,
    FhirAuthError,
    FhirResponseError,
    FhirTransientError,
    issues_from_outcome,
)
from .transport import Transport

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUPPORTED_ALGORITHMS = ("RS384", "ES384")
#: SMART: the assertion's exp must be no more than five minutes in the future.
ASSERTION_LIFETIME_SECONDS = 300


class Authorizer(Protocol):
    """What the FHIR client needs from an authorisation scheme."""

    def headers(self, transport: Transport, fhir_base: str) -> Mapping[str, str]:
        """Authorization header(s) for the next request (may fetch a token)."""

    def invalidate(self) -> bool:
        """Forget the current credential after a 401; True if a new one can be obtained."""


class StaticBearerToken:
    """A fixed bearer token (configured by the site, e.g. from an environment variable)."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise EhrConfigurationError("the static bearer token is empty")
        self._token = token.strip()

    def headers(self, transport: Transport, fhir_base: str) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> bool:
        return False  # nothing to refresh: a 401 is final

    def __repr__(self) -> str:  # never print the token
        return "StaticBearerToken(<redacted>)"


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def load_private_key(pem: bytes, algorithm: str, password: bytes | None = None) -> PrivateKey:
    """Load a PEM private key and check it fits the algorithm (RSA >= 2048 bits / EC P-384)."""
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise EhrConfigurationError(
            f"SMART signing algorithm {algorithm!r} is not supported; use one of "
            f"{', '.join(SUPPORTED_ALGORITHMS)}"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        raise EhrConfigurationError(
            f"the SMART private key is not a readable PEM key: {exc}"
        ) from exc
    if algorithm == "RS384":
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise EhrConfigurationError("RS384 needs an RSA private key of at least 2048 bits")
        return key
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise EhrConfigurationError("ES384 needs an EC private key on curve P-384 (secp384r1)")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: PrivateKey, algorithm: str, key_id: str | None = None) -> dict[str, str]:
    """The public JWK to register with the EHR; `kid` defaults to the RFC 7638 thumbprint."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        members = {
            "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        }
    else:
        ec_numbers = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        members = {
            "crv": "P-384",
            "kty": "EC",
            "x": _b64url(ec_numbers.x.to_bytes(size, "big")),
            "y": _b64url(ec_numbers.y.to_bytes(size, "big")),
        }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    thumbprint = _b64url(hashlib.sha256(canonical).digest())
    return {**members, "alg": algorithm, "use": "sig", "kid": key_id or thumbprint}


@dataclass
class _Token:
    value: str
    refresh_at: float


def _send_for_json(
    transport: Transport,
    method: str,
    url: str,
    unavailable: str,
    form: Callable[[], Mapping[str, str]] | None = None,
) -> requests.Response:
    """Send a SMART request (discovery or token: both safe to repeat, so retried) asking for
    JSON; still unavailable after the retries: FhirTransientError saying `unavailable`."""
    response, attempts = transport.send(
        method, url, idempotent=True, form=form, headers={"Accept": "application/json"}
    )
    if response.status_code in RETRYABLE_STATUSES:
        raise FhirTransientError(
            unavailable, method=method, url=url, status=response.status_code, attempts=attempts
        )
    return response


class SmartBackendServices:
    """client_credentials grant with a private_key_jwt assertion (RS384 / ES384)."""

    def __init__(
        self,
        *,
        client_id: str,
        private_key_pem: bytes,
        algorithm: str = "ES384",
        scope: str = "system/*.rs system/DetectedIssue.cu",
        key_id: str | None = None,
        token_endpoint: str | None = None,
        jku: str | None = None,
        refresh_margin_seconds: float = 60.0,
        clock: Clock = time.time,
    ) -> None:
        if not client_id:
            raise EhrConfigurationError("SMART client_id is empty")
        self.client_id = client_id
        self.algorithm = algorithm
        self._key = load_private_key(private_key_pem, algorithm)
        self.scope = scope
        self.key_id = key_id or public_jwk(self._key, algorithm)["kid"]
        self._configured_token_endpoint = token_endpoint
        self._discovered_token_endpoint: str | None = None
        self.jku = jku
        self.refresh_margin = refresh_margin_seconds
        self._clock = clock
        self._token: _Token | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SmartBackendServices(client_id={self.client_id!r}, algorithm={self.algorithm!r})"

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set to register with the EHR (or serve at `jku`)."""
        return {"keys": [public_jwk(self._key, self.algorithm, self.key_id)]}

    # -- Authorizer ----------------------------------------------------------------------------

    def headers(self, transport: Transport, fhir_base: str) -> Mapping[str, str]:
        with self._lock:
            if self._token is None or self._clock() >= self._token.refresh_at:
                self._token = self._request_token(transport, fhir_base)
            return {"Authorization": f"Bearer {self._token.value}"}

    def invalidate(self) -> bool:
        with self._lock:
            self._token = None
        return True

    # -- token endpoint ------------------------------------------------------------------------

    def token_endpoint(self, transport: Transport, fhir_base: str) -> str:
        if self._configured_token_endpoint:
            return self._configured_token_endpoint
        if self._discovered_token_endpoint is None:
            self._discovered_token_endpoint = self._discover(transport, fhir_base)
        return self._discovered_token_endpoint

    def _discover(self, transport: Transport, fhir_base: str) -> str:
        url = f"{fhir_base.rstrip('/')}/.well-known/smart-configuration"
        response = _send_for_json(transport, "GET", url, "SMART discovery: server unavailable")
        if response.status_code != 200:
            raise FhirAuthError(
                "SMART discovery failed: no usable .well-known/smart-configuration "
                "(configure the token endpoint explicitly)",
                method="GET",
                url=url,
                status=response.status_code,
            )
        try:
            config = response.json()
        except ValueError as exc:
            raise FhirResponseError(
                "SMART configuration is not JSON", method="GET", url=url, status=200
            ) from exc
        endpoint = config.get("token_endpoint") if isinstance(config, dict) else None
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise FhirAuthError(
                "SMART configuration has no token_endpoint", method="GET", url=url, status=200
            )
        algorithms = config.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algorithms, list) and algorithms and self.algorithm not in algorithms:
            raise FhirAuthError(
                f"the server does not accept {self.algorithm} client assertions "
                f"(it lists {', '.join(map(str, algorithms))})",
                method="GET",
                url=url,
                status=200,
            )
        return endpoint

    def client_assertion(self, audience: str) -> str:
        """A fresh signed assertion (new jti each call) for the token endpoint `audience`."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
            "jti": secrets.token_urlsafe(32),
        }
        header = {"kid": self.key_id, "typ": "JWT"}
        if self.jku:
            header["jku"] = self.jku
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=header)

    def _request_token(self, transport: Transport, fhir_base: str) -> _Token:
        endpoint = self.token_endpoint(transport, fhir_base)

        def form() -> Mapping[str, str]:
            return {
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.client_assertion(endpoint),
            }

        # Each attempt signs a new assertion (fresh jti), so retrying a token request is safe.
        response = _send_for_json(
            transport, "POST", endpoint, "token endpoint unavailable", form=form
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            error = body.get("error") if isinstance(body, dict) else None
            description = body.get("error_description") if isinstance(body, dict) else None
            detail = f"{error}: {description}" if error else "no OAuth error in the response"
            raise FhirAuthError(
                f"token endpoint refused client {self.client_id!r} ({detail})",
                method="POST",
                url=endpoint,
                status=response.status_code,
                oauth_error=error if isinstance(error, str) else None,
                issues=issues_from_outcome(body),
            )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise FhirResponseError(
                "token response has no access_token", method="POST", url=endpoint, status=200
            )
        token_type = str(body.get("token_type", "bearer"))
        if token_type.lower() != "bearer":
            raise FhirAuthError(
                f"token endpoint issued a {token_type!r} token; only bearer is supported",
                method="POST",
                url=endpoint,
                status=200,
            )
        expires_in = body.get("expires_in")
        # Without expires_in, treat the token as short-lived rather than guess it lasts an hour.
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
        margin = min(self.refresh_margin, lifetime / 2)
        return _Token(body["access_token"], self._clock() + lifetime - margin)
