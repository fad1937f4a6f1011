"""A laptop with only a kubeconfig: no Kubeline API the pods can reach, so each pod hands its
result back through its own log (``runtime.results``), which the executor reads anyway."""

from __future__ import annotations

import time

import pytest

from kubeline.domain import states

from .k8s_executor_support import Rig, log_lines, only_attempt, rig, run_folder

__all__ = ["rig"]  # the module-scoped fixture

pytestmark = pytest.mark.slow


async def test_outputs_and_route_travel_in_the_pod_log_without_any_server(rig: Rig) -> None:
    folder = rig.pipeline("laptop", {
        "a.py": "from kubeline import task\nprint('hello from a')\ntask.set_output('n', 20)\n"
                "task.set_output('blob', 'y' * 300_000)\n",
        "b.py": "from kubeline import task\nassert len(task.input('blob')) == 300_000\n"
                "task.set_output('double', task.input('n') * 2)\n",
        "pipeline.yaml": """
            stages:
              - {id: a, file: a.py}
              - {id: b, file: b.py, dependsOn: [a], inputs: {n: "${stages.a.outputs.n}", blob: "${stages.a.outputs.blob}"}}
        """,
    })
    async with rig.kubeline(kubernetes_api_url=None) as kl:
        run = await run_folder(kl, folder)
        stages = {s.stage_id: s for s in await kl.store.list_stage_runs(run.id)}
        assert run.state is states.RunState.SUCCEEDED, [(s.stage_id, s.error) for s in stages.values()]
        assert stages["b"].outputs == {"double": 40}
        lines = log_lines(kl, run.id, stage="a")
    assert lines == ["hello from a"]  # no marker or result line reaches the stored log


async def test_an_unreachable_upload_url_falls_back_to_the_log(rig: Rig) -> None:
    folder = rig.pipeline("unreachable", {"main.py": "from kubeline import task\ntask.set_output('ok', True)\n"})
    started = time.monotonic()
    async with rig.kubeline(kubernetes_api_url="http://kubeline.invalid:8080") as kl:
        run = await run_folder(kl, folder)
        attempt = await only_attempt(kl, run.id)
        lines = log_lines(kl, run.id)
    assert run.state is states.RunState.SUCCEEDED, attempt.error
    assert attempt.outputs == {"ok": True}
    assert time.monotonic() - started < 40
    assert any("could not reach the Kubeline API at http://kubeline.invalid:8080 from the pod: name not found"
               in line and "through the pod log instead" in line for line in lines), lines


async def test_a_result_larger_than_the_log_carries_fails_in_seconds_saying_why(rig: Rig) -> None:
    folder = rig.pipeline("toolarge", {
        "main.py": "import os\nfrom kubeline import task\ntask.set_output('big', os.urandom(3_500_000).hex())\n"})
    async with rig.kubeline(kubernetes_api_url=None) as kl:
        started = time.monotonic()
        run = await run_folder(kl, folder)
        elapsed = time.monotonic() - started
        attempt = await only_attempt(kl, run.id)
    assert run.state is states.RunState.FAILED
    assert "more than the 4096 KiB a pod log carries, and no upload URL was given" in attempt.error
    assert "KUBELINE_KUBERNETES_API_URL" in attempt.error
    assert elapsed < 60
