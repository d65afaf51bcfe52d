"""Credentials and challenges: X-Registry-Auth, WWW-Authenticate, bearer tokens.

The token flow is the distribution spec's (docs/spec/auth/token.md, oauth.md):
a 401 names a realm and service; a token for ``repository:<name>:<actions>`` is
fetched there with GET (Basic credentials when there are some) or, holding an
identity (refresh) token, with an OAuth2 POST; tokens are cached per realm,
service, scopes and credentials until they expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

from berth import errdefs

#: what ``docker login`` without a server means (``docker info``'s IndexServerAddress)
INDEX_SERVER = "https://index.docker.io/v1/"
#: the client_id dockerd sends to token servers (``registry.AuthClientID``)
CLIENT_ID = "docker"
#: distribution's floor on a token's lifetime when the server gives none or less
MIN_TOKEN_LIFETIME = 60.0


@dataclass(frozen=True)
class AuthConfig:
    """What ``X-Registry-Auth`` (base64url JSON) and ``POST /auth`` carry."""

    username: str = ""
    password: str = ""
    identitytoken: str = ""
    registrytoken: str = ""
    serveraddress: str = ""

    @classmethod
    def from_header(cls, value: str) -> AuthConfig:
        """Decode ``X-Registry-Auth`` as dockerd's ``DecodeAuthConfig`` does: empty is
        anonymous, anything undecodable is InvalidParameter."""
        value = value.strip()
        if not value:
            return cls()
        # dockerd reads base64url; clients differ in padding and alphabet, so accept both
        text = value.replace("+", "-").replace("/", "_")
        text += "=" * (-len(text) % 4)
        try:
            raw = base64.urlsafe_b64decode(text.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError) as e:
            raise errdefs.InvalidParameter(f"invalid X-Registry-Auth header: {e}") from None
        try:
            doc, _ = json.JSONDecoder().raw_decode(raw.decode("utf-8").lstrip())
        except (ValueError, UnicodeDecodeError) as e:
            raise errdefs.InvalidParameter(f"invalid X-Registry-Auth header: {e}") from None
        return cls.from_json(doc, "invalid X-Registry-Auth header")

    @classmethod
    def from_json(cls, doc: Any, context: str = "invalid auth config") -> AuthConfig:
        """From a decoded JSON object (Go's decoder: keys match case-insensitively, null is
        empty, a non-string value is an error); ``auth`` (base64 ``user:pass``) fills in
        missing username and password."""
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise errdefs.InvalidParameter(f"{context}: json: cannot unmarshal into AuthConfig")
        names = {f.name for f in fields(cls)} | {"auth", "email"}
        vals: dict[str, str] = {}
        for key, v in doc.items():
            k = str(key).lower()
            if k not in names or v is None:
                continue
            if not isinstance(v, str):
                raise errdefs.InvalidParameter(
                    f"{context}: json: cannot unmarshal {type(v).__name__} into Go struct "
                    f"field AuthConfig.{k} of type string"
                )
            vals[k] = v
        auth = vals.pop("auth", "")
        vals.pop("email", None)
        if auth and not vals.get("username") and not vals.get("password"):
            try:
                user, sep, pw = base64.b64decode(auth).decode("utf-8").partition(":")
            except (binascii.Error, ValueError):
                sep = ""
            if sep:
                vals["username"], vals["password"] = user, pw.strip("\x00")
        return cls(**vals)

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identitytoken or self.registrytoken)

    def basic(self) -> str:
        """The ``Authorization: Basic`` value, or ``""`` without username and password."""
        if not self.username or not self.password:
            return ""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def cache_key(self) -> str:
        """Tells credentials apart in the token cache without keeping them in a key."""
        h = hashlib.sha256()
        for part in (self.username, self.password, self.identitytoken, self.registrytoken):
            h.update(part.encode() + b"\0")
        return h.hexdigest()


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` values: ``Bearer realm="...",service="...",scope="a,b"``.

    Several challenges may share a header; quoted values may hold commas and
    backslash escapes."""
    out: list[Challenge] = []
    for header in headers:
        s, i, n = header, 0, len(header)
        cur: Challenge | None = None
        while i < n:
            while i < n and s[i] in " \t,":
                i += 1
            start = i
            while i < n and s[i] not in " \t,=":
                i += 1
            token = s[start:i]
            if not token:
                break
            j = i
            while j < n and s[j] in " \t":
                j += 1
            if j < n and s[j] == "=" and cur is not None:
                i = j + 1
                while i < n and s[i] in " \t":
                    i += 1
                if i < n and s[i] == '"':
                    i += 1
                    buf = []
                    while i < n and s[i] != '"':
                        if s[i] == "\\" and i + 1 < n:
                            i += 1
                        buf.append(s[i])
                        i += 1
                    i += 1
                    value = "".join(buf)
                else:
                    start = i
                    while i < n and s[i] not in " \t,":
                        i += 1
                    value = s[start:i]
                cur.params[token.lower()] = value
            else:
                cur = Challenge(token.lower(), {})
                out.append(cur)
                i = j
    return out


@dataclass
class Token:
    token: str
    expires: float  # time.monotonic()
    refresh_token: str = ""


class TokenCache:
    """Bearer tokens by (realm, service, scopes, credentials), shared by every session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, tuple[str, ...], str], Token] = {}

    def get(self, key: tuple[str, str, tuple[str, ...], str]) -> Token | None:
        with self._lock:
            tok = self._tokens.get(key)
            if tok is not None and tok.expires <= time.monotonic():
                del self._tokens[key]
                return None
            return tok

    def put(self, key: tuple[str, str, tuple[str, ...], str], tok: Token) -> None:
        with self._lock:
            self._tokens[key] = tok

    def drop(self, key: tuple[str, str, tuple[str, ...], str]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


def token_from_response(body: bytes) -> Token:
    """A token server's answer: ``token`` or ``access_token``, ``expires_in`` (at least
    60 s), ``refresh_token`` when offline access was asked for."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise errdefs.Unauthorized(f"unable to decode token response: {e}") from None
    if not isinstance(doc, dict):
        raise errdefs.Unauthorized("unable to decode token response: not a JSON object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise errdefs.Unauthorized("authorization server did not include a token in the response")
    expires_in = doc.get("expires_in")
    life = float(expires_in) if isinstance(expires_in, (int, float)) else 0.0
    refresh = doc.get("refresh_token")
    return Token(
        token,
        time.monotonic() + max(life, MIN_TOKEN_LIFETIME),
        refresh if isinstance(refresh, str) else "",
    )
