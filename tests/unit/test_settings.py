"""`load_settings`: `TKCLOUD_*` variables parsed once, typed and validated, with errors that name
the variable and the value that was wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tkcloud_api.settings import Settings, SettingsError, load_settings


def test_with_nothing_set_the_service_runs_embedded_with_documented_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.embedded_database
    assert settings.database_url == ""
    assert settings.resolved_database_url == (
        f"sqlite+aiosqlite:///{Path('.tkcloud').resolve() / 'tkcloud.db'}"
    )
    assert settings.redis_url == ""  # in-process caches
    assert settings.redis_prefix == "tkcloud:"
    assert settings.secret_key == ""
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.resolved_public_url == "http://127.0.0.1:8000"
    assert settings.region == "local"
    assert settings.app_cache_seconds == 5.0
    assert settings.rotation_grace_hours == 24.0
    assert settings.auto_migrate is True
    assert settings.access_log is False
    assert settings.log_level == "info"


def test_values_are_typed_from_their_strings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "TKCLOUD_PORT": "9000",
            "TKCLOUD_WORKERS": "4",
            "TKCLOUD_APP_CACHE_SECONDS": "0.5",
            "TKCLOUD_ROTATION_GRACE_HOURS": "0",
            "TKCLOUD_AUTO_MIGRATE": "false",
            "TKCLOUD_ACCESS_LOG": "1",
            "TKCLOUD_REGION": "eu-west-1",
            "TKCLOUD_DATA_DIR": str(tmp_path),
            "TKCLOUD_REDIS_URL": "redis://cache:6379/2",
            "TKCLOUD_LOG_LEVEL": "DEBUG",
        }
    )
    assert (settings.port, settings.workers) == (9000, 4)
    assert (settings.app_cache_seconds, settings.rotation_grace_hours) == (0.5, 0.0)
    assert (settings.auto_migrate, settings.access_log) == (False, True)
    assert settings.region == "eu-west-1"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.log_level == "DEBUG"  # accepted in any case
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'tkcloud.db'}"
    assert settings.resolved_public_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("0", False), ("False", False)])
def test_booleans_accept_true_false_1_and_0(value: str, expected: bool) -> None:
    assert load_settings({"TKCLOUD_AUTO_MIGRATE": value}).auto_migrate is expected


def test_the_public_url_loses_its_trailing_slash() -> None:
    settings = load_settings({"TKCLOUD_PUBLIC_URL": "https://telemetry.example.com/"})
    assert settings.resolved_public_url == "https://telemetry.example.com"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TKCLOUD_PORT", "0", "expected 1-65535"),
        ("TKCLOUD_PORT", "65536", "expected 1-65535"),
        ("TKCLOUD_PORT", "eighty", "expected `int`"),
        ("TKCLOUD_PORT", " 8000", "expected `int`"),
        ("TKCLOUD_WORKERS", "0", "expected at least 1"),
        ("TKCLOUD_WORKERS", "1.5", "expected `int`"),
        ("TKCLOUD_APP_CACHE_SECONDS", "soon", "expected `float`"),
        ("TKCLOUD_ROTATION_GRACE_HOURS", "a day", "expected `float`"),
        ("TKCLOUD_AUTO_MIGRATE", "yes", "expected `bool`"),
        ("TKCLOUD_ACCESS_LOG", "on", "expected `bool`"),
        ("TKCLOUD_LOG_LEVEL", "verbose", "expected critical, error, warning, info or debug"),
        ("TKCLOUD_DATABASE_URL", "mysql://db/tkcloud", "expected postgresql://"),
        ("TKCLOUD_DATABASE_URL", "sqlite:///tkcloud.db", "sqlite+aiosqlite:///path"),
        ("TKCLOUD_REDIS_URL", "http://cache:6379", "expected redis://, rediss:// or unix://"),
        ("TKCLOUD_REGION", "EU West", "expected 1-32 characters of a-z, 0-9 and -"),
        ("TKCLOUD_REGION", "", "expected 1-32 characters"),
        ("TKCLOUD_REGION", "r" * 33, "expected 1-32 characters"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert expected in message
    assert repr(value) in message


def test_a_settings_error_is_a_value_error_and_keeps_its_cause() -> None:
    with pytest.raises(ValueError, match="TKCLOUD_PORT") as raised:
        load_settings({"TKCLOUD_PORT": "x"})
    assert raised.value.__cause__ is not None


@pytest.mark.parametrize("variable", ["TKCLOUD_APP_CACHE_SECONDS", "TKCLOUD_ROTATION_GRACE_HOURS"])
def test_a_negative_duration_is_refused_naming_the_variable_and_the_value(variable: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: "-1"})
    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert "'-1'" in message


@pytest.mark.parametrize("variable", ["TKCLOUD_APP_CACHE_SECONDS", "TKCLOUD_ROTATION_GRACE_HOURS"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_duration_that_is_not_a_finite_number_is_refused(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("postgres://u:p@db:5432/tk", "postgresql+asyncpg://u:p@db:5432/tk"),
        ("postgresql://u:p@db:5432/tk", "postgresql+asyncpg://u:p@db:5432/tk"),
        ("postgresql+asyncpg://u:p@db:5432/tk", "postgresql+asyncpg://u:p@db:5432/tk"),
    ],
)
def test_every_postgres_url_form_is_served_by_asyncpg(url: str, resolved: str) -> None:
    settings = load_settings({"TKCLOUD_DATABASE_URL": url})
    assert settings.database_url == url  # kept as given
    assert settings.resolved_database_url == resolved
    assert not settings.embedded_database


def test_an_explicit_sqlite_url_is_used_as_is_and_is_embedded() -> None:
    settings = load_settings({"TKCLOUD_DATABASE_URL": "sqlite+aiosqlite:////var/lib/tk.db"})
    assert settings.resolved_database_url == "sqlite+aiosqlite:////var/lib/tk.db"
    assert settings.embedded_database


def test_variables_without_the_tkcloud_prefix_are_ignored() -> None:
    settings = load_settings(
        {
            "PORT": "1",
            "DATABASE_URL": "mysql://elsewhere",
            "REDIS_URL": "nonsense",
            "tkcloud_port": "not a number",  # names are case-sensitive: not ours
            "MY_TKCLOUD_PORT": "2",
            "HOME": "/root",
        }
    )
    assert settings == Settings()


def test_unknown_tkcloud_variables_such_as_the_test_suites_are_ignored() -> None:
    settings = load_settings(
        {
            "TKCLOUD_TEST_POSTGRES_DSN": "postgresql://postgres@127.0.0.1:5432/test",
            "TKCLOUD_TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
            "TKCLOUD_PORT": "8001",
        }
    )
    assert settings.port == 8001
    assert settings.database_url == ""


def test_without_an_argument_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TKCLOUD_PORT", "8123")
    monkeypatch.setenv("TKCLOUD_REGION", "test-region")
    settings = load_settings()
    assert (settings.port, settings.region) == (8123, "test-region")


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_a_misspelt_variable_is_refused_and_the_known_ones_listed() -> None:
    with pytest.raises(SettingsError, match="TKCLOUD_DATABSE_URL: unknown setting") as raised:
        load_settings({"TKCLOUD_DATABSE_URL": "postgresql://db/x"})
    assert "TKCLOUD_DATABASE_URL" in str(raised.value)


def test_the_test_suites_own_variables_are_not_settings() -> None:
    assert load_settings({"TKCLOUD_TEST_POSTGRES_DSN": "x", "TKCLOUD_MIGRATIONS_DIR": "m"})


def test_a_password_in_a_bad_url_is_not_repeated() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"TKCLOUD_SMTP_URL": "mailto://user:hunter2@mail.example"})
    assert "hunter2" not in str(raised.value)
    assert "user:***@mail.example" in str(raised.value)


def test_stripe_needs_all_its_settings_and_the_secret_is_not_repeated() -> None:
    with pytest.raises(SettingsError, match="TKCLOUD_STRIPE_WEBHOOK_SECRET") as raised:
        load_settings({"TKCLOUD_STRIPE_SECRET_KEY": "sk_test_do_not_print"})
    assert "sk_test_do_not_print" not in str(raised.value)
