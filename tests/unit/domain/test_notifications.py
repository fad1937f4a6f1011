import pytest

from kubeline.domain import notifications, specs


def test_events_of_a_finished_run():
    assert notifications.events_for(state="failed", previous=None) == ["failure"]
    assert notifications.events_for(state="timed_out", previous="succeeded") == ["failure"]
    assert notifications.events_for(state="succeeded", previous="failed") == ["success", "recovery"]
    assert notifications.events_for(state="succeeded", previous="succeeded") == ["success"]
    assert notifications.events_for(state="cancelled", previous="failed") == []
    assert [notifications.backoff(n) for n in (1, 2, 3, 4, 9)] == [5, 30, 120, 600, 600]


@pytest.mark.parametrize(("entry", "message"), [
    ({"channel": "email"}, "needs 'to: [address, ...]'"),
    ({"channel": "email", "to": ["not-an-address"]}, "not an email address: not-an-address"),
    ({"channel": "slack"}, "exactly one of 'url' or 'url_secret'"),
    ({"channel": "slack", "url": "x", "url_secret": "S"}, "exactly one of 'url' or 'url_secret'"),
    ({"channel": "webhook", "url": "ftp://h/x"}, "is not an http(s) URL"),
    ({"channel": "sms", "to": ["1"]}, "Input should be 'email', 'slack', 'teams' or 'webhook'"),
    ({"channel": "slack", "url": "https://h/x", "on": ["always"]}, "Input should be 'failure'"),
])
def test_bad_notification_entries_say_what_to_fix(entry, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        specs.PipelineSpec.model_validate({"notifications": [entry]})


def test_targets_never_carry_secrets_and_messages_carry_the_run():
    spec = notifications.NotificationSpec(channel="slack", url="https://hooks.example.org/T/B?token=x")
    assert spec.target == "https://hooks.example.org/T/B"
    assert notifications.NotificationSpec(channel="teams", url_secret="TEAMS").target == "secret:TEAMS"
    message = notifications.Message(event="failure", pipeline="p", run_id="r1", state="failed",
                                    link="https://k/api/v1/runs/r1", title="p: run r1 failed", reason="exit 1",
                                    failed_stage="load", log_tail=["[stderr] boom"], git_commit="a" * 40)
    assert message.text().splitlines() == ["p: run r1 failed", "Run: https://k/api/v1/runs/r1",
                                           "Failed stage: load", "Reason: exit 1", "Commit: aaaaaaaaaaaa", "",
                                           "Last log lines:", "[stderr] boom"]


@pytest.mark.parametrize(("target", "shown"), [
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/***"),
    ("http://user:pw@127.0.0.1:8080/hook?sig=1", "http://127.0.0.1:8080/***"),
    ("https://receiver.example.org", "https://receiver.example.org"),
    ("http://[::1]:9/x", "http://[::1]:9/***"),
    ("secret:SLACK_URL", "secret:SLACK_URL"),
    ("ops@example.org,dev@example.org", "ops@example.org,dev@example.org"),
])
def test_targets_shown_by_the_api_hide_webhook_url_paths(target, shown):
    assert notifications.masked(target) == shown
