"""Fire times: cron in time zones across DST changes, intervals, one-offs, windows, catch-up."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubeline.domain import schedules, specs

UTC = dt.UTC


def spec(**fields: Any) -> specs.ScheduleSpec:
    return specs.ScheduleSpec.model_validate(fields)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


def test_daily_cron_in_a_time_zone() -> None:
    s = spec(cron="0 2 * * *", timezone="Europe/Berlin")
    assert schedules.next_fire(s, utc(2024, 1, 10, 12)) == utc(2024, 1, 11, 1)  # CET = UTC+1
    assert schedules.next_fire(s, utc(2024, 7, 10, 12)) == utc(2024, 7, 11, 0)  # CEST = UTC+2


def test_spring_forward_a_skipped_wall_time_fires_once_at_the_pre_change_offset() -> None:
    # 2024-03-31 Berlin: 02:00 CET -> 03:00 CEST; 02:30 does not exist that day.
    s = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    got = list(schedules.fires(s, after=utc(2024, 3, 29, 12), until=utc(2024, 4, 1, 12)))
    assert got == [utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1, 30), utc(2024, 4, 1, 0, 30)]
    # every fire is once: asking from just before the jump gives the same instant
    assert schedules.next_fire(s, utc(2024, 3, 31, 0, 59)) == utc(2024, 3, 31, 1, 30)
    assert schedules.next_fire(s, utc(2024, 3, 31, 1, 10)) == utc(2024, 3, 31, 1, 30)


def test_spring_forward_no_instant_twice_for_frequent_crons() -> None:
    s = spec(cron="*/30 * * * *", timezone="Europe/Berlin")
    got = list(schedules.fires(s, after=utc(2024, 3, 30, 23, 45), until=utc(2024, 3, 31, 2, 45)))
    assert got == sorted(set(got))
    assert got == [utc(2024, 3, 31, 0), utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1),
                   utc(2024, 3, 31, 1, 30), utc(2024, 3, 31, 2), utc(2024, 3, 31, 2, 30)]


def test_fall_back_a_repeated_wall_time_fires_once_at_its_first_occurrence() -> None:
    # 2024-10-27 Berlin: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    s = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    got = list(schedules.fires(s, after=utc(2024, 10, 26, 12), until=utc(2024, 10, 28, 12)))
    assert got == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]
    # asked during the second 02:xx hour: the next fire is the next day
    assert schedules.next_fire(s, utc(2024, 10, 27, 1, 10)) == utc(2024, 10, 28, 1, 30)


def test_new_york_dst() -> None:
    s = spec(cron="30 2 * * *", timezone="America/New_York")
    spring = list(schedules.fires(s, after=utc(2024, 3, 9, 12), until=utc(2024, 3, 10, 23)))
    assert spring == [utc(2024, 3, 10, 7, 30)]  # 02:30 EST (did not exist) = 03:30 EDT
    repeated = spec(cron="30 1 * * *", timezone="America/New_York")  # 01:xx happens twice on 2024-11-03
    fall = list(schedules.fires(repeated, after=utc(2024, 11, 2, 12), until=utc(2024, 11, 3, 23)))
    assert fall == [utc(2024, 11, 3, 5, 30)]  # first 01:30 (EDT)


def test_interval_grid_is_anchored_on_start_or_epoch() -> None:
    s = spec(interval=3600)
    assert schedules.next_fire(s, utc(2024, 1, 1, 10, 20)) == utc(2024, 1, 1, 11)
    assert schedules.next_fire(s, utc(2024, 1, 1, 11)) == utc(2024, 1, 1, 12)  # strictly after
    anchored = spec(interval=600, start="2024-01-01T00:05:00Z")
    assert schedules.next_fire(anchored, utc(2023, 1, 1)) == utc(2024, 1, 1, 0, 5)
    assert schedules.next_fire(anchored, utc(2024, 1, 1, 0, 6)) == utc(2024, 1, 1, 0, 15)


def test_one_off_at_fires_once_naive_read_in_the_zone() -> None:
    s = spec(at="2024-05-01T09:00:00", timezone="Europe/Berlin")
    assert schedules.next_fire(s, utc(2024, 4, 1)) == utc(2024, 5, 1, 7)
    assert schedules.next_fire(s, utc(2024, 5, 1, 7)) is None


def test_start_and_end_window() -> None:
    s = spec(cron="0 * * * *", start="2024-01-01T05:00:00Z", end="2024-01-01T07:00:00Z")
    got = list(schedules.fires(s, after=utc(2024, 1, 1), until=utc(2024, 1, 2)))
    assert got == [utc(2024, 1, 1, 5), utc(2024, 1, 1, 6), utc(2024, 1, 1, 7)]
    assert schedules.next_fire(s, utc(2024, 1, 1, 7)) is None
    assert schedules.next_fires(s, after=utc(2024, 1, 1), count=10) == got


@pytest.mark.parametrize(("policy", "expected_hours"), [
    ("none", []), ("latest", [9]), ("all", [6, 7, 8, 9]),
])
def test_catch_up_after_downtime(policy: str, expected_hours: list[int]) -> None:
    s = spec(cron="0 * * * *", catchup=policy, catchup_limit=4)
    got = schedules.due(s, since=utc(2024, 1, 1, 1), now=utc(2024, 1, 1, 9, 30))
    assert got == [utc(2024, 1, 1, h) for h in expected_hours]


def test_on_time_fires_are_made_under_every_policy() -> None:
    for policy in ("none", "latest"):
        s = spec(cron="0 * * * *", catchup=policy)
        assert schedules.due(s, since=utc(2024, 1, 1, 1), now=utc(2024, 1, 1, 9, 0, 2)) == [utc(2024, 1, 1, 9)]
        assert schedules.due(s, since=utc(2024, 1, 1, 9), now=utc(2024, 1, 1, 9, 0, 2)) == []
    every = spec(cron="0 * * * *", catchup="all")
    assert schedules.due(every, since=utc(2024, 1, 1, 8, 59, 30), now=utc(2024, 1, 1, 9, 0, 2)) == [utc(2024, 1, 1, 9)]


def test_catch_up_all_keeps_the_newest_within_the_limit_over_a_long_downtime() -> None:
    s = spec(cron="* * * * *", catchup="all", catchup_limit=3)
    got = schedules.due(s, since=utc(2024, 1, 1), now=utc(2024, 3, 1, 0, 0, 30))
    assert got == [utc(2024, 2, 29, 23, 58), utc(2024, 2, 29, 23, 59), utc(2024, 3, 1)]


def test_latest_finds_a_rare_fire_long_ago() -> None:
    s = spec(cron="0 0 1 1 *", catchup="latest")
    assert schedules.due(s, since=utc(2020, 6, 1), now=utc(2023, 6, 1)) == [utc(2023, 1, 1)]


def test_nothing_due_before_since_or_outside_the_window() -> None:
    s = spec(interval=60, end="2024-01-01T00:00:00Z", catchup="all")
    assert schedules.due(s, since=utc(2024, 1, 1), now=utc(2024, 1, 2)) == []
    assert schedules.due(s, since=utc(2024, 1, 2), now=utc(2024, 1, 1)) == []


def test_trigger_detail_names_schedule_and_utc_fire_time() -> None:
    assert schedules.describe_trigger("nightly", utc(2024, 1, 1, 2)) == "nightly@2024-01-01T02:00:00Z"
