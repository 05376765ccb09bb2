"""Optional bearer-token authentication.

The token comes from the settings (``token``, else the file ``token_file``), else from
``$MMGUARD_SERVE_TOKEN``; without any of them the service is open (and the CLI warns when it
listens beyond the loopback interface). A request is let in when its ``Authorization: Bearer
<token>`` header matches, compared in constant time (:func:`hmac.compare_digest`). Tokens must be
at least :data:`MIN_TOKEN_LENGTH` printable ASCII characters without spaces (what an HTTP header
can carry unchanged).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from mmguard.errors import SpecError
from mmguard.serve.problems import RequestError
from mmguard.serve.settings import ServeSettings

TOKEN_ENV = "MMGUARD_SERVE_TOKEN"
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_BYTES = 4096


def resolve_token(settings: ServeSettings) -> str | None:
    """The bearer token the service requires, or ``None`` (open); a bad token is a one-line SpecError."""
    if settings.token is not None:
        return check_token(settings.token.get_secret_value(), "the token setting")
    if settings.token_file is not None:
        return check_token(read_token_file(settings.token_file), f"token file {str(settings.token_file)!r}")
    env = os.environ.get(TOKEN_ENV)
    if env is not None:
        return check_token(env.strip(), f"${TOKEN_ENV}")
    return None


def read_token_file(path: Path) -> str:
    """The token held by ``path`` (surrounding whitespace, e.g. a final newline, removed)."""
    if not path.is_file():
        raise SpecError(f"token file {str(path)!r} does not exist or is not a file")
    if path.stat().st_size > MAX_TOKEN_BYTES:
        raise SpecError(f"token file {str(path)!r} is larger than {MAX_TOKEN_BYTES} bytes; it should hold one token")
    try:
        return path.read_text(encoding="ascii").strip()
    except UnicodeDecodeError:
        raise SpecError(f"token file {str(path)!r} holds non-ASCII bytes; a token is printable ASCII") from None


def check_token(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise SpecError(f"{where}: a token needs at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex "
                        "32`)")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise SpecError(f"{where}: a token is printable ASCII without spaces")
    return token


def authorized(header: str | None, token: str | None) -> bool:
    """Does an ``Authorization`` header carry ``token``? Always true when no token is configured."""
    if token is None:
        return True
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("ascii"))


def require(header: str | None, token: str | None) -> None:
    """Raise 401 (with ``WWW-Authenticate: Bearer``) unless the header carries the token."""
    if not authorized(header, token):
        what = "missing" if not header else "wrong or malformed"
        raise RequestError(401, f"{what} bearer token: send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": 'Bearer realm="mmguard"'})
