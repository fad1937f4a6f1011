"""Composition root: settings -> store, secrets, log store, executors, engine.

The only module that imports concrete adapters; entry points (CLI, API, operator) call ``open``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import pathlib
import socket
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pydantic

from kubeline import settings as settings_
from kubeline.auth import service as auth_service
from kubeline.cleanup import service as cleanup_service
from kubeline.domain import errors, notifications, pools, repos, retention
from kubeline.engine import engine as engine_
from kubeline.environments import service as environments_
from kubeline.executors import base as executors_base
from kubeline.executors import local, local_warm
from kubeline.gitsync import service as gitsync_service
from kubeline.logs import base as log_base
from kubeline.logs import store as log_store
from kubeline.notify import service as notify_service
from kubeline.pipelines import problems as spec_problems
from kubeline.secrets import crypto
from kubeline.secrets import service as secret_service
from kubeline.storage import base as storage_base
from kubeline.storage import sql
from kubeline.storage.sql import gitsyncs
from kubeline.storage.sql import notifications as outbox
from kubeline.storage.sql import retention as retention_queries


def settle_heap() -> None:
    """Once a long-lived process has started (modules imported, app built): collect, then move
    what is left out of the cyclic collector's reach. Those objects live as long as the
    process, and every full collection would walk them again (measured: ~80 ms a pass, one
    every second or two under a stream of small stages); objects made later are collected as
    usual."""
    gc.collect()
    gc.freeze()


@dataclasses.dataclass
class Kubeline:
    settings: settings_.Settings
    store: storage_base.Store
    logs: log_base.LogBackend
    secrets: secret_service.SecretService
    executors: dict[str, executors_base.Executor]
    engine: engine_.Engine
    auth: auth_service.AuthService
    new_key_file: pathlib.Path | None  # set when this start generated the secret key
    git: gitsync_service.GitSync | None = None  # with KUBELINE_GIT_REPOS
    notifier: notify_service.Notifier | None = None
    cleanup: cleanup_service.Cleanup | None = None
    environments: environments_.Environments | None = None  # with a local executor: venvs on this machine


def executors_for(settings: settings_.Settings, *,
                  store: storage_base.Store | None = None) -> dict[str, executors_base.Executor]:
    """The executors ``settings.enabled_executors`` names, and no other: a server configured for
    kubernetes does not run user code in its own process."""
    enabled = settings.enabled_executors
    found: dict[str, executors_base.Executor] = {}
    if "local" in enabled or "local-warm" in enabled:
        cold = local.LocalExecutor.from_settings(settings)
        if "local" in enabled:
            found["local"] = cold
        if "local-warm" in enabled:
            found["local-warm"] = local_warm.WarmExecutor(
                work_dir=cold.work_dir, artifacts_dir=cold.artifacts_dir, venvs=cold.venvs,
                log_line_limit=settings.log_line_limit, env_passthrough=cold.env_passthrough)
    if "kubernetes" in enabled:
        from kubeline.executors.kubernetes import executor as k8s  # the kubernetes client loads only here

        found["kubernetes"] = k8s.KubernetesExecutor.from_settings(settings, attempts=store)
    if "kubernetes-pool" in enabled:
        from kubeline.executors import kubernetes_pool

        found["kubernetes-pool"] = kubernetes_pool.PoolExecutor.from_settings(settings, pools_=worker_pools(settings))
    if "docker" in enabled:
        from kubeline.executors import docker  # the docker SDK loads only here

        found["docker"] = docker.DockerExecutor.from_settings(settings)
    return found


def environments(settings: settings_.Settings, *,
                 executors: dict[str, executors_base.Executor]) -> environments_.Environments | None:
    """Pre-heating and environment state, over the venv cache the local executors run from."""
    executor = executors.get("local") or executors.get("local-warm")
    if not isinstance(executor, local.LocalExecutor | local_warm.WarmExecutor):
        return None
    return environments_.Environments(venvs=executor.venvs, default_executor=default_executor(settings),
                                      concurrency=settings.preheat_concurrency)


def log_backend(settings: settings_.Settings, *, store: storage_base.Store) -> log_base.LogBackend:
    """Files under the data dir (embedded default), or chunks in an S3-compatible bucket."""
    if settings.log_store == "files":
        return log_store.LogStore(settings.logs_dir)
    from kubeline.logs import buckets, objects  # boto3 loads only here
    from kubeline.storage.sql import log_index

    assert settings.log_s3_bucket is not None and isinstance(store, sql.SqlStore)
    secret = settings.log_s3_secret_access_key
    bucket = buckets.Bucket(buckets.BucketConfig(
        bucket=settings.log_s3_bucket, endpoint_url=settings.log_s3_endpoint_url, region=settings.log_s3_region,
        access_key_id=settings.log_s3_access_key_id, secret_access_key=secret.get_secret_value() if secret else None))
    return objects.ObjectLogStore(bucket=bucket, chunk_index=log_index.SqlChunkIndex(store.database),
                                  spool_dir=settings.log_spool_dir, prefix=settings.log_s3_prefix,
                                  writer=f"{socket.gethostname()}/{os.getpid()}",
                                  chunk_seconds=settings.log_chunk_seconds, follow_poll=settings.log_follow_poll,
                                  wakeups=store.wakeups)


def default_executor(settings: settings_.Settings) -> str:
    """``local`` means small python stages on ``local-warm`` and the rest on ``local`` (the rule is
    ``engine.planner.effective``); a pipeline or stage that names ``local`` always gets ``local``."""
    if settings.executor == "local" and "local-warm" in settings.enabled_executors:
        return "local-warm"
    return settings.executor


_M = TypeVar("_M", bound=pydantic.BaseModel)


def _each(model: type[_M], raws: list[dict[str, Any]], *, setting: str) -> tuple[list[_M], list[errors.Problem]]:
    """Every entry of a JSON-list setting validated, and the problems named ``SETTING[i].field``."""
    found: list[_M] = []
    problems: list[errors.Problem] = []
    for i, raw in enumerate(raws):
        try:
            found.append(model.model_validate(raw))
        except pydantic.ValidationError as exc:
            problems.extend(spec_problems.from_validation_error(exc, file=f"{setting}[{i}]"))
    return found, problems


def worker_pools(settings: settings_.Settings) -> list[pools.PoolSpec]:
    """``KUBELINE_KUBERNETES_POOLS`` checked (``SpecError`` names a bad entry and its field); it
    may be empty: pools may also be ``WorkerPool`` resources (read by the executor)."""
    found, problems = _each(pools.PoolSpec, settings.kubernetes_pools, setting="KUBELINE_KUBERNETES_POOLS")
    names = [p.name for p in found]
    problems.extend(errors.Problem(file="KUBELINE_KUBERNETES_POOLS", location="name", message=f"{n!r} is used twice")
                    for n in sorted({n for n in names if names.count(n) > 1}))
    if problems:
        raise errors.SpecError(problems)
    return found


def pool_controller(kl: Kubeline) -> Any:
    """The worker pools' controller (scaling, ``WorkerPool`` status) of a server whose executors
    include ``kubernetes-pool``, else None. One replica acts: the Lease ``kubeline-worker-pools``
    in the executor's namespace."""
    executor = kl.executors.get(pools.EXECUTOR)
    if executor is None:
        return None
    from kubeline.executors import kubernetes_pool, kubernetes_pool_controller
    from kubeline.operator import leader

    assert isinstance(executor, kubernetes_pool.PoolExecutor)
    leases = leader.KubernetesLeases(api_client=executor.kube.api, namespace=executor.defaults.namespace,
                                     name=kubernetes_pool_controller.LEASE_NAME)
    election = leader.LeaderElection(leases=leases, identity=replica_id(kl.settings))
    return kubernetes_pool_controller.PoolController(
        executor=executor, store=kl.store, default_executor=kl.engine.default_executor, election=election,
        interval=kl.settings.kubernetes_pool_interval)


def git_sync(settings: settings_.Settings, *, store: sql.SqlStore,
             secrets: secret_service.SecretService) -> gitsync_service.GitSync | None:
    """The git sync of ``KUBELINE_GIT_REPOS``; ``SpecError`` names a bad entry and its field."""
    if not settings.git_repos:
        return None
    found, problems = _each(repos.RepoSpec, settings.git_repos, setting="KUBELINE_GIT_REPOS")
    names = [r.name for r in found]
    problems.extend(errors.Problem(file="KUBELINE_GIT_REPOS", location="name", message=f"{n!r} is used twice")
                    for n in {n for n in names if names.count(n) > 1})
    if problems:
        raise errors.SpecError(problems)
    return gitsync_service.GitSync(root=settings.git_dir, specs=found, table=gitsyncs.GitSyncs(store.database),
                                   store=store, secrets=secrets)


def notifier(settings: settings_.Settings, *, store: sql.SqlStore, secrets: secret_service.SecretService,
             logs: log_base.LogBackend) -> notify_service.Notifier:
    """The notifier, with ``KUBELINE_NOTIFICATIONS`` checked (``SpecError`` names a bad entry)."""
    found, problems = _each(notifications.NotificationSpec, settings.notifications, setting="KUBELINE_NOTIFICATIONS")
    if problems:
        raise errors.SpecError(problems)
    return notify_service.Notifier(store=store, outbox=outbox.Outbox(store.database), logs=logs, secrets=secrets,
                                   settings=settings, global_specs=found, timeout=settings.notify_timeout)


def cleanup(settings: settings_.Settings, *, store: sql.SqlStore, logs: log_base.LogBackend) -> cleanup_service.Cleanup:
    """Retention with ``KUBELINE_RETENTION`` checked (``SpecError`` names the bad field)."""
    try:
        default = retention.RetentionPolicy.model_validate(settings.retention)
    except pydantic.ValidationError as exc:
        raise errors.SpecError(spec_problems.from_validation_error(exc, file="KUBELINE_RETENTION")) from None
    return cleanup_service.Cleanup(store=store, queries=retention_queries.RetentionQueries(store.database), logs=logs,
                                   settings=settings, default=default)


def replica_id(settings: settings_.Settings) -> str:
    """A server replica's stable identity (``KUBELINE_REPLICA_ID``, else host name and pid)."""
    return settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def open_kubeline(
    settings: settings_.Settings | None = None, *, replica: bool = False
) -> AsyncIterator[Kubeline]:
    """Everything wired from ``settings``. ``replica``: this process is a server replica (it resumes
    and dispatches runs), so its engine leases runs under the replica's stable identity and
    reclaims them at once after a restart; other processes (the CLI) lease under a name of
    their own, so they never take a live server's runs."""
    settings = settings or settings_.Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    store = await sql.SqlStore.open(settings.database)
    executors = executors_for(settings, store=store)
    logs: log_base.LogBackend | None = None
    envs = environments(settings, executors=executors)
    try:
        key, created = crypto.load_key(settings)
        secrets = secret_service.SecretService(store=store, key=key)
        logs = log_backend(settings, store=store)
        engine = engine_.Engine(store=store, executors=executors, logs=logs, secrets=secrets,
                                default_executor=default_executor(settings),
                                max_concurrent_attempts=settings.max_concurrent_attempts,
                                lease_seconds=settings.lease_seconds,
                                owner=replica_id(settings) if replica else None,
                                caps=storage_base.ClaimCaps(max_running=settings.max_running_runs,
                                                            per_executor=dict(settings.executor_caps),
                                                            default_executor=settings.executor))
        git = git_sync(settings, store=store, secrets=secrets)
        if git is not None and envs is not None:
            git.loaded = envs.preheat
        yield Kubeline(settings=settings, store=store, logs=logs, secrets=secrets, executors=executors,
                       engine=engine, auth=auth_service.AuthService(accounts=store.accounts, settings=settings),
                       new_key_file=settings.key_file if created else None, git=git, environments=envs,
                       notifier=notifier(settings, store=store, secrets=secrets, logs=logs),
                       cleanup=cleanup(settings, store=store, logs=logs))
    finally:
        if envs is not None:
            await envs.close()
        for executor in executors.values():
            await executor.close()
        if logs is not None:
            await logs.close()
        await store.close()
