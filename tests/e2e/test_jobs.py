"""Jobs as Kubeline's executor submits them: they run, finish, and are garbage-collected."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from .support import Pods, exists, wait_until


def test_job_completes_and_ttl_after_finished_deletes_it(api_client: Any, namespace: str, pods: Pods) -> None:
    batch = client.BatchV1Api(api_client)
    pod_template = pods.manifest(name="unused", code="print('hello from a job')")
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            ttl_seconds_after_finished=3,
            template=client.V1PodTemplateSpec(spec=pod_template.spec),
        ),
    )
    created = batch.create_namespaced_job(namespace, job)
    # On 1.20 the field is alpha: an API server without the TTLAfterFinished gate drops it.
    assert created.spec.ttl_seconds_after_finished == 3, "ttlSecondsAfterFinished was dropped"

    def finished() -> str | None:
        status = batch.read_namespaced_job("hello", namespace).status
        if status.succeeded:
            return "succeeded"
        return "failed" if status.failed else None

    assert wait_until(finished, timeout=90, what="job hello to finish") == "succeeded"
    logs = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector="job-name=hello")
    assert logs.items, "the job's pod should exist until the TTL removes the job"
    assert pods.logs(namespace, logs.items[0].metadata.name).strip() == "hello from a job"

    wait_until(
        lambda: not exists(lambda: batch.read_namespaced_job("hello", namespace)),
        timeout=60,
        what="the TTL controller to delete job hello",
    )
