"""The pieces that let a short attempt finish without waiting for the kubelet's pod status."""

from __future__ import annotations

from kubeline.runtime import pod


def test_end_marker_is_per_attempt_and_does_not_reveal_the_token() -> None:
    token = "tok-" + "x" * 40
    marker = pod.end_marker(token)
    assert marker == pod.end_marker(token)
    assert marker != pod.end_marker(token + "y")
    assert marker.startswith("[kubeline] end ")
    assert token not in marker and len(marker) == len("[kubeline] end ") + 32
