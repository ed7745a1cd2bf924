"""Opaque, tamper-checked keyset cursors on (created_at, id)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from flowstudio.errors import InvalidCursor

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


@dataclass(frozen=True)
class Position:
    created_at: datetime
    id: uuid.UUID


class CursorCodec:
    """Cursors are signed so clients can neither forge positions nor reuse them across lists."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"cursor:" + secret).digest()

    def _mac(self, scope: str, body: bytes) -> bytes:
        return hmac.new(self._key, scope.encode() + b"\0" + body, hashlib.sha256).digest()[:12]

    def encode(self, position: Position, *, scope: str) -> str:
        body = json.dumps([position.created_at.isoformat(), position.id.hex]).encode()
        raw = self._mac(scope, body) + body
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, cursor: str, *, scope: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            mac, body = raw[:12], raw[12:]
            if len(cursor) > 512 or not hmac.compare_digest(mac, self._mac(scope, body)):
                raise ValueError("signature")
            created_at, id_hex = json.loads(body)
            position = Position(datetime.fromisoformat(created_at), uuid.UUID(hex=id_hex))
            if position.created_at.tzinfo is None:
                raise ValueError("naive")
            return position
        except (ValueError, TypeError, json.JSONDecodeError):
            raise InvalidCursor(
                "The cursor is not valid for this list; start again without a cursor."
            ) from None
