"""squall.common.settings: defaults, SQUALL_* environment overrides, explicit overrides, validation."""

from __future__ import annotations

import dataclasses

import pytest
from squall.common.settings import Settings, SettingsError, env_names


def test_defaults_without_environment():
    s = Settings.from_env(env={})
    assert s == Settings()
    assert s.heartbeat_interval == 0.1
    assert s.heartbeat_misses == 4
    assert s.executor_slots == 1
    assert s.max_message_bytes == 256 * 1024 * 1024
    assert s.log_format == "auto"
    assert s.death_timeout == pytest.approx(0.4)  # under half a second, for local clusters


def test_env_overrides_are_parsed_to_field_types():
    env = {
        "SQUALL_HEARTBEAT_INTERVAL": "0.05",
        "SQUALL_HEARTBEAT_MISSES": "7",
        "SQUALL_EXECUTOR_SLOTS": "4",
        "SQUALL_SCHEDULER_ADDRESS": "tcp://10.0.0.1:9000",
        "SQUALL_MAX_MESSAGE_BYTES": "2048",
        "SQUALL_LOG_FORMAT": "json",
        "SQUALL_EXECUTOR_ADVERTISE_HOST": "",
    }
    s = Settings.from_env(env=env)
    assert s.heartbeat_interval == 0.05 and type(s.heartbeat_interval) is float
    assert s.heartbeat_misses == 7 and type(s.heartbeat_misses) is int
    assert s.executor_slots == 4 and type(s.executor_slots) is int
    assert s.scheduler_address == "tcp://10.0.0.1:9000"
    assert s.max_message_bytes == 2048
    assert s.log_format == "json"
    assert s.executor_advertise_host == ""
    assert s.death_timeout == pytest.approx(0.35)


def test_unrelated_variables_are_ignored():
    s = Settings.from_env(env={"SQUALL_NOT_A_SETTING": "x", "HEARTBEAT_INTERVAL": "9", "squall_executor_slots": "3"})
    assert s == Settings()


def test_explicit_overrides_win_over_env():
    env = {"SQUALL_EXECUTOR_SLOTS": "4", "SQUALL_HEARTBEAT_INTERVAL": "0.5"}
    s = Settings.from_env(env=env, executor_slots=2, log_level="debug")
    assert s.executor_slots == 2
    assert s.heartbeat_interval == 0.5  # not overridden: env still applies
    assert s.log_level == "debug"


def test_none_override_means_not_given():
    s = Settings.from_env(env={"SQUALL_EXECUTOR_SLOTS": "4"}, executor_slots=None)
    assert s.executor_slots == 4


def test_unknown_override_is_rejected():
    with pytest.raises(SettingsError, match="no_such_setting"):
        Settings.from_env(env={}, no_such_setting=1)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("SQUALL_HEARTBEAT_MISSES", "five"),
        ("SQUALL_HEARTBEAT_MISSES", "2.5"),
        ("SQUALL_EXECUTOR_SLOTS", ""),
        ("SQUALL_HEARTBEAT_INTERVAL", "fast"),
        ("SQUALL_MAX_MESSAGE_BYTES", "1MB"),
        ("SQUALL_PARENT_PID", "abc"),
    ],
)
def test_unparseable_env_value_names_the_variable(name, raw):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env={name: raw})
    assert name in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"SQUALL_HEARTBEAT_INTERVAL": "0"}, "heartbeat_interval"),
        ({"SQUALL_HEARTBEAT_INTERVAL": "-1"}, "heartbeat_interval"),
        ({"SQUALL_HEARTBEAT_MISSES": "0"}, "heartbeat_misses"),
        ({"SQUALL_HUNG_TIMEOUT": "0"}, "hung_timeout"),
        ({"SQUALL_EXECUTOR_SLOTS": "0"}, "executor_slots"),
        ({"SQUALL_MAX_MESSAGE_BYTES": "100"}, "max_message_bytes"),
        ({"SQUALL_LOG_FORMAT": "xml"}, "log_format"),
    ],
)
def test_out_of_range_env_value_is_rejected(env, field):
    with pytest.raises(SettingsError, match=field):
        Settings.from_env(env=env)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("SQUALL_HEARTBEAT_INTERVAL", "nan"),  # death_timeout nan: no executor is ever declared dead
        ("SQUALL_HEARTBEAT_INTERVAL", "inf"),  # ServiceLoop timer arithmetic overflows on inf
        ("SQUALL_SHUFFLE_LOOKUP_TIMEOUT", "-1"),  # LookupMapOutputs(timeout=-1) fails validation at shuffle_meta
        ("SQUALL_SHUFFLE_FETCH_TIMEOUT", "-1"),
        ("SQUALL_CONNECT_TIMEOUT", "-5"),
    ],
)
def test_nonsensical_durations_are_rejected(name, raw):
    with pytest.raises(SettingsError, match=name.removeprefix("SQUALL_").lower()):
        Settings.from_env(env={name: raw})


def test_to_env_round_trips_through_from_env():
    original = Settings(
        heartbeat_interval=0.05,
        heartbeat_misses=6,
        executor_slots=3,
        scheduler_address="tcp://10.1.2.3:7000",
        executor_advertise_host="",
        shuffle_fetch_timeout=0.1 + 0.2,  # a float whose str must round-trip exactly
        log_format="console",
        parent_pid=1234,
    )
    env = original.to_env()
    assert set(env) == env_names()
    assert all(isinstance(v, str) for v in env.values())
    assert Settings.from_env(env=env) == original


def test_env_names_cover_every_field():
    names = env_names()
    assert "SQUALL_HEARTBEAT_INTERVAL" in names
    assert len(names) == len(dataclasses.fields(Settings))


def test_replace_validates_and_leaves_original_untouched():
    base = Settings()
    changed = base.replace(executor_slots=8)
    assert changed.executor_slots == 8 and base.executor_slots == 1
    with pytest.raises(SettingsError):
        base.replace(heartbeat_misses=0)
