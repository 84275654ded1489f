"""Webhook signing secrets at rest: sealed with AES-GCM under a key derived from
TRAINFORGE_SECRET_KEY.

The API shows a secret once, when the subscription is created; the dispatcher unseals it to
sign each delivery. A copy of the database alone (a backup, a read-only replica, a leaked dump)
does not reveal any secret. The subscription's id is the associated data, so a sealed secret
copied onto another subscription's row does not unseal there. Changing TRAINFORGE_SECRET_KEY
makes every stored secret unreadable: deliveries then fail with a message that says so, and
the team re-creates its subscriptions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_NONCE_BYTES = 12


class SecretUnreadable(Exception):
    """A sealed secret does not open with this process's TRAINFORGE_SECRET_KEY."""


def _key(secret_key: bytes) -> bytes:
    # Its own key: a sealed secret shares nothing with job tokens, download links or sessions.
    return hmac.new(secret_key, b"trainforge-webhook-secrets", hashlib.sha256).digest()


def seal(secret_key: bytes, webhook_id: str, secret: str) -> str:
    """``secret`` encrypted for the row of ``webhook_id``: ``v1.<base64 nonce+ciphertext>``."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, secret.encode(), webhook_id.encode())
    return f"{_VERSION}.{base64.b64encode(nonce + sealed).decode()}"


def unseal(secret_key: bytes, webhook_id: str, sealed: str) -> str:
    """The secret :func:`seal` sealed for ``webhook_id``.

    Raises:
        SecretUnreadable: not sealed with this key for this subscription.
    """
    version, _, payload = sealed.partition(".")
    try:
        raw = base64.b64decode(payload, validate=True)
        if version != _VERSION or len(raw) <= _NONCE_BYTES:
            raise ValueError(version)
        plain = AESGCM(_key(secret_key)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                 webhook_id.encode())
    except (InvalidTag, ValueError, binascii.Error):
        raise SecretUnreadable(
            f"the signing secret of webhook {webhook_id} does not open with this "
            "TRAINFORGE_SECRET_KEY (was the key changed?); delete the subscription and create "
            "it again") from None
    return plain.decode()
