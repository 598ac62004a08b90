"""UserSig (TLSSigAPIv2): generate, decode and verify, and a Signer that caches and renews one.

The format: HMAC-SHA256, keyed with the secret key, over the identifier, SDKAppID, issue time and
lifetime; the digest (standard base64) goes in `TLS.sig` of a small JSON document, which is
zlib-compressed, base64-encoded, and made URL-safe with `+`→`*`, `/`→`-`, `=`→`_`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from dispatcher.errors import SignatureError
from dispatcher.tim import rules

DEFAULT_EXPIRE = 86_400  # a day: long enough for any run, short enough to limit a leak
MAX_EXPIRE = 10 * 365 * 86400  # ten years: longer is no safer to hand out, and a 64-bit field overflows
Clock = Callable[[], float]

_TO_URL = str.maketrans({"+": "*", "/": "-", "=": "_"})
_FROM_URL = str.maketrans({"*": "+", "-": "/", "_": "="})


def _digest(key: str, identifier: str, sdkappid: int, issued: int, expire: int) -> str:
    content = f"TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{issued}\nTLS.expire:{expire}\n"
    mac = hmac.new(key.encode("utf-8"), content.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def generate(sdkappid: int, identifier: str, key: str, expire: int = DEFAULT_EXPIRE, now: float | None = None) -> str:
    """A UserSig for `identifier`, valid for `expire` seconds from `now` (default: the time)."""
    issued = int(time.time() if now is None else now)
    doc = {
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire,
        "TLS.time": issued,
        "TLS.sig": _digest(key, identifier, sdkappid, issued, expire),
    }
    return base64.b64encode(zlib.compress(orjson.dumps(doc))).decode("ascii").translate(_TO_URL)


def decode(sig: str) -> dict[str, Any]:
    """The JSON document inside a UserSig (no verification). Raises SignatureError(70003) if garbled."""
    try:
        raw = zlib.decompress(base64.b64decode(sig.translate(_FROM_URL), validate=True))
        doc = orjson.loads(raw)
    except (binascii.Error, zlib.error, orjson.JSONDecodeError, ValueError) as exc:
        raise SignatureError(rules.SIG_INVALID, "UserSig is not a valid signature") from exc
    if not isinstance(doc, dict):
        raise SignatureError(rules.SIG_INVALID, "UserSig is not a valid signature")
    return doc


def verify(sig: str, sdkappid: int, identifier: str, key: str, now: float | None = None) -> dict[str, Any]:
    """Check a UserSig as the server does; return its document or raise SignatureError with the API code."""
    doc = decode(sig)
    try:
        sig_identifier = str(doc["TLS.identifier"])
        sig_appid = int(doc["TLS.sdkappid"])
        issued = int(doc["TLS.time"])
        expire = int(doc["TLS.expire"])
        digest = str(doc["TLS.sig"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(rules.SIG_INVALID, "UserSig lacks a field") from exc
    if sig_appid != sdkappid:
        raise SignatureError(rules.SIG_SDKAPPID_MISMATCH, "UserSig was made for another SDKAppID")
    if sig_identifier != identifier:
        raise SignatureError(rules.SIG_IDENTIFIER_MISMATCH, "UserSig was made for another identifier")
    expected = _digest(key, sig_identifier, sig_appid, issued, expire)
    if not hmac.compare_digest(expected, digest):
        raise SignatureError(rules.SIG_INVALID, "UserSig verification failed")
    current = time.time() if now is None else now
    if current >= issued + expire:
        raise SignatureError(rules.SIG_EXPIRED, "UserSig expired")
    return doc


class Signer:
    """Hands out a cached UserSig, renewed when half its life is gone or when the server says 70001.

    With a ready-made UserSig (`TIM_USERSIG`) and no key, it can only hand that one out.
    """

    def __init__(
        self,
        sdkappid: int,
        identifier: str,
        key: str | None = None,
        usersig: str | None = None,
        expire: int = DEFAULT_EXPIRE,
        clock: Clock = time.time,
    ) -> None:
        if key is None and usersig is None:
            raise ValueError("Signer needs a secret key or a UserSig")
        self._sdkappid = sdkappid
        self._identifier = identifier
        self._key = key
        self._expire = expire
        self._clock = clock
        self._sig = usersig or ""
        self._renew_at = float("inf")
        # Counts the signatures made, so that a caller can tell which one a request went out with.
        self.generation = 0
        if key is not None:
            self.renew()

    @property
    def can_renew(self) -> bool:
        return self._key is not None

    def current(self) -> str:
        if self._key is not None and self._clock() >= self._renew_at:
            self.renew()
        return self._sig

    def renew(self) -> None:
        if self._key is None:
            return
        now = self._clock()
        self._sig = generate(self._sdkappid, self._identifier, self._key, self._expire, now)
        self._renew_at = int(now) + self._expire / 2
        self.generation += 1

    def now(self) -> float:
        """The time by the clock that signs (`TLS.time`), to compare with the server's."""
        return self._clock()

    def __repr__(self) -> str:  # never show the key or the signature
        return f"Signer(sdkappid={self._sdkappid}, identifier={self._identifier!r})"
