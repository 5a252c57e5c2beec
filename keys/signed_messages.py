"""Verify messages that others sign for us with ECDSA P-256 / SHA-256.

GitHub's secret-scanning partner program (and PyPI's token disclosure) sign the
raw request body with a P-256 key whose public half they publish as PEM; the
signature is base64 DER. This is the only place the service checks such a
signature, so the crypto stays in keys/ with everything else.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["P256PublicKey"]

# a DER P-256 signature is at most 72 bytes (96 base64 characters); leave room, refuse junk early
_MAX_SIGNATURE_CHARS = 128
_MAX_PEM_CHARS = 4096


class P256PublicKey:
    """One signer's public key. ``from_pem`` refuses anything but a P-256 public key."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("not a P-256 key")
        self._key = key

    @classmethod
    def from_pem(cls, pem: str) -> P256PublicKey:
        if not isinstance(pem, str) or len(pem) > _MAX_PEM_CHARS:
            raise ValueError("not a PEM public key")
        try:
            key = serialization.load_pem_public_key(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError, TypeError):
            raise ValueError("not a PEM public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("not an ECDSA public key")
        return cls(key)

    def verify(self, message: bytes, signature_b64: str) -> bool:
        """Whether ``signature_b64`` (standard base64 of a DER ECDSA signature)
        signs ``message`` with SHA-256. Any malformed signature is simply False."""
        if not isinstance(signature_b64, str) or not 0 < len(signature_b64) <= _MAX_SIGNATURE_CHARS:
            return False
        try:
            der = base64.b64decode(signature_b64.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return False
        try:
            self._key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True
