"""keys: the pure key core of authserver. No I/O, no web stack.

Mint API keys (one fresh keypair per key, private half burnt after one
signature), publish their public JWKs, and verify them strictly::

    import keys
    minted = keys.mint({"iss": "https://auth.example/t/acme", "aud": "acme-api"})
    keyset = keys.PublicKeySet([minted.public_jwk])
    verifier = keys.Verifier(keyset, issuer="https://auth.example/t/acme", audience="acme-api")
    verifier.verify(minted.key).kid == minted.kid

Errors: see :mod:`keys.errors`. Low-level names that are easy to misuse
(``unverified_kid``, ``mint_with_keypair``, ``KeypairPool``, the mutable
``ALGORITHMS`` registry and ``register``) live in :mod:`keys.hazmat`.
"""


from ._algorithms import DEFAULT_ALGORITHM, Algorithm, get_algorithm, supported_algorithms
from ._jwk import VerificationKey, load_public_jwk, public_jwk, public_only, sentinel_jwk, thumbprint
from ._mint import MintedKey, mint
from .errors import (
    BadSignature,
    ExpiredToken,
    InvalidClaims,
    InvalidKeyString,
    KeyCoreError,
    MissingKeyId,
    NotYetValid,
    TokenTooLarge,
    UnknownKeyId,
    UnsupportedAlgorithm,
    UntrustedHeader,
    WrongPrefix,
)
from .jwks import JWKSDocument, RenderedJWKS
from .keystring import (
    KEY_STRING_PATTERN,
    KEY_STRING_REGEX,
    PREFIX_PATTERN,
    SECRET_SCANNING_PATTERN,
    ParsedKeyString,
    format_key_string,
    is_key_string,
    parse_key_string,
    validate_prefix,
)
from .signed_messages import P256PublicKey
from .verify import UNTRUSTED_HEADERS, KeyLookup, PublicKeySet, VerifiedKey, Verifier

__all__ = [
    # algorithms
    "DEFAULT_ALGORITHM",
    "Algorithm",
    "get_algorithm",
    "supported_algorithms",
    # JWKs
    "VerificationKey",
    "load_public_jwk",
    "public_jwk",
    "public_only",
    "sentinel_jwk",
    "thumbprint",
    # minting
    "MintedKey",
    "mint",
    # key strings
    "KEY_STRING_PATTERN",
    "KEY_STRING_REGEX",
    "PREFIX_PATTERN",
    "SECRET_SCANNING_PATTERN",
    "ParsedKeyString",
    "format_key_string",
    "is_key_string",
    "parse_key_string",
    "validate_prefix",
    # verification
    "UNTRUSTED_HEADERS",
    "KeyLookup",
    "PublicKeySet",
    "VerifiedKey",
    "Verifier",
    # messages others sign for us (secret-scanning reports)
    "P256PublicKey",
    # JWKS document
    "JWKSDocument",
    "RenderedJWKS",
    # errors
    "KeyCoreError",
    "InvalidKeyString",
    "WrongPrefix",
    "TokenTooLarge",
    "UnsupportedAlgorithm",
    "UntrustedHeader",
    "MissingKeyId",
    "UnknownKeyId",
    "BadSignature",
    "InvalidClaims",
    "ExpiredToken",
    "NotYetValid",
]
