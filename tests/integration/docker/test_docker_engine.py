"""The engine on the Docker executor (wired by ``bootstrap``): a 2-stage pipeline passes outputs."""

from __future__ import annotations

import textwrap

import pytest

from kubeline import bootstrap, settings
from kubeline.domain import states
from kubeline.executors import docker
from kubeline.pipelines import loader

pytestmark = pytest.mark.slow


async def test_two_stage_pipeline_passes_outputs_between_containers(tmp_path, docker_daemon):
    folder = tmp_path / "pipelines" / "chain"
    folder.mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(textwrap.dedent("""
        inputs: {n: {type: integer, default: 20}}
        stages:
          - {id: a, file: a.py, inputs: {n: "${inputs.n}"}}
          - {id: b, file: b.py, dependsOn: [a], inputs: {x: "${stages.a.outputs.value}"}}
    """))
    (folder / "a.py").write_text("from kubeline import task\nprint('in a container')\n"
                                 "task.set_output('value', task.inputs()['n'] * 2)\n")
    (folder / "b.py").write_text("from kubeline import task\ntask.set_output('total', task.inputs()['x'] + 2)\n")
    config = settings.Settings(home=tmp_path / "home", executor="docker", docker_host=docker_daemon.url,
                               docker_network="none", secret_key=None)
    async with bootstrap.open_kubeline(config) as app:
        assert isinstance(app.executors["docker"], docker.DockerExecutor)
        pipeline = loader.load_folder(folder)
        await app.store.upsert_pipeline(pipeline)
        run = await app.engine.submit(pipeline)
        run = await app.engine.execute(run.id)
        assert run.state is states.RunState.SUCCEEDED, run.error
        assert run.outputs["b"] == {"total": 42}
        text = [line.text for line in app.logs.read(run.id, stage_id="a")]
        assert "in a container" in text
        clients = docker_daemon.client().containers(all=True, filters={"label": "kubeline.dev/run=" + run.id})
        assert clients == []  # removed after each attempt
