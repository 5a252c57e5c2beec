"""Settings: the environment parsed into one typed, validated object."""

from __future__ import annotations

import pytest

from authserver.settings import DEFAULT_SQLITE_URL, Settings


def test_defaults():
    s = Settings.from_env({})
    assert s.database_url == DEFAULT_SQLITE_URL and s.is_sqlite
    assert (s.host, s.port, s.public_url, s.base_url) == ("127.0.0.1", 8080, "http://127.0.0.1:8080",
                                                          "http://127.0.0.1:8080")
    assert s.redis_url is None and s.redis_namespace == "authserver"
    assert (s.gateway_cache_seconds, s.jwks_max_age_seconds, s.max_body_bytes) == (300, 60, 65536)
    assert (s.default_algorithm, s.pool_algorithms, s.default_tenant) == ("RS256", ("RS256",), "default")
    assert s.instant_activation is False and s.log_json is True and s.run_migrations is True
    assert s.mint_pool_max_age_seconds == 3600.0 and s.degraded_cache_ttl_seconds == 2.0
    assert Settings() == s  # the constructor and the empty environment agree


def test_env_strings_become_typed_values():
    s = Settings.from_env({
        "AUTHSERVER_PORT": "9090",
        "AUTHSERVER_GATEWAY_CACHE_SECONDS": " 60 ",
        "AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS": "0.5",
        "AUTHSERVER_MINT_POOL_MAX_AGE_SECONDS": "10",
        "AUTHSERVER_LOG_JSON": "no",
        "AUTHSERVER_INSTANT_ACTIVATION": "1",
        "AUTHSERVER_RUN_MIGRATIONS": "0",
        "AUTHSERVER_REDIS_URL": "redis://127.0.0.1:6379/0",
        "AUTHSERVER_MINT_POOL_ALGORITHMS": "RS256, ES256",
        "AUTHSERVER_HOST": "",  # empty means unset
        "OTHER_PORT": "1",
    })
    assert s.port == 9090 and s.gateway_cache_seconds == 60
    assert s.degraded_cache_ttl_seconds == 0.5 and s.mint_pool_max_age_seconds == 10.0
    assert isinstance(s.mint_pool_max_age_seconds, float)
    assert (s.log_json, s.instant_activation, s.run_migrations) == (False, True, False)
    assert s.redis_url == "redis://127.0.0.1:6379/0" and s.pool_algorithms == ("RS256", "ES256")
    assert s.host == "127.0.0.1" and s.public_url == "http://127.0.0.1:9090"


@pytest.mark.parametrize("raw, value", [
    *((t, True) for t in ("1", "true", "True", "YES", "on")),
    *((f, False) for f in ("0", "false", "FALSE", "no", "Off")),
])
def test_bool_spellings(raw, value):
    assert Settings.from_env({"AUTHSERVER_LOG_JSON": raw}).log_json is value


def test_overrides_win_over_the_environment():
    s = Settings.from_env({"AUTHSERVER_PORT": "1", "AUTHSERVER_HOST": "0.0.0.0"}, port=2, database_url="sqlite:///x.db")
    assert (s.host, s.port) == ("0.0.0.0", 2) and s.database_url == "sqlite+aiosqlite:///x.db"


@pytest.mark.parametrize("var, raw", [
    ("AUTHSERVER_PORT", "eighty"),
    ("AUTHSERVER_PORT", "70000"),
    ("AUTHSERVER_GATEWAY_CACHE_SECONDS", "0"),
    ("AUTHSERVER_MAX_BODY_BYTES", "100"),
    ("AUTHSERVER_KEYGEN_THREADS", "0"),
    ("AUTHSERVER_RATE_LIMIT_ADMIN_PER_MINUTE", "-1"),
    ("AUTHSERVER_DEGRADED_CACHE_TTL_SECONDS", "soon"),
    ("AUTHSERVER_LOG_JSON", "maybe"),
    ("AUTHSERVER_INSTANT_ACTIVATION", "2"),
])
def test_bad_values_name_the_variable(var, raw):
    with pytest.raises(ValueError) as exc:
        Settings.from_env({var: raw})
    assert str(exc.value).startswith(f"{var}=") and "not valid" in str(exc.value)


def test_cross_field_rules():
    with pytest.raises(ValueError, match="AUTHSERVER_PUBLIC_URL must start with http"):
        Settings.from_env({"AUTHSERVER_PUBLIC_URL": "ftp://x"})
    with pytest.raises(ValueError, match="unknown algorithm"):
        Settings.from_env({"AUTHSERVER_DEFAULT_ALGORITHM": "HS256"})
    with pytest.raises(ValueError, match="unknown algorithm"):
        Settings(mint_pool_algorithms="RS256,none")
    assert Settings(public_url="https://auth.example/").public_url == "https://auth.example"
    assert Settings(host="0.0.0.0", port=9).base_url == "http://0.0.0.0:9"
    for given, normalized in (("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
                              ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
                              ("sqlite:///a.db", "sqlite+aiosqlite:///a.db"),
                              ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db")):
        assert Settings(database_url=given).database_url == normalized


def test_the_constructor_validates_too():
    """Python callers get the same checks as the environment (no separate validate step)."""
    with pytest.raises(ValueError, match="AUTHSERVER_GATEWAY_CACHE_SECONDS=0"):
        Settings(gateway_cache_seconds=0)
    with pytest.raises(ValueError, match="AUTHSERVER_PORT='80'"):
        Settings(port="80")  # type: ignore[arg-type]


def test_frozen_and_replace_returns_a_validated_copy():
    s = Settings(public_url="http://a.test/")
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
    t = s.replace(gateway_cache_seconds=5, database_url="postgres://u@h/db")
    assert t.gateway_cache_seconds == 5 and t.database_url == "postgresql+asyncpg://u@h/db"
    assert s.gateway_cache_seconds == 300 and t.public_url == "http://a.test"
    with pytest.raises(ValueError, match="AUTHSERVER_MAX_BODY_BYTES"):
        s.replace(max_body_bytes=1)


@pytest.mark.parametrize(("key", "previous", "named"), [
    ("short", "", "AUTHSERVER_WEBHOOK_KEY:"),
    ("short", "short", "AUTHSERVER_WEBHOOK_KEY:"),  # both bad: the current key first
    (None, "short", "AUTHSERVER_WEBHOOK_PREVIOUS_KEYS:"),
])
def test_a_bad_webhook_key_names_its_setting(key, previous, named):
    import keys.webhooks as wh
    from authserver.services.webhooks import load_box

    good = wh.new_box_key()
    with pytest.raises(ValueError, match="32 bytes") as err:
        load_box(Settings(webhook_key=key or good, webhook_previous_keys=f"{wh.new_box_key()},{previous}"))
    assert str(err.value).startswith(named)
    box = load_box(Settings(webhook_key=good, webhook_previous_keys=wh.new_box_key()))
    assert box is not None and box.open(box.seal(wh.new_secret(), "ep_1"), "ep_1").startswith("whsec_")


def test_the_event_loop_setting(monkeypatch):
    from authserver import serving

    assert Settings().loop == "auto" and serving.event_loop(Settings()) == "uvloop"  # a dependency
    assert serving.event_loop(Settings.from_env({"AUTHSERVER_LOOP": "asyncio"})) == "asyncio"
    with pytest.raises(ValueError, match="AUTHSERVER_LOOP"):
        Settings.from_env({"AUTHSERVER_LOOP": "trio"})
    monkeypatch.setattr(serving.importlib.util, "find_spec", lambda name: None)  # not installed
    assert serving.event_loop(Settings()) == "asyncio"
    with pytest.raises(ValueError, match="uvloop is not installed"):
        serving.event_loop(Settings(loop="uvloop"))
