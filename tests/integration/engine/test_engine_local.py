"""The engine end to end on the embedded default: SQLite, the local executor, real processes."""

import asyncio

import pytest

from kubeline.domain import errors, runs, states

pytestmark = pytest.mark.slow


async def still_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for this container's init to reap it is gone)."""
    for _ in range(20):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_hello_succeeds_with_outputs_and_logs(open_app, make_pipeline, run_folder, log_text):
    folder = make_pipeline("hello", {"main.py": """
        from kubeline import task
        print("hello", task.inputs().get("who", "world"))
        task.set_output("greeting", "hi")
    """})
    async with open_app() as app:
        run = await run_folder(app, folder, inputs={"who": "you"})
        assert run.state is states.RunState.SUCCEEDED, run.error
        assert run.outputs == {"main": {"greeting": "hi"}}
        assert "stdout hello you" in log_text(app, run.id)
        events = await app.store.list_events(run.id)
        assert [e.to_state for e in events if e.entity == "run"] == ["queued", "running", "succeeded"]


async def test_dag_passes_outputs_and_honours_parallelism(open_app, make_pipeline, run_folder):
    folder = make_pipeline("dag", {
        "pipeline.yaml": """
            parallelism: 1
            inputs: {n: {type: integer, default: 2}}
            stages:
              - {id: a, file: a.py, inputs: {n: "${inputs.n}"}}
              - {id: b, file: b.py, dependsOn: [a], inputs: {x: "${stages.a.outputs.value}"}}
              - {id: c, file: b.py, dependsOn: [a], inputs: {x: "${stages.a.outputs.value}"}}
              - {id: d, file: d.py, dependsOn: [b, c], inputs: {b: "${stages.b.outputs.value}", c: "${stages.c.outputs.value}"}}
        """,
        "a.py": "from kubeline import task\ntask.set_output('value', task.inputs()['n'] * 10)\n",
        "b.py": "from kubeline import task\ntask.set_output('value', task.inputs()['x'] + 1)\n",
        "d.py": "from kubeline import task\ni = task.inputs()\ntask.set_output('sum', i['b'] + i['c'])\n",
    })
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.SUCCEEDED, run.error
        assert run.outputs["d"] == {"sum": 42}
        stages = {s.stage_id: s for s in await app.store.list_stage_runs(run.id)}
        b, c = stages["b"], stages["c"]
        assert b.finished_at <= c.started_at or c.finished_at <= b.started_at  # parallelism: 1


@pytest.mark.parametrize(("script", "expected"), [
    ("import sys; sys.exit(3)", "exited with code 3"),
    ("raise ValueError('boom')", "exited with code 1"),
])
async def test_failures_name_the_reason(open_app, make_pipeline, script, expected, run_folder, log_text):
    folder = make_pipeline("fails", {"main.py": script})
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.FAILED
        assert "stage 'main' failed" in run.error and expected in run.error
        if "boom" in script:
            assert "ValueError: boom" in log_text(app, run.id)


async def test_binary_garbage_output_is_kept_readable(open_app, make_pipeline, run_folder, log_text):
    folder = make_pipeline("garbage", {"main.py": """
        import sys
        sys.stdout.buffer.write(b"ok \\xff\\xfe\\x00 bytes\\n" + bytes(range(256)) + b"\\nend\\n")
    """})
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.SUCCEEDED, run.error
        text = log_text(app, run.id)
        assert "\ufffd" in text and "stdout end" in text


async def test_timeout_kills_the_process_group(open_app, make_pipeline, tmp_path, run_folder):
    pidfile = tmp_path / "child.pid"
    folder = make_pipeline("slow", {
        "pipeline.yaml": "timeout: 1\n",
        "main.py": f"""
            import os, signal, time
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                open({str(pidfile)!r}, "w").write(str(os.getpid()))
                time.sleep(600)
            time.sleep(600)
        """,
    })
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.TIMED_OUT
        assert "timed out" in run.error
    assert not await still_alive(int(pidfile.read_text()))


async def test_children_that_outlive_the_script_are_stopped(open_app, make_pipeline, tmp_path, run_folder):
    pidfile = tmp_path / "daemon.pid"
    folder = make_pipeline("forker", {"main.py": f"""
        import os, time
        if os.fork() == 0:
            open({str(pidfile)!r}, "w").write(str(os.getpid()))
            time.sleep(600)
        time.sleep(0.3)
        print("parent done")
    """})
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.SUCCEEDED, run.error
    assert not await still_alive(int(pidfile.read_text()))


async def test_memory_limit_fails_as_oom(open_app, make_pipeline, run_folder):
    folder = make_pipeline("hog", {
        "pipeline.yaml": "resources: {limits: {memory: 64Mi}}\n",
        "main.py": "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024 * 1024))\n",
    })
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.FAILED
        assert "memory limit" in run.error and "64Mi" in run.error
        attempts = await app.store.list_attempts(run.id)
        assert attempts[0].failure is states.FailureKind.OOM


async def test_retry_then_success_with_delays(open_app, make_pipeline, run_folder):
    folder = make_pipeline("flaky", {
        "pipeline.yaml": "retries: {attempts: 2, strategy: fixed, delay: 0.2}\n",
        "main.py": "import os, sys\nsys.exit(0 if os.environ['KUBELINE_ATTEMPT'] == '2' else 5)\n",
    })
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.SUCCEEDED, run.error
        attempts = await app.store.list_attempts(run.id)
        assert [(a.number, a.state) for a in attempts] == [
            (1, states.AttemptState.FAILED), (2, states.AttemptState.SUCCEEDED)]
        stage_events = [e.to_state for e in await app.store.list_events(run.id) if e.entity == "stage"]
        assert "retrying" in stage_events


async def test_a_waiting_retry_survives_a_restart(open_app, make_pipeline):
    folder = make_pipeline("durable", {
        "pipeline.yaml": "retries: {attempts: 1, strategy: fixed, delay: 1.5}\n",
        "main.py": "import os, sys\nsys.exit(0 if os.environ['KUBELINE_ATTEMPT'] == '2' else 1)\n",
    })
    from kubeline.pipelines import loader

    async with open_app() as app:
        pipeline = loader.load_folder(folder)
        await app.store.upsert_pipeline(pipeline)
        run = await app.engine.submit(pipeline)
        driving = asyncio.create_task(app.engine.execute(run.id))
        for _ in range(200):
            stages = await app.store.list_stage_runs(run.id)
            if stages[0].state is states.StageState.RETRYING:
                break
            await asyncio.sleep(0.05)
        assert stages[0].state is states.StageState.RETRYING
        driving.cancel()
        await app.engine.shutdown()
    async with open_app() as app:  # a new process would do the same
        resumed = await app.engine.resume()
        assert [r.state for r in resumed] == [states.RunState.SUCCEEDED]
        assert len(await app.store.list_attempts(run.id)) == 2


async def test_cancel_mid_run(open_app, make_pipeline, log_text):
    folder = make_pipeline("long", {"main.py": "import time\nprint('started', flush=True)\ntime.sleep(600)\n"})
    from kubeline.pipelines import loader

    async with open_app() as app:
        pipeline = loader.load_folder(folder)
        run = await app.engine.submit(pipeline)
        driving = asyncio.create_task(app.engine.execute(run.id))
        for _ in range(200):
            if "started" in log_text(app, run.id):
                break
            await asyncio.sleep(0.05)
        await app.engine.cancel(run.id)
        final = await asyncio.wait_for(driving, 30)
        assert final.state is states.RunState.CANCELLED
        attempts = await app.store.list_attempts(run.id)
        assert attempts[0].state is states.AttemptState.CANCELLED


async def test_max_instances_queues_the_second_run(open_app, make_pipeline):
    folder = make_pipeline("single", {"pipeline.yaml": "max_instances: 1\n", "main.py": "import time\ntime.sleep(0.5)\n"})
    from kubeline.pipelines import loader

    async with open_app() as app:
        pipeline = loader.load_folder(folder)
        first = await app.engine.submit(pipeline)
        second = await app.engine.submit(pipeline)
        results = await asyncio.gather(app.engine.execute(first.id), app.engine.execute(second.id))
        assert [r.state for r in results] == [states.RunState.SUCCEEDED] * 2
        a, b = sorted(results, key=lambda r: r.started_at)
        assert b.started_at >= a.finished_at


async def test_bad_inputs_store_nothing(open_app, make_pipeline):
    folder = make_pipeline("typed", {"pipeline.yaml": "inputs: {n: {type: integer}}\n", "main.py": ""})
    from kubeline.pipelines import loader

    async with open_app() as app:
        pipeline = loader.load_folder(folder)
        with pytest.raises(errors.InvalidInputError, match="input 'n' must be integer"):
            await app.engine.submit(pipeline, inputs={"n": "three"})
        with pytest.raises(errors.InvalidInputError, match="input 'n' is required"):
            await app.engine.submit(pipeline)
        with pytest.raises(errors.InvalidInputError, match="unknown input 'm'"):
            await app.engine.submit(pipeline, inputs={"n": "1", "m": 2})
        assert await app.store.list_runs() == []


async def test_secrets_are_injected_and_masked(open_app, make_pipeline, run_folder, log_text):
    folder = make_pipeline("secretive", {
        "pipeline.yaml": "secrets: [API_TOKEN]\nenv: {REGION: eu}\n",
        "main.py": "import os\nprint('token is', os.environ['API_TOKEN'], 'in', os.environ['REGION'])\n",
    })
    async with open_app() as app:
        await app.secrets.set("API_TOKEN", "s3cr3t-value")
        run = await run_folder(app, folder)
        assert run.state is states.RunState.SUCCEEDED, run.error
        text = log_text(app, run.id)
        assert "token is *** in eu" in text and "s3cr3t-value" not in text


async def test_missing_secret_fails_the_stage_with_a_hint(open_app, make_pipeline, run_folder):
    folder = make_pipeline("nosecret", {"pipeline.yaml": "secrets: [MISSING]\n", "main.py": ""})
    async with open_app() as app:
        run = await run_folder(app, folder)
        assert run.state is states.RunState.FAILED
        assert "MISSING" in run.error


async def test_upstream_failure_skips_dependants_and_fires_failure_downstream(open_app, make_pipeline, run_folder):
    make_pipeline("on-fail", {"main.py": "print('cleanup')"})
    folder = make_pipeline("breaks", {
        "pipeline.yaml": """
            downstream: [{pipeline: on-fail, on: failure}]
            stages:
              - {id: a, file: a.py}
              - {id: b, file: a.py, dependsOn: [a]}
        """,
        "a.py": "raise SystemExit(2)",
    })
    from kubeline.pipelines import loader

    async with open_app() as app:
        await app.store.upsert_pipeline(loader.load_folder(folder.parent / "on-fail"))
        run = await run_folder(app, folder)
        assert run.state is states.RunState.FAILED
        stages = {s.stage_id: s.state for s in await app.store.list_stage_runs(run.id)}
        assert stages == {"a": states.StageState.FAILED, "b": states.StageState.SKIPPED}
        children = await app.store.list_runs(pipeline="on-fail")
        assert len(children) == 1 and children[0].triggered_by.kind is runs.TriggerKind.DOWNSTREAM
        assert children[0].parent_run_id == run.id


async def test_env_layering(open_app, make_pipeline, run_folder):
    folder = make_pipeline("layers", {
        "pipeline.yaml": """
            env: {A: pipeline, B: pipeline, C: pipeline}
            secrets: [B]
            schedules: [{id: nightly, cron: "0 2 * * *", env: {A: schedule}}]
        """,
        "main.py": "import os\nfrom kubeline import task\ntask.set_outputs({k: os.environ[k] for k in 'ABC'})\n",
    })
    async with open_app() as app:
        await app.secrets.set("B", "secret")
        run = await run_folder(app, folder, inputs={"C": "input"}, schedule_id="nightly")
        # B is the secret's value (an output is masked like a log line), not the pipeline's env
        assert run.outputs["main"] == {"A": "schedule", "B": "***", "C": "input"}


