"""Credentials out of everything we store or print: URLs lose their ``user:password@``.

One module, used by the git-clone step (its log), the run store (``run.json``), the listener
(``events.db`` and its log lines) and the CLI: a secret typed into a clone URL must not land in
any file under the taskyard home nor in any output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

# scheme://userinfo@ — userinfo is anything up to the first '@' before the host part.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """Hide ``user:password@`` (or a bare token ``tok@``) in every URL inside ``text``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def strip_userinfo(url: str) -> str:
    """The URL without userinfo, for http(s) only (an ssh user name is not a secret)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def redact_values(values: Mapping[str, str]) -> dict[str, str]:
    """A params/results mapping as it may be stored or shown."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}
