"""The public surface of keys/: __all__, the error family, and importability
without the web stack."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import keys
import keys.errors
import keys.hazmat

REPO = Path(__file__).resolve().parents[2]

# The documented, stable error codes (keys/errors.py): callers log and count them.
CODES = {
    "KeyCoreError": "key_error",
    "InvalidKeyString": "malformed",
    "WrongPrefix": "wrong_prefix",
    "TokenTooLarge": "too_large",
    "UnsupportedAlgorithm": "unsupported_alg",
    "UntrustedHeader": "untrusted_header",
    "MissingKeyId": "missing_kid",
    "UnknownKeyId": "unknown_kid",
    "BadSignature": "bad_signature",
    "InvalidClaims": "invalid_claims",
    "ExpiredToken": "expired",
    "NotYetValid": "not_yet_valid",
}


PUBLIC = {
    "DEFAULT_ALGORITHM", "Algorithm", "get_algorithm", "supported_algorithms",
    "VerificationKey", "load_public_jwk", "public_jwk", "public_only", "sentinel_jwk", "thumbprint",
    "MintedKey", "mint",
    "KEY_STRING_PATTERN", "KEY_STRING_REGEX", "PREFIX_PATTERN", "ParsedKeyString", "format_key_string",
    "parse_key_string", "validate_prefix", "SECRET_SCANNING_PATTERN", "is_key_string",
    "P256PublicKey",
    "UNTRUSTED_HEADERS", "KeyLookup", "PublicKeySet", "VerifiedKey", "Verifier",
    "JWKSDocument", "RenderedJWKS",
    *CODES,
}
HAZMAT = {"ALGORITHMS", "KeypairPool", "mint_with_keypair", "register", "unverified_kid"}


def _public_members(module) -> set[str]:
    return {name for name, value in vars(module).items() if not name.startswith("_") and not inspect.ismodule(value)}


def test_all_names_exactly_the_public_members():
    assert len(keys.__all__) == len(set(keys.__all__)), "duplicates in __all__"
    assert set(keys.__all__) == _public_members(keys) == PUBLIC
    for name in keys.__all__:
        assert getattr(keys, name) is not None, name


def test_hazmat_names_are_exactly_the_risky_ones():
    assert len(keys.hazmat.__all__) == len(set(keys.hazmat.__all__))
    assert set(keys.hazmat.__all__) == _public_members(keys.hazmat) == HAZMAT
    assert not HAZMAT & set(keys.__all__)


def test_risky_names_are_only_in_hazmat():
    for name in HAZMAT:
        assert not hasattr(keys, name), name
    with pytest.raises(AttributeError):
        keys.no_such_name  # noqa: B018


def test_supported_algorithms_is_a_sorted_read_only_view():
    names = keys.supported_algorithms()
    assert names == ("ES256", "EdDSA", "PS256", "RS256") == tuple(sorted(keys.hazmat.ALGORITHMS))
    assert isinstance(names, tuple)


def test_every_submodule_declares_all():
    for path in sorted((REPO / "keys").glob("*.py")):
        module = importlib.import_module(f"keys.{path.stem}" if path.stem != "__init__" else "keys")
        assert isinstance(getattr(module, "__all__", None), list), path.name
        for name in module.__all__:
            assert hasattr(module, name), f"{path.name}: {name}"


def test_package_ships_py_typed():
    assert (REPO / "keys" / "py.typed").is_file()
    package_data = (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[tool.setuptools.package-data]")[1]
    assert 'keys = ["py.typed"]' in package_data


def test_every_error_is_exported_from_the_package():
    assert set(keys.errors.__all__) <= set(keys.__all__)
    for name in keys.errors.__all__:
        assert getattr(keys, name) is getattr(keys.errors, name)


def test_errors_form_one_family_with_unique_codes():
    classes = [getattr(keys.errors, name) for name in keys.errors.__all__]
    codes = []
    for cls in classes:
        assert inspect.isclass(cls) and issubclass(cls, keys.KeyCoreError), cls
        assert isinstance(cls.code, str) and cls.code, cls
        assert isinstance(cls.description, str) and cls.description, cls
        codes.append(cls.code)
    assert len(codes) == len(set(codes)), codes
    assert {cls.__name__: cls.code for cls in classes} == CODES


def test_errors_carry_code_and_description():
    exc = keys.ExpiredToken()
    assert (exc.code, exc.description) == ("expired", "the key has expired")
    assert str(exc) == "expired: the key has expired"
    exc = keys.InvalidClaims("wrong issuer")
    assert (exc.code, exc.description) == ("invalid_claims", "wrong issuer")
    assert isinstance(keys.WrongPrefix(), keys.InvalidKeyString)
    assert isinstance(keys.ExpiredToken(), keys.InvalidClaims)
    assert isinstance(keys.NotYetValid(), keys.InvalidClaims)


# Everything the service needs that keys/ must not: the web stack, the
# database, the cache, the service package and the JOSE libraries we only test
# with. joserfc and cryptography are keys/'s own dependencies.
BLOCKED = [
    "litestar", "sqlalchemy", "redis", "authserver", "uvicorn", "alembic", "aiosqlite", "asyncpg",
    "prometheus_client", "jinja2", "yaml", "msgspec", "httpx", "jwt", "jwcrypto",
]

IMPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    blocked = {blocked!r}
    for name in blocked:
        sys.modules[name] = None  # any import of it now raises ImportError
    try:
        import litestar
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not work")

    import keys

    minted = keys.mint({{"iss": "https://i.example", "aud": "api"}}, algorithm="EdDSA")
    verifier = keys.Verifier(keys.PublicKeySet([minted.public_jwk]), issuer="https://i.example",
                             audience="api", algorithms=["EdDSA"])
    assert verifier.verify(minted.key).kid == minted.kid
    doc = keys.JWKSDocument(sentinel=keys.sentinel_jwk())
    doc.add(minted.public_jwk)
    doc.render()
    import keys.hazmat
    assert "joserfc" in sys.modules
    loaded = sorted(n for n in sys.modules if n.split(".")[0] in blocked and sys.modules[n] is not None)
    assert not loaded, loaded
    print("OK", minted.kid)
    """
)


def test_keys_imports_and_mints_without_the_web_stack():
    script = IMPORT_SCRIPT.format(blocked=BLOCKED)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK ")


def test_the_blockers_really_block():
    """Control for the test above: a script that imports a blocked module fails."""
    script = IMPORT_SCRIPT.format(blocked=BLOCKED).replace("import keys\n", "import keys\nimport authserver\n", 1)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr
