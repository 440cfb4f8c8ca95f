"""FHIR R4 REST client for the EHR: the only code that sees HTTP status codes.

Methods return parsed JSON dicts; translators turn them into `fhir.resources.R4B` models.
Failures become the error types of `errors.py`. Nothing here logs query values or bodies.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from adapter.http.retry import RETRYABLE_STATUSES, parse_retry_after

from .auth import Authorizer
from .errors import (
    EhrConfigurationError,
    FhirAuthError,
    FhirConflictError,
    FhirError,
    FhirNotFoundError,
    FhirPagingError,
    FhirResponseError,
    FhirServerError,
    FhirTransientError,
    issues_from_outcome,
    redact_url,
)
from .transport import Transport

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
#: Search parameters as pairs (repeatable keys, order kept) or a mapping of name -> value(s).
SearchParams = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]


@dataclass
class SearchResult:
    """Every page of a search, flattened. `outcomes` holds OperationOutcome entries (warnings a
    lenient server adds about ignored parameters)."""

    matches: list[dict[str, Any]] = field(default_factory=list)
    included: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    total: int | None = None


@dataclass(frozen=True)
class CreateResult:
    """Outcome of a conditional create: the resource and whether this call created it."""

    resource: dict[str, Any]
    created: bool


def _pairs(params: SearchParams | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        out: list[tuple[str, str]] = []
        for name, value in params.items():
            values = [value] if isinstance(value, str) else list(value)
            out.extend((name, v) for v in values)
        return out
    return [(str(k), str(v)) for k, v in params]


def _check_resource_path(resource_type: str, resource_id: str | None = None) -> None:
    if not resource_type.isalpha() or not resource_type[:1].isupper():
        raise ValueError(f"not a FHIR resource type: {resource_type!r}")
    if resource_id is not None and (
        not resource_id or "/" in resource_id or "?" in resource_id or len(resource_id) > 64
    ):
        raise ValueError(f"not a FHIR resource id: {resource_id!r}")


class FhirClient:
    """A FHIR R4 server at `base_url`, e.g. `https://ehr.example.org/fhir/r4`."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Authorizer | None = None,
        transport: Transport | None = None,
        max_pages: int = 100,
        strict_search: bool = True,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EhrConfigurationError(f"FHIR base URL must be an http(s) URL, got {base_url!r}")
        if parts.query or parts.fragment:
            raise EhrConfigurationError("FHIR base URL must not have a query or fragment")
        if max_pages < 1:
            raise EhrConfigurationError("max_pages must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.transport = transport or Transport()
        self.max_pages = max_pages
        self.strict_search = strict_search

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _url(self, *segments: str) -> str:
        return "/".join([self.base_url, *segments])

    def _request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> requests.Response:
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        if json_body is not None:
            all_headers["Content-Type"] = FHIR_JSON

        def authorize() -> Mapping[str, str]:
            return self.auth.headers(self.transport, self.base_url) if self.auth else {}

        response, attempts = self.transport.send(
            method,
            url,
            idempotent=idempotent,
            params=params,
            headers=all_headers,
            json_body=json_body,
            authorize=authorize,
        )
        # A 401 may mean the cached token expired early or was revoked: get a new one, once.
        if response.status_code == 401 and self.auth is not None and self.auth.invalidate():
            log.info("%s %s -> 401; re-authorising once", method, redact_url(url))
            response, more = self.transport.send(
                method,
                url,
                idempotent=idempotent,
                params=params,
                headers=all_headers,
                json_body=json_body,
                authorize=authorize,
            )
            attempts += more
        if 300 <= response.status_code < 400:
            # Redirects are not followed: the Authorization header must not leave the server
            # the site configured, and a FHIR server has no reason to redirect its API.
            target = redact_url(response.headers.get("Location", "")) or "nowhere"
            raise FhirResponseError(
                f"unexpected redirect to {target}; not followed",
                method=method,
                url=url,
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise self._error_for(response, method, url, attempts)
        return response

    def _error_for(
        self, response: requests.Response, method: str, url: str, attempts: int
    ) -> FhirError:
        status = response.status_code
        try:
            body: object = response.json()
        except ValueError:
            body = None
        issues = issues_from_outcome(body)
        common: dict[str, Any] = {"method": method, "url": url, "status": status, "issues": issues}
        if status in (401, 403):
            what = "not authenticated" if status == 401 else "not authorised (scopes?)"
            return FhirAuthError(what, **common)
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), self.transport.clock()
            )
            return FhirTransientError(
                f"server still unavailable after {attempts} attempt(s)",
                attempts=attempts,
                retry_after=retry_after,
                **common,
            )
        if status in (404, 410):
            return FhirNotFoundError("not found" if status == 404 else "gone (deleted)", **common)
        if status in (409, 412):
            return FhirConflictError("conflict (version or condition)", **common)
        return FhirServerError("request failed", **common)

    @staticmethod
    def _json(response: requests.Response, method: str, url: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            content_type = response.headers.get("Content-Type", "none")
            raise FhirResponseError(
                f"response body is not JSON (Content-Type {content_type})",
                method=method,
                url=url,
                status=response.status_code,
            ) from exc
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirResponseError(
                "response body is not a FHIR resource", method=method, url=url, status=200
            )
        return body

    def _expect(
        self, body: dict[str, Any], resource_type: str, method: str, url: str, status: int
    ) -> dict[str, Any]:
        if body["resourceType"] != resource_type:
            raise FhirResponseError(
                f"expected a {resource_type}, got a {body['resourceType']}",
                method=method,
                url=url,
                status=status,
            )
        return body

    # -- reads ---------------------------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        url = self._url("metadata")
        response = self._request("GET", url, idempotent=True)
        return self._expect(
            self._json(response, "GET", url), "CapabilityStatement", "GET", url, 200
        )

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        _check_resource_path(resource_type, resource_id)
        url = self._url(resource_type, resource_id)
        response = self._request("GET", url, idempotent=True)
        return self._expect(self._json(response, "GET", url), resource_type, "GET", url, 200)

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> dict[str, Any]:
        _check_resource_path(resource_type, resource_id)
        _check_resource_path(resource_type, version_id)
        url = self._url(resource_type, resource_id, "_history", version_id)
        response = self._request("GET", url, idempotent=True)
        return self._expect(self._json(response, "GET", url), resource_type, "GET", url, 200)

    # -- search --------------------------------------------------------------------------------

    def search_pages(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        include: Sequence[str] = (),
        count: int | None = None,
        max_pages: int | None = None,
        strict: bool | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Yield each searchset Bundle, following `next` links (same server only, bounded)."""
        _check_resource_path(resource_type)
        query = _pairs(params) + [("_include", spec) for spec in include]
        if count is not None:
            query.append(("_count", str(count)))
        strict = self.strict_search if strict is None else strict
        # handling=strict: a server that does not know a parameter must fail, not silently
        # ignore it and return everything.
        headers = {"Prefer": "handling=strict"} if strict else {}
        limit = max_pages or self.max_pages
        url: str | None = self._url(resource_type)
        page_params: list[tuple[str, str]] | None = query
        seen: set[str] = set()
        page = 0
        while url is not None:
            page += 1
            if page > limit:
                raise FhirPagingError(
                    f"more than {limit} pages; narrow the search or raise the page bound",
                    page=page,
                    method="GET",
                    url=url,
                )
            try:
                response = self._request(
                    "GET", url, idempotent=True, params=page_params, headers=headers
                )
                bundle = self._expect(self._json(response, "GET", url), "Bundle", "GET", url, 200)
            except (FhirServerError, FhirResponseError, FhirTransientError) as exc:
                if page == 1:
                    raise
                raise FhirPagingError(
                    f"following the next link to page {page} failed: {exc}",
                    page=page,
                    method="GET",
                    url=url,
                    status=exc.status,
                    issues=exc.issues,
                ) from exc
            yield bundle
            url = self._next_link(bundle, page, seen)
            page_params = None  # the next link carries the whole query

    def _next_link(self, bundle: dict[str, Any], page: int, seen: set[str]) -> str | None:
        links = bundle.get("link") or []
        target = next(
            (
                link.get("url")
                for link in links
                if isinstance(link, dict) and link.get("relation") == "next"
            ),
            None,
        )
        if target is None:
            return None

        def broken(why: str) -> FhirPagingError:
            return FhirPagingError(why, page=page + 1, method="GET", url=self.base_url)

        if not isinstance(target, str):
            raise broken("the next link has no URL")
        parts, base = urlsplit(target), urlsplit(self.base_url)
        # Only follow links back to the same server and base path: the Authorization header
        # must never be sent to a host the configuration did not name.
        same_origin = (parts.scheme, parts.hostname, parts.port) == (
            base.scheme,
            base.hostname,
            base.port,
        )
        if not same_origin or not (parts.path + "/").startswith(base.path.rstrip("/") + "/"):
            raise broken(f"the next link leaves the FHIR base ({redact_url(target)}); not followed")
        if target in seen:
            raise broken("the next link repeats an earlier page (loop)")
        seen.add(target)
        return target

    def search(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        include: Sequence[str] = (),
        count: int | None = None,
        max_pages: int | None = None,
        strict: bool | None = None,
    ) -> SearchResult:
        """All pages of a search: matches, `_include`d resources and outcome entries."""
        result = SearchResult()
        for bundle in self.search_pages(
            resource_type, params, include=include, count=count, max_pages=max_pages, strict=strict
        ):
            result.pages += 1
            if result.total is None and isinstance(bundle.get("total"), int):
                result.total = bundle["total"]
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if not isinstance(resource, dict):
                    continue
                mode = (entry.get("search") or {}).get("mode", "match")
                if resource.get("resourceType") == "OperationOutcome" or mode == "outcome":
                    result.outcomes.append(resource)
                elif mode == "include":
                    result.included.append(resource)
                else:
                    result.matches.append(resource)
        return result

    # -- writes --------------------------------------------------------------------------------

    def _written(
        self, response: requests.Response, resource_type: str, method: str, url: str
    ) -> dict[str, Any]:
        """The resource a write returned; read it from Location if the server sent no body."""
        if response.content.strip():
            body = self._json(response, method, url)
            if body["resourceType"] == resource_type:
                return body
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        if location:
            path = urlsplit(location).path.split("/_history/")[0]
            resource_id = path.rstrip("/").rsplit("/", 1)[-1]
            return self.read(resource_type, resource_id)
        raise FhirResponseError(
            "write succeeded but returned neither the resource nor a Location",
            method=method,
            url=url,
            status=response.status_code,
        )

    def create(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Plain create (not retried: a POST without a condition is not idempotent)."""
        resource_type = str(resource.get("resourceType", ""))
        _check_resource_path(resource_type)
        url = self._url(resource_type)
        response = self._request(
            "POST",
            url,
            idempotent=False,
            json_body=dict(resource),
            headers={"Prefer": "return=representation"},
        )
        return self._written(response, resource_type, "POST", url)

    def create_if_none_exist(
        self, resource: Mapping[str, Any], condition: SearchParams
    ) -> CreateResult:
        """Conditional create (`If-None-Exist`): 201 -> created, 200 -> it already existed.

        Retried like an idempotent request: the condition makes a replay harmless."""
        resource_type = str(resource.get("resourceType", ""))
        _check_resource_path(resource_type)
        pairs = _pairs(condition)
        if not pairs:
            raise ValueError("a conditional create needs at least one search parameter")
        url = self._url(resource_type)
        response = self._request(
            "POST",
            url,
            idempotent=True,
            json_body=dict(resource),
            headers={"If-None-Exist": urlencode(pairs), "Prefer": "return=representation"},
        )
        if response.status_code not in (200, 201):
            raise FhirResponseError(
                f"unexpected status {response.status_code} for a conditional create",
                method="POST",
                url=url,
                status=response.status_code,
            )
        written = self._written(response, resource_type, "POST", url)
        return CreateResult(resource=written, created=response.status_code == 201)

    def update(
        self, resource: Mapping[str, Any], *, if_match_version: str | None = None
    ) -> dict[str, Any]:
        """PUT the resource. With a known version (argument, else `meta.versionId`) the update
        is conditional on it (If-Match); a newer version on the server -> FhirConflictError."""
        resource_type = str(resource.get("resourceType", ""))
        resource_id = resource.get("id")
        if not isinstance(resource_id, str):
            raise ValueError("update needs a resource with an id")
        _check_resource_path(resource_type, resource_id)
        version = if_match_version
        if version is None:
            meta = resource.get("meta")
            if isinstance(meta, Mapping) and isinstance(meta.get("versionId"), str):
                version = meta["versionId"]
        headers = {"Prefer": "return=representation"}
        if version is not None:
            headers["If-Match"] = f'W/"{version}"'
        url = self._url(resource_type, resource_id)
        # PUT to a known id is idempotent; with If-Match a replay after a lost response gets a
        # 412, which is reported rather than silently overwriting someone else's change.
        response = self._request(
            "PUT", url, idempotent=True, json_body=dict(resource), headers=headers
        )
        return self._written(response, resource_type, "PUT", url)

    def batch(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """POST a `batch` Bundle; returns the response entries in request order.

        Each entry succeeds or fails on its own (a 412 on one update does not undo the rest).
        Retried like an idempotent request: callers send only conditional creates and
        If-Match updates, which a replay cannot duplicate."""
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [dict(e) for e in entries]}
        url = self.base_url
        response = self._request(
            "POST",
            url,
            idempotent=True,
            json_body=bundle,
            headers={"Prefer": "return=representation"},
        )
        body = self._expect(self._json(response, "POST", url), "Bundle", "POST", url, 200)
        answers = body.get("entry") or []
        if body.get("type") != "batch-response" or len(answers) != len(entries):
            raise FhirResponseError(
                f"expected a batch-response with {len(entries)} entries, got a "
                f"{body.get('type')} with {len(answers)}",
                method="POST",
                url=url,
                status=response.status_code,
            )
        return [a if isinstance(a, dict) else {} for a in answers]
