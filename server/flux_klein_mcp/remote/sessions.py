"""What a 2025-era client said at `initialize`, sealed into the session id it is handed, so any replica reads it back.

Clients of the 2025 protocol revisions (the SDK 1.x `ClientSession`, which LangChain's adapters use) introduce
themselves once, at `initialize`, and then send bare requests. A stateless server forgets them at once: it would
give an anonymous client `resource_link`s, never ask it for an approval and hide the view's tool. So the answer
to `initialize` carries an `Mcp-Session-Id` that *is* the record of what the client declared (its name and
version, its capabilities, the protocol version), sealed with the shared secret (AES-GCM: nobody can forge or
alter it) and valid for `TTL_S`. The client sends it with every request; each replica opens it. No replica keeps
anything, so none has to be the one the client reached first.

A record that does not open (another secret, altered, expired) is answered 404, which per the protocol tells the
client to initialise again. When people sign in, the record also names whose token opened the session (`owner`),
and opens only for that same person and client: a token for person B never rides person A's session (as the SDK's
stateful sessions do).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp.server.connection import Connection
from mcp.server.request_state import AESGCMRequestStateCodec, InvalidRequestState
from mcp.types import ClientCapabilities, Implementation
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError

from .secret import derived

log = logging.getLogger("flux_klein_mcp.http")

#: How long a session id is good for. It grants nothing (the bearer token does), so it may live long: a client
#: that keeps one session open for days would otherwise be told to start again.
TTL_S = 7 * 24 * 3600
#: Beyond this a session id would not fit the header limits of proxies (nginx allows 8 KB a header line).
MAX_CHARS = 4096
_AUDIENCE = "flux-klein-mcp/session/v1"


@dataclass(frozen=True)
class SessionRecord:
    """What the client declared, as read back from its session id."""

    protocol_version: str
    client_info: Mapping[str, Any] | None
    capabilities: Mapping[str, Any] | None
    #: Names this session without revealing its id (answers to questions are bound to it).
    digest: str

    def connection(self, protocol_version: str | None) -> Connection:
        """The SDK's per-request connection, knowing what the client declared at `initialize`."""
        return Connection.from_envelope(protocol_version or self.protocol_version, self.client_info,
                                        self.capabilities)


class Sessions:
    """Issues and opens sealed session records under one secret."""

    def __init__(self, secret: bytes, *, ttl_s: float = TTL_S, clock: Callable[[], float] = time.time) -> None:
        self._codec = AESGCMRequestStateCodec([derived(secret, "sessions")])
        self._ttl_s = ttl_s
        self._clock = clock

    def issue(self, params: Any, owner: str | None = None) -> str | None:
        """A session id recording an `initialize` request's params (and the signed-in `owner`), or None when they
        are not a valid `initialize` (the SDK answers that) or too large to travel as a header."""
        if not isinstance(params, Mapping):
            return None
        try:
            info = Implementation.model_validate(params.get("clientInfo"))
            caps = ClientCapabilities.model_validate(params.get("capabilities") or {})
        except ValidationError:
            return None
        requested = params.get("protocolVersion")
        now = self._clock()
        record: dict[str, Any] = {
            "aud": _AUDIENCE, "iat": now, "exp": now + self._ttl_s,
            "pv": requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION,
            # Only what the server reads back: the name and version, and the capabilities without `experimental`
            # (free-form, and the one part that could grow past a header's size).
            "ci": info.model_dump(mode="json", by_alias=True, exclude_none=True, include={"name", "version"}),
            "caps": caps.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"experimental"}),
        }
        if owner is not None:
            record["own"] = owner
        token = self._codec.seal(json.dumps(record, separators=(",", ":")).encode())
        if len(token) > MAX_CHARS:
            log.warning("Not issuing a session id: what the client %r declared is too large to carry (%d characters)",
                        info.name[:64], len(token))
            return None
        return token

    def open(self, token: str, owner: str | None = None) -> SessionRecord | None:
        """The record a session id carries, or None when this secret did not seal it, it has expired, or it was
        opened by someone else than `owner` (the signed-in person and client now asking)."""
        if len(token) > MAX_CHARS:
            return None
        try:
            record = json.loads(self._codec.unseal(token))
            valid = (isinstance(record, dict) and record.get("aud") == _AUDIENCE
                     and isinstance(record.get("exp"), int | float) and self._clock() < record["exp"]
                     and record.get("pv") in HANDSHAKE_PROTOCOL_VERSIONS and record.get("own") == owner)
        except (InvalidRequestState, ValueError):
            valid = False
        if not valid:
            return None
        return SessionRecord(record["pv"], record.get("ci"), record.get("caps"),
                             hashlib.sha256(token.encode()).hexdigest()[:32])
