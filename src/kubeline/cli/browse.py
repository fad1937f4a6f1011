"""``kubeline open RUN``: the web UI's page of a run, printed, and opened where a browser can be.

The URL is built from ``KUBELINE_URL`` (the server the CLI talks to) or else
``KUBELINE_PUBLIC_URL`` (where people reach the server). A browser is opened only where one can
show a page: ``$BROWSER`` is set, or a display is (X11/Wayland), or the OS has its own opener
(macOS, Windows). Over SSH or in CI the URL alone is printed: a text browser taking over the
terminal would be worse than nothing.
"""

from __future__ import annotations

import os
import shlex
import sys
import urllib.parse
import webbrowser

from kubeline import settings as settings_


def run_page(settings: settings_.Settings, *, run_id: str) -> str:
    base = (settings.url or settings.public_url).rstrip("/")
    return f"{base}/runs/{urllib.parse.quote(run_id, safe='')}"


def available() -> bool:
    if os.environ.get("BROWSER"):
        return True
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_page(url: str) -> bool:
    """True when a browser took the URL (never raises: the printed URL is the fallback).

    ``$BROWSER`` is read now, not through ``webbrowser.open``: the standard library reads it once
    per process, so a value set later (a long-lived client, a test) would be ignored.
    """
    chosen = [entry for entry in os.environ.get("BROWSER", "").split(os.pathsep) if entry]
    try:
        for entry in chosen:
            try:
                command = shlex.split(entry) if "%s" in entry else entry
                if webbrowser.GenericBrowser(command).open(url, new=2):
                    return True
            except webbrowser.Error:
                continue
        return False if chosen else webbrowser.open(url, new=2)
    except OSError:
        return False
