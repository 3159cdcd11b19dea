"""Webhook authenticity checks. Both compare in constant time (``hmac.compare_digest``)."""

from __future__ import annotations

import hashlib
import hmac


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``: HMAC-SHA256 of the raw bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not secret:
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(), header.strip().encode())


def verify_gitlab(secret: str, header: str | None) -> bool:
    """GitLab sends the shared secret itself in ``X-Gitlab-Token`` (no HMAC)."""
    if not header or not secret:
        return False
    return hmac.compare_digest(secret.encode(), header.encode())
