"""``Notifier``: turn run events into outbox deliveries, and deliver them with retries.

Producing reads the store (finished runs, running ones past their ``expected_duration``) and
enqueues one delivery per (run, event, target) under a unique key, so any number of replicas may
produce at once without a duplicate. Delivering claims due rows, sends each with a time limit
(concurrently, so a hanging receiver holds up nobody else) and records the outcome: sent,
retried with backoff (5 s, 30 s, 2 min, 10 min) or failed after ``MAX_ATTEMPTS``. None of this is
on a run's path: a run's state never waits for, or depends on, a notification.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import urllib.parse
from collections.abc import Callable

from kubeline import settings as settings_
from kubeline.domain import errors, notifications, repos, runs, states
from kubeline.logs import base as log_base
from kubeline.notify import channels
from kubeline.secrets import service as secret_service
from kubeline.storage import base as storage_base
from kubeline.storage.sql import notifications as outbox_

log = logging.getLogger("kubeline.notify")
LOOKBACK = dt.timedelta(minutes=10)  # runs that ended before a start this long ago are not notified
TAIL_LINES = 20
NOTIFY_PREFIX = "::kubeline-notify::"
_ENDED = [states.RunState.SUCCEEDED, states.RunState.FAILED, states.RunState.TIMED_OUT]


@dataclasses.dataclass
class Notifier:
    store: storage_base.Store
    outbox: outbox_.Outbox
    logs: log_base.LogBackend
    secrets: secret_service.SecretService
    settings: settings_.Settings
    global_specs: list[notifications.NotificationSpec] = dataclasses.field(default_factory=list)
    concurrency: int = 8
    timeout: float = channels.TIMEOUT  # per delivery attempt
    backoff: Callable[[int], float] = notifications.backoff

    def __post_init__(self) -> None:
        self._since = runs.utcnow() - LOOKBACK
        self._done: set[str] = set()
        self._slow: set[str] = set()

    async def produce_once(self) -> int:
        """Enqueue the deliveries of runs that ended or ran long since the last call; how many."""
        added = 0
        for run in await self.store.list_runs(states_in=_ENDED, limit=200):
            if run.id in self._done or (run.finished_at or run.created_at) < self._since:
                continue
            added += await self._ended(run)
            self._done.add(run.id)
        for run in await self.store.list_runs(states_in=[states.RunState.RUNNING], limit=200):
            expected = run.spec.expected_duration
            if expected and run.id not in self._slow and (run.duration or 0) > expected:
                added += await self._enqueue(run, "slow", await self._message(run, "slow"))
                self._slow.add(run.id)
        return added

    async def _ended(self, run: runs.Run) -> int:
        if not self._specs(run):
            return 0
        previous = await self.store.list_runs(pipeline=run.pipeline, states_in=_ENDED, limit=1, before=run.id)
        events = notifications.events_for(state=run.state.value, previous=previous[0].state.value if previous else None)
        added = 0
        for event in events:
            added += await self._enqueue(run, event, await self._message(run, event))
        for i, text in enumerate(await self._script_notices(run)):
            message = dataclasses.replace(await self._message(run, "script"),
                                          title=notifications.title(event="script", pipeline=run.pipeline,
                                                                    run_id=run.id, state=run.state.value,
                                                                    detail=text))
            added += await self._enqueue(run, "script", message, suffix=str(i), every_spec=True)
        return added

    def _specs(self, run: runs.Run) -> list[notifications.NotificationSpec]:
        return [*run.spec.notifications, *self.global_specs]

    async def _enqueue(self, run: runs.Run, event: str, message: notifications.Message, *, suffix: str = "",
                       every_spec: bool = False) -> int:
        added = 0
        for i, spec in enumerate(self._specs(run)):
            if not every_spec and event not in spec.on:
                continue
            digest = hashlib.sha256(f"{i}:{spec.channel}:{spec.target}".encode()).hexdigest()[:16]
            added += await self.outbox.enqueue(
                key=f"{run.id}/{event}{suffix}/{digest}", run_id=run.id, pipeline=run.pipeline, event=event,
                channel=spec.channel, target=spec.target, spec=spec.model_dump(mode="json"),
                message=message.as_json(), rate_limit=run.spec.notify_rate_limit)
        return added

    async def _message(self, run: runs.Run, event: str) -> notifications.Message:
        failed = None
        reason = run.error
        if event in ("failure", "slow"):
            for stage in await self.store.list_stage_runs(run.id):
                if stage.state in (states.StageState.FAILED, states.StageState.TIMED_OUT) or (
                        event == "slow" and stage.state is states.StageState.RUNNING):
                    failed, reason = stage.stage_id, stage.error or reason
                    break
        tail = await self._tail(run.id, failed) if event in ("failure", "slow") else []
        if event == "slow":
            reason = f"running for {int(run.duration or 0)}s, expected {run.spec.expected_duration:g}s"
        return notifications.Message(
            event=event, pipeline=run.pipeline, run_id=run.id, state=run.state.value,
            link=f"{self.settings.public_url.rstrip('/')}/runs/{urllib.parse.quote(run.id, safe='')}",
            title=notifications.title(event=event, pipeline=run.pipeline, run_id=run.id, state=run.state.value),
            reason=reason, failed_stage=failed, log_tail=tail, git_commit=repos.commit_of(run.pipeline_path))

    async def _tail(self, run_id: str, stage_id: str | None) -> list[str]:
        """The last lines of the stage's log (stored masked: secret values never reach a message)."""
        lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        async for line in self.logs.iter_lines(run_id, stage_id=stage_id):
            if not line.text.startswith(NOTIFY_PREFIX):
                lines.append(f"[{line.stream}] {line.text}")
        return list(lines)

    async def _script_notices(self, run: runs.Run) -> list[str]:
        found = []
        async for line in self.logs.iter_lines(run.id):
            if line.stream == "stdout" and line.text.startswith(NOTIFY_PREFIX):
                try:
                    found.append(str(json.loads(line.text[len(NOTIFY_PREFIX):])["text"]))
                except (ValueError, KeyError, TypeError):
                    continue
        return found[:20]

    async def deliver_once(self) -> int:
        """Send the due deliveries; how many were attempted."""
        due = await self.outbox.claim_due(limit=50)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(delivery: outbox_.Delivery) -> None:
            async with gate:
                await self._deliver(delivery)
        await asyncio.gather(*(one(d) for d in due))
        return len(due)

    async def _deliver(self, delivery: outbox_.Delivery) -> None:
        try:
            spec = notifications.NotificationSpec.model_validate(delivery.spec)
            message = notifications.Message(**{**delivery.message, "at": dt.datetime.fromisoformat(
                delivery.message["at"])})
            error = await self._send(spec, message)
        except Exception as exc:  # a notification never takes the loop down; the error is recorded
            error = f"{type(exc).__name__}: {exc}"
        attempt = delivery.attempts + 1
        retry = self.backoff(attempt) if error and attempt < notifications.MAX_ATTEMPTS else None
        if error:
            log.warning("notification %s (%s to %s) attempt %d failed: %s", delivery.id, delivery.channel,
                        notifications.masked(delivery.target), attempt, error)  # a webhook URL's path is a secret
        await self.outbox.finish(delivery.id, error=error, retry_in=retry)

    async def _send(self, spec: notifications.NotificationSpec, message: notifications.Message) -> str:
        """Send ``message`` through ``spec`` once; why it failed in words, or '' when it was sent."""
        try:
            url = await self.secrets.get(spec.url_secret) if spec.url_secret else spec.url
            key = await self.secrets.get(spec.secret) if spec.secret else None
            await channels.send(spec=spec, message=message, url=url, hmac_key=key, settings=self.settings,
                                limit=self.timeout)
        except channels.DeliveryError as exc:
            return str(exc)
        except (errors.NotFoundError, errors.SecretError) as exc:
            return f"secret for the notification: {exc}"
        except TimeoutError:
            return f"{spec.channel} delivery did not finish in time"
        return ""

    async def send_test(self, spec: notifications.NotificationSpec, *, pipeline: str) -> str:
        """Send a test message through one rule now, outside the outbox (nothing is recorded or
        retried: an admin checking a channel sees the outcome at once). The error, or ''."""
        message = notifications.Message(
            event="test", pipeline=pipeline, run_id="-", state="test", link=self.settings.public_url,
            title=f"{pipeline}: test notification from Kubeline", reason="sent from the Notifications page")
        try:
            return await self._send(spec, message)
        except Exception as exc:  # an admin's check reports whatever broke instead of a 500
            return f"{type(exc).__name__}: {exc}"

    async def run_forever(self, *, poll: float = 1.0) -> None:
        while True:
            try:
                await self.produce_once()
                await self.deliver_once()
            except errors.KubelineError as exc:
                log.warning("notifications: %s", exc)
            await asyncio.sleep(poll)
