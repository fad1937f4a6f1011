"""``Cleanup``: plan what retention removes (a dry run is the plan), then apply it.

Runs, logs and artifacts go by the pipeline's ``retention`` over the server's
(``KUBELINE_RETENTION``); only finished runs are candidates and the delete re-checks that. A
policy that would remove every finished run of a pipeline, the newest included, is refused
unless forced (``--force``), since that is more often a typo (``max_age_days: 0.01``) than a
wish. Log files of finished attempts above ``KUBELINE_LOG_MAX_BYTES`` are cut to their tail
behind a visible marker line. Virtualenvs unused and git checkouts not served for
``KUBELINE_PRUNE_AFTER_DAYS`` are deleted. Audit rows older than ``KUBELINE_AUDIT_RETENTION_DAYS``
go too (one plan item with their count: the audit log is kept under the same policy run).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import pathlib
import shutil
import time

from kubeline import settings as settings_
from kubeline.domain import errors, retention, runs, states
from kubeline.logs import base as log_base
from kubeline.logs import lines as log_lines
from kubeline.logs import store as log_store
from kubeline.storage import base as storage_base
from kubeline.storage.sql import retention as queries_

log = logging.getLogger("kubeline.cleanup")
_LIVE = [s for s in states.RunState if s not in states.FINAL_RUN]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Item:
    kind: str  # run | logs | artifacts | log_tail | venv | checkout | audit
    target: str
    pipeline: str = ""
    reason: str = ""
    bytes: int | None = None  # on this server's disk; None where unknown (S3 logs, audit rows)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    items: list[Item]
    refused: list[str]  # pipelines whose policy would remove every finished run (needs force)


@dataclasses.dataclass
class Cleanup:
    store: storage_base.Store
    queries: queries_.RetentionQueries
    logs: log_base.LogBackend  # either backend: deletes go through the port (files, or s3 chunks + index)
    settings: settings_.Settings
    default: retention.RetentionPolicy

    async def plan(self, *, force: bool = False, now: dt.datetime | None = None) -> Plan:
        now = now or runs.utcnow()
        items: list[Item] = []
        refused: list[str] = []
        specs = {p.name: p.spec for p in await self.store.list_pipelines()}
        for name in await self.queries.pipelines():
            spec = specs.get(name)
            policy = spec.retention.over(self.default) if spec else self.default
            finished = await self.queries.finished(name)
            decision = retention.decide(policy, finished, now=now)
            if finished and len(decision.delete_runs) == len(finished) and not force:
                refused.append(f"{name}: the policy would delete all {len(finished)} finished runs, the newest "
                               "included; keep some (max_runs) or confirm with --force / force=true")
                continue
            items += [Item(kind="run", target=i, pipeline=name, reason=r) for i, r in decision.delete_runs]
            items += [Item(kind="logs", target=i, pipeline=name, reason=r) for i, r in decision.delete_logs]
            items += [Item(kind="artifacts", target=i, pipeline=name, reason=r) for i, r in decision.delete_artifacts]
        items += await asyncio.to_thread(self._files_plan, await self._live_runs())
        items += await self._audit_plan(now)
        return Plan(items=await asyncio.to_thread(self._with_sizes, items), refused=refused)

    def _with_sizes(self, items: list[Item]) -> list[Item]:
        """Each item with the bytes it frees (what the plan shows people before they apply it)."""
        files = self.logs if isinstance(self.logs, log_store.LogStore) else None

        def logs(run_id: str) -> int | None:
            return sum(_size(p) for p in files.run_files(run_id)) if files is not None else None

        def sized(item: Item) -> Item:
            if item.kind == "run":
                found = logs(item.target)
                size = None if found is None else found + _size(self._artifacts(item.target))
            elif item.kind == "logs":
                size = logs(item.target)
            elif item.kind == "artifacts":
                size = _size(self._artifacts(item.target))
            elif item.kind == "log_tail":
                size = max(0, _size(pathlib.Path(item.target)) - (self.settings.log_max_bytes or 0))
            elif item.kind in ("venv", "checkout"):
                size = _size(pathlib.Path(item.target))
            else:
                return item
            return dataclasses.replace(item, bytes=size)
        return [sized(i) for i in items]

    def _audit_cutoff(self, now: dt.datetime) -> dt.datetime:
        return now - dt.timedelta(days=self.settings.audit_retention_days)

    async def _audit_plan(self, now: dt.datetime) -> list[Item]:
        cutoff = self._audit_cutoff(now)
        count = await self.queries.audit_before(cutoff)
        if not count:
            return []
        return [Item(kind="audit", target=cutoff.isoformat(), reason=f"{count} audit row(s) older than "
                     f"{self.settings.audit_retention_days} days (audit_retention_days)")]

    async def apply(self, *, force: bool = False) -> Plan:
        """Plan, then remove it all; returns the plan (what was removed, what was refused)."""
        plan = await self.plan(force=force)
        run_ids = [i.target for i in plan.items if i.kind == "run"]
        deleted = set(await self.queries.delete_runs(run_ids))
        live = await self._live_runs()
        for item in plan.items:
            if item.kind == "run" and item.target in deleted:
                await self.logs.delete_logs(item.target)
                await asyncio.to_thread(shutil.rmtree, self._artifacts(item.target), True)
            elif item.kind == "logs" and item.target not in live:
                await self.logs.delete_logs(item.target)
            elif item.kind == "artifacts" and item.target not in live:
                await asyncio.to_thread(shutil.rmtree, self._artifacts(item.target), True)
            elif item.kind == "log_tail" and self.settings.log_max_bytes:
                await asyncio.to_thread(cap_log, pathlib.Path(item.target), limit=self.settings.log_max_bytes)
            elif item.kind in ("venv", "checkout"):
                await asyncio.to_thread(shutil.rmtree, pathlib.Path(item.target), True)
            elif item.kind == "audit":  # the cutoff the plan showed, so apply removes no row it did not count
                await self.queries.delete_audit(dt.datetime.fromisoformat(item.target))
        for note in plan.refused:
            log.warning("retention refused: %s", note)
        return plan

    async def _live_runs(self) -> set[str]:
        return {r.id for r in await self.store.list_runs(states_in=_LIVE, limit=100_000)}

    def _artifacts(self, run_id: str) -> pathlib.Path:
        return self.settings.home / "artifacts" / run_id

    def _files_plan(self, live: set[str]) -> list[Item]:
        items = []
        limit = self.settings.log_max_bytes
        files = self.logs if isinstance(self.logs, log_store.LogStore) else None  # s3 chunks are not capped
        if limit and files is not None and files.root.is_dir():
            for run_dir in sorted(files.root.iterdir()):
                if run_dir.name in live or not run_dir.is_dir():
                    continue
                for path in files.run_files(run_dir.name):
                    size = path.stat().st_size
                    if size > limit and not _already_capped(path, limit):
                        items.append(Item(kind="log_tail", target=str(path), reason=f"{size} bytes > "
                                          f"log_max_bytes {limit}: keep the tail behind a marker"))
        cutoff = time.time() - self.settings.prune_after_days * 86400
        venvs = self.settings.venvs_dir
        if venvs.is_dir():
            for venv in venvs.iterdir():
                mark = venv / ".kubeline-ready"
                if venv.is_dir() and not venv.name.startswith(".") and mark.exists() and mark.stat().st_mtime < cutoff:
                    items.append(Item(kind="venv", target=str(venv), reason=f"unused for more than "
                                      f"{self.settings.prune_after_days:g} days"))
        for trees in self.settings.git_dir.glob("*/trees"):
            current = trees.parent / "current"
            serving = current.resolve() if current.is_symlink() else None
            for tree in trees.iterdir():
                if tree.is_dir() and not tree.name.startswith(".") and tree.resolve() != serving \
                        and tree.stat().st_mtime < cutoff:
                    items.append(Item(kind="checkout", target=str(tree), reason=f"a git checkout not served, "
                                      f"older than {self.settings.prune_after_days:g} days"))
        return items

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention_interval)
            try:
                plan = await self.apply()
                if plan.items:
                    log.info("retention removed %d item(s)", len(plan.items))
            except (errors.KubelineError, OSError) as exc:
                log.warning("retention: %s", exc)


MARKER = "[kubeline] log truncated:"


def _size(path: pathlib.Path) -> int:
    """Bytes of a file, or of every file under a folder (symlinks not followed); 0 when absent."""
    try:
        if not path.is_dir():
            return path.lstat().st_size if path.exists() else 0
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    except OSError:  # removed while counted (a concurrent apply)
        return 0


def _already_capped(path: pathlib.Path, limit: int) -> bool:
    with path.open("rb") as f:
        head = f.readline()
    return MARKER.encode() in head and path.stat().st_size <= limit + len(head)


def cap_log(path: pathlib.Path, *, limit: int) -> int:
    """Cut ``path`` to its last ``limit`` bytes (whole lines) behind a marker line; bytes removed."""
    size = path.stat().st_size
    if size <= limit:
        return 0
    with path.open("rb") as f:
        f.seek(size - limit)
        tail = f.read()
    cut = tail.find(b"\n") + 1
    tail = tail[cut:]
    removed = size - len(tail)
    stamp = log_lines.Stamper()(time.time())
    marker = log_lines.format_line(stamp=stamp, stream="system", text=(
        f"{MARKER} {removed} bytes of earlier output removed (log_max_bytes {limit}); the tail follows"))
    temporary = path.with_name(f".{path.name}.cap")
    temporary.write_bytes(marker + tail)
    temporary.replace(path)
    return removed
