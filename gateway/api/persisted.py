"""Persisted documents: Apollo's automatic persisted queries (APQ) and trusted documents.

APQ (Apollo's protocol, version 1)
    A client sends ``extensions.persistedQuery = {"version": 1, "sha256Hash": <hex>}`` without
    ``query``. A hash the process knows runs its document; an unknown one is answered with the
    GraphQL error ``PersistedQueryNotFound`` (``extensions.code: PERSISTED_QUERY_NOT_FOUND``,
    a request error: HTTP 200 for ``application/json``, 400 for
    ``application/graphql-response+json``), and the client sends the query with its hash,
    which registers it. A hash that is not the SHA-256 of the query sent with it is refused
    (HTTP 400 ``BAD_REQUEST``, "provided sha does not match query"), so nobody can register a
    document under another document's hash. GET works as POST does (queries only).

    Registered documents live in this process's memory, in an LRU bounded by their total size
    (``GATEWAY_APQ_CACHE_BYTES``, 8 MiB by default; 0 switches registration off, answered
    ``PERSISTED_QUERY_NOT_SUPPORTED``), as Apollo Server does by default. Nothing is shared
    between processes: a client whose hash is unknown to the process it reaches simply
    registers it there too, at the cost of one extra round trip.

Trusted documents (``GATEWAY_TRUSTED_DOCUMENTS=path/to/persisted-documents.json``)
    The manifest graphql-codegen's client preset writes (``persistedDocuments: true``):
    ``{"<sha256 of the document>": "<document>"}``; every hash is checked when the gateway
    starts. A client then sends ``{"documentId": "<hash>"}`` (``sha256:<hash>`` also accepted)
    or the APQ extension. Customer session tokens (and anonymous callers) may run only the
    manifest's documents: a free document is refused with ``QUERY_NOT_IN_SAFELIST`` unless it
    is, character for character, one of them, and an unknown hash with
    ``PERSISTED_QUERY_NOT_IN_LIST`` (registration through APQ is off for them). Secret keys
    may still send free documents and use APQ: they belong to the operator's own backends and
    tools (GraphiQL, scripts), which the manifest of a frontend app does not describe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import orjson
from cachetools import LRUCache
from pydantic import TypeAdapter, ValidationError
from strawberry.http import GraphQLRequestData

from gateway.settings import Settings

_HASH = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST = TypeAdapter(dict[str, str])


class PersistedDocumentError(Exception):
    """A persisted-document request the gateway cannot run (a GraphQL request error)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class PersistedDocumentRefused(Exception):
    """A malformed persisted-document request (HTTP 400)."""


class ManifestError(ValueError):
    """The trusted-documents manifest cannot be used (raised at start-up)."""


def document_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def load_manifest(path: Path) -> dict[str, str]:
    """The manifest's {hash: document}, every hash checked against its document."""
    try:
        manifest = _MANIFEST.validate_json(path.read_bytes())
    except OSError as exc:
        raise ManifestError(
            f"GATEWAY_TRUSTED_DOCUMENTS: cannot read {path}: {exc.strerror}"
        ) from exc
    except ValidationError as exc:
        raise ManifestError(
            f"GATEWAY_TRUSTED_DOCUMENTS: {path} is not a JSON object of hash -> document"
        ) from exc
    documents: dict[str, str] = {}
    for key, document in manifest.items():
        digest = key.removeprefix("sha256:").lower()
        if digest != document_hash(document):
            raise ManifestError(
                f"GATEWAY_TRUSTED_DOCUMENTS: {path}: {key} is not the SHA-256 of its document"
            )
        documents[digest] = document
    return documents


def with_document_id(data: GraphQLRequestData, document_id: object) -> GraphQLRequestData:
    """A request naming its document by ``documentId``, as the APQ extension would."""
    if not isinstance(document_id, str):
        raise PersistedDocumentRefused("documentId must be a string")
    extensions = dict(data.extensions or {})
    extensions["persistedQuery"] = {
        "version": 1,
        "sha256Hash": document_id.removeprefix("sha256:"),
    }
    return dataclasses.replace(data, extensions=extensions)


def document_id_in(body: bytes) -> object:
    """The ``documentId`` of a JSON request body, if any (the body already parsed once)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data.get("documentId") if isinstance(data, dict) else None


class PersistedDocuments:
    """The process's registered documents and the trusted manifest (see the module doc)."""

    def __init__(self, trusted: Mapping[str, str] | None = None, cache_bytes: int = 0) -> None:
        self.trusted = dict(trusted) if trusted is not None else None
        self.cache: LRUCache[str, str] | None = (
            LRUCache(maxsize=cache_bytes, getsizeof=len) if cache_bytes > 0 else None
        )

    def resolve(self, data: GraphQLRequestData, *, free_documents: bool) -> GraphQLRequestData:
        """The request with the document it runs. ``free_documents``: the caller may send
        documents the manifest does not list (secret keys)."""
        restricted = self.trusted is not None and not free_documents
        digest = self._requested_hash(data)
        if digest is None:
            if restricted and data.query is not None and not self._trusted(data.query):
                raise PersistedDocumentError(
                    "only the app's trusted documents may run: send a documentId of the"
                    " persisted-documents manifest",
                    "QUERY_NOT_IN_SAFELIST",
                )
            return data
        if data.query is not None:
            if document_hash(data.query) != digest:
                raise PersistedDocumentRefused("provided sha does not match query")
            if restricted and not self._trusted(data.query):
                raise PersistedDocumentError(
                    "PersistedQueryNotInList", "PERSISTED_QUERY_NOT_IN_LIST"
                )
            if self.cache is not None and not self._trusted(data.query):
                with contextlib.suppress(ValueError):  # larger than the whole cache: not kept
                    self.cache[digest] = data.query
            return data
        document = (self.trusted or {}).get(digest)
        if document is None and restricted:
            raise PersistedDocumentError("PersistedQueryNotInList", "PERSISTED_QUERY_NOT_IN_LIST")
        if document is None and self.cache is not None:
            document = self.cache.get(digest)
        if document is None:
            if self.cache is None:
                raise PersistedDocumentError(
                    "PersistedQueryNotSupported", "PERSISTED_QUERY_NOT_SUPPORTED"
                )
            raise PersistedDocumentError("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        return dataclasses.replace(data, query=document)

    def _trusted(self, query: str) -> bool:
        return self.trusted is not None and document_hash(query) in self.trusted

    @staticmethod
    def _requested_hash(data: GraphQLRequestData) -> str | None:
        persisted = (data.extensions or {}).get("persistedQuery")
        if persisted is None:
            return None
        if not isinstance(persisted, dict):
            raise PersistedDocumentRefused("extensions.persistedQuery must be an object")
        if persisted.get("version") != 1:
            raise PersistedDocumentRefused("Unsupported persisted query version")
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or not _HASH.match(digest.lower()):
            raise PersistedDocumentRefused(
                "extensions.persistedQuery.sha256Hash must be a SHA-256 in hex"
            )
        return digest.lower()


def persisted_documents(settings: Settings) -> PersistedDocuments:
    """The process's persisted documents from its settings (reads and checks the manifest)."""
    path = settings.gateway_trusted_documents
    trusted = None if path is None else load_manifest(path)
    return PersistedDocuments(trusted, settings.gateway_apq_cache_bytes)
