"""Delivering one message: email (SMTP, STARTTLS, auth), Slack, Teams, a signed generic webhook.

Each sender has a hard time limit, so a receiver that hangs costs one slot of the delivery loop
for ``TIMEOUT`` seconds and is retried later; nothing here runs on a run's path.
"""

from __future__ import annotations

import asyncio
import email.message
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from typing import Any

import httpx

from kubeline import settings as settings_
from kubeline.domain import notifications

TIMEOUT = 10.0


class DeliveryError(Exception):
    """The channel refused or did not answer; the message says which and why (no secrets)."""


async def send(*, spec: notifications.NotificationSpec, message: notifications.Message, url: str | None,
               hmac_key: str | None, settings: settings_.Settings, limit: float = TIMEOUT) -> None:
    if spec.channel == "email":
        await asyncio.wait_for(asyncio.to_thread(_email, spec=spec, message=message, settings=settings,
                                                 limit=limit), limit + 5)
        return
    assert url is not None
    body: dict[str, Any]
    if spec.channel == "slack":
        body = {"text": message.text()}
    elif spec.channel == "teams":
        body = {"@type": "MessageCard", "@context": "http://schema.org/extensions", "summary": message.title,
                "themeColor": "d9534f" if message.event in ("failure", "slow") else "5cb85c",
                "title": message.title, "text": message.text().replace("\n", "  \n")}
    else:
        body = message.as_json()
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "kubeline-notify"}
    if spec.channel == "webhook" and hmac_key:
        stamp = str(int(time.time()))
        headers["X-Kubeline-Timestamp"] = stamp
        headers["X-Kubeline-Signature"] = "sha256=" + hmac.new(
            hmac_key.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    try:
        async with httpx.AsyncClient(timeout=limit, follow_redirects=False) as client:
            response = await asyncio.wait_for(client.post(url, content=raw, headers=headers), limit + 1)
    except (httpx.TimeoutException, TimeoutError):
        raise DeliveryError(f"{spec.channel} receiver did not answer within {limit:g}s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{spec.channel} receiver unreachable: {type(exc).__name__}") from None
    if response.status_code >= 300:
        raise DeliveryError(f"{spec.channel} receiver answered {response.status_code}: {response.text[:200]}")


def _email(*, spec: notifications.NotificationSpec, message: notifications.Message,
           settings: settings_.Settings, limit: float) -> None:
    if not settings.smtp_host:
        raise DeliveryError("email notification but no SMTP server: set KUBELINE_SMTP_HOST (and _PORT, "
                            "_USERNAME, _PASSWORD, _FROM)")
    mail = email.message.EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = settings.smtp_from
    mail["To"] = ", ".join(spec.to)
    mail.set_content(message.text())
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=limit) as smtp:
            if settings.smtp_starttls:
                context = ssl.create_default_context(cafile=settings.smtp_cafile)
                smtp.starttls(context=context)
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_username, password)
            smtp.send_message(mail)
    except smtplib.SMTPException as exc:
        raise DeliveryError(f"SMTP {settings.smtp_host}:{settings.smtp_port} refused: {_smtp_reason(exc)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"SMTP {settings.smtp_host}:{settings.smtp_port} unreachable: {exc}") from None


def _smtp_reason(exc: smtplib.SMTPException) -> str:
    code = getattr(exc, "smtp_code", None)
    text = getattr(exc, "smtp_error", b"")
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if code is not None:
        return f"{code} {text}".strip()
    recipients = getattr(exc, "recipients", None)
    if recipients:
        return "; ".join(f"{who}: {c} {t.decode(errors='replace') if isinstance(t, bytes) else t}"
                         for who, (c, t) in recipients.items())
    return str(exc) or type(exc).__name__
