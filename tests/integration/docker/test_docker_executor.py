"""The Docker executor against a real dockerd (see conftest): one container per attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap

import pytest

from kubeline.domain import errors, specs, states
from kubeline.executors import base, docker_specs

pytestmark = pytest.mark.slow


async def test_success_with_outputs_route_inputs_and_folder(harness, tmp_path):
    folder = tmp_path / "pipeline"
    folder.mkdir(mode=0o700)  # the container's user still reads its snapshot
    (folder / "main.py").write_text(textwrap.dedent("""
        import json, os, pathlib, sys
        from kubeline import task
        print("cwd", os.getcwd(), "uid", os.getuid())
        print("inputs", json.dumps(task.inputs(), sort_keys=True))
        print("config", json.dumps(task.config(), sort_keys=True) if hasattr(task, "config") else "-")
        print("to stderr", file=sys.stderr)
        print("region", os.environ["REGION"], "run", os.environ["KUBELINE_RUN_ID"])
        pathlib.Path(os.environ["KUBELINE_ARTIFACTS_DIR"], "a.txt").write_text("artifact")
        pathlib.Path("/tmp/scratch").write_text("tmp is writable")
        task.set_output("rows", task.inputs()["n"] * 2)
        pathlib.Path(os.environ["KUBELINE_ROUTE_FILE"]).write_text("big\\n")
    """))
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    spec = harness.spec(argv=("python", "main.py"), folder=folder, runtime=base.Runtime.PIPELINE,
                        inputs={"n": 21}, config={"k": "v"}, env={"REGION": "eu"})
    result = await harness.run(spec)
    assert result.succeeded, (result.error, harness.log(spec))
    assert result.outputs == {"rows": 42}
    assert result.route == "big"
    log = harness.log(spec)
    assert ("stdout", "cwd /kubeline/code uid 1000") in log
    assert ("stdout", 'inputs {"n": 21}') in log
    assert ("stderr", "to stderr") in log
    assert ("stdout", "region eu run run-1") in log
    art = tmp_path / "art" / "run-1" / spec.stage_id / "1" / "a.txt"
    assert art.read_text() == "artifact"
    assert not list((tmp_path / "work").iterdir())  # attempt dir removed (inputs, secret env)
    assert harness.daemon.client().containers(all=True, filters={"name": spec.attempt_id}) == []


async def test_non_zero_exit(harness):
    spec = harness.spec("import sys; print('bye'); sys.exit(3)")
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.EXIT_CODE
    assert result.exit_code == 3
    assert result.error == "exited with code 3"
    assert ("stdout", "bye") in harness.log(spec)
    assert ("system", "attempt failed: exited with code 3") in harness.log(spec)


async def test_invalid_outputs_fail_clearly(harness):
    spec = harness.spec("import os; open(os.environ['KUBELINE_OUTPUTS'], 'w').write('[1]')")
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.EXIT_CODE
    assert "not an object" in result.error


async def test_timeout_stops_the_container(harness):
    spec = harness.spec("import time; print('start', flush=True); time.sleep(60)", timeout=1.5)
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.TIMEOUT
    assert result.error == "timed out after 1.5s"
    assert ("stdout", "start") in harness.log(spec)


async def test_memory_limit_ends_as_oom(harness):
    resources = specs.Resources(limits=specs.ResourceAmounts(memory="64Mi"))
    spec = harness.spec("x = bytearray(512 * 1024 * 1024); print('survived')", resources=resources)
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.OOM, result
    assert result.error == "exceeded its memory limit of 64Mi"
    assert ("stdout", "survived") not in harness.log(spec)


async def test_cancel_mid_run_kills_and_removes(harness):
    spec = harness.spec("import time; print('up', flush=True); time.sleep(60)")
    handle = await harness.executor.start(spec, harness.sink(spec))
    for _ in range(100):
        if ("stdout", "up") in harness.log(spec):
            break
        await asyncio.sleep(0.1)
    await harness.executor.cancel(handle)
    result = await harness.executor.wait(handle)
    assert result.failure is states.FailureKind.CANCELLED
    assert harness.daemon.client().containers(all=True, filters={"id": handle["container"]}) == []


async def test_a_container_of_a_tenth_of_a_second_is_logged_completely(harness):
    spec = harness.spec("import sys\nfor i in range(50): print('line', i)\nprint('err', file=sys.stderr)")
    result = await harness.run(spec)
    assert result.succeeded, result.error
    log = harness.log(spec)
    assert [t for s, t in log if s == "stdout"] == [f"line {i}" for i in range(50)]
    assert ("stderr", "err") in log


async def test_huge_log_is_complete_and_in_order(harness):
    spec = harness.spec("import sys\nw = sys.stdout.write\nfor i in range(100_000): w(f'n {i}\\n')")
    result = await harness.run(spec)
    assert result.succeeded, result.error
    lines = [t for s, t in harness.log(spec) if s == "stdout"]
    assert lines == [f"n {i}" for i in range(100_000)]


async def test_long_lines_are_split_and_garbage_is_replaced(harness):
    spec = harness.spec(
        "import sys\nsys.stdout.write('a' * 40000 + '\\n')\nsys.stdout.flush()\n"
        "sys.stdout.buffer.write(b'bad \\xff\\xfe bytes\\n')\nsys.stdout.buffer.write(b'no newline')")
    result = await harness.run(spec)
    assert result.succeeded, result.error
    lines = [t for s, t in harness.log(spec) if s == "stdout"]
    assert "".join(lines[:-2]) == "a" * 40000, [(len(t), t[:10]) for t in lines]
    assert all(len(line) <= 1024 for line in lines)
    assert lines[-2].startswith("bad \ufffd") and lines[-2].endswith(" bytes")
    assert lines[-1] == "no newline"


async def test_secrets_are_masked_and_kept_out_of_the_container_config(harness):
    secret = "s3cr3t-value-123"
    spec = harness.spec("import os, time; print('pw', os.environ['DB_PASSWORD']); time.sleep(1)",
                        env={"DB_PASSWORD": secret, "PLAIN": "x"}, secret_env=frozenset({"DB_PASSWORD"}))
    handle = await harness.executor.start(spec, harness.sink(spec, secrets=(secret,)))
    config = harness.daemon.client().inspect_container(handle["container"])["Config"]
    assert "PLAIN=x" in config["Env"]
    assert not any(secret in item for item in config["Env"])
    result = await harness.executor.wait(handle)
    assert result.succeeded, result.error
    assert ("stdout", "pw ***") in harness.log(spec) or any(
        t.startswith("pw ") and secret not in t for s, t in harness.log(spec))
    assert secret not in (harness.store.root / "run-1").joinpath(spec.stage_id, "1.log").read_text()


async def test_the_container_is_hardened(harness):
    resources = specs.Resources(limits=specs.ResourceAmounts(memory="128Mi", cpu="500m"))
    spec = harness.spec("import time; time.sleep(2)", resources=resources)
    handle = await harness.executor.start(spec, harness.sink(spec))
    info = harness.daemon.client().inspect_container(handle["container"])
    host, config = info["HostConfig"], info["Config"]
    assert config["User"] == "1000:1000"
    assert config["Image"] == "kubeline-worker:dev"
    assert config["Labels"]["kubeline.dev/run"] == "run-1"
    assert config["Labels"]["kubeline.dev/stage"] == spec.stage_id
    assert config["Labels"]["kubeline.dev/attempt"] == spec.attempt_id
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "none"
    assert "/tmp" in host["Tmpfs"]
    assert host["Memory"] == 128 * 1024 * 1024 == host["MemorySwap"]
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] > 0
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/kubeline/bundle"]["RW"] is False
    assert mounts["/kubeline/work"]["RW"] is True
    await harness.executor.cancel(handle)
    assert (await harness.executor.wait(handle)).failure is states.FailureKind.CANCELLED


async def test_root_filesystem_is_read_only_inside(harness):
    spec = harness.spec("open('/etc/x', 'w')")
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.EXIT_CODE
    assert any("Read-only file system" in t for _, t in harness.log(spec))


async def test_adopt_after_a_restart_resumes_the_log_without_duplicates(harness):
    spec = harness.spec("import time\nfor i in range(40):\n    print('tick', i, flush=True)\n    time.sleep(0.05)\n"
                        "import os; open(os.environ['KUBELINE_OUTPUTS'], 'w').write('{\"done\": 1}')")
    handle = await harness.executor.start(spec, harness.sink(spec))
    for _ in range(100):
        if ("stdout", "tick 5") in harness.log(spec):
            break
        await asyncio.sleep(0.05)
    await harness.executor.close()  # the server goes away; the container keeps running
    json.loads(json.dumps(handle))  # the handle is stored as JSON
    await asyncio.sleep(0.5)
    harness.executor = successor = harness.new_executor()
    assert await successor.adopt(handle, harness.sink(spec))
    result = await successor.wait(handle)
    assert result.succeeded, result.error
    assert result.outputs == {"done": 1}
    assert [t for s, t in harness.log(spec) if s == "stdout"] == [f"tick {i}" for i in range(40)]
    assert not await successor.adopt(handle, harness.sink(spec))  # removed now: LOST


async def test_adopt_of_an_attempt_that_finished_while_down(harness):
    spec = harness.spec("print('early'); print('late')")
    handle = await harness.executor.start(spec, harness.sink(spec))
    await harness.executor.close()
    await asyncio.sleep(1.0)
    harness.executor = successor = harness.new_executor()
    assert await successor.adopt(handle, harness.sink(spec))
    assert (await successor.wait(handle)).succeeded
    stdout = [t for s, t in harness.log(spec) if s == "stdout"]
    assert stdout == ["early", "late"]


async def test_missing_image_and_bad_input_raise_executor_error(harness, tmp_path):
    missing = harness.new_executor(defaults=docker_specs.Defaults(image="kubeline-nope:dev"))
    try:
        spec = harness.spec("print(1)")
        with pytest.raises(errors.ExecutorError, match="not in the Docker daemon"):
            await missing.start(spec, harness.sink(spec))
    finally:
        await missing.close()
    with pytest.raises(errors.ExecutorError, match="nothing to run"):
        spec = dataclasses.replace(harness.spec("x"), argv=())
        await harness.executor.start(spec, harness.sink(spec))
    spec = harness.spec("print(1)", folder=tmp_path / "nope")
    with pytest.raises(errors.ExecutorError, match="does not exist"):
        await harness.executor.start(spec, harness.sink(spec))


async def test_unknown_command_fails_with_127(harness):
    spec = harness.spec(argv=("no-such-program",))
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.EXIT_CODE
    assert result.exit_code == 127
    assert any("cannot run no-such-program" in t for _, t in harness.log(spec))


async def test_requirements_that_cannot_install_fail_the_start_clearly(harness, tmp_path):
    folder = tmp_path / "withreqs"
    folder.mkdir()
    (folder / "main.py").write_text("print('never')\n")
    (folder / "requirements.txt").write_text("surely-not-a-package-kubeline==0.0.1\n")
    spec = harness.spec(argv=("python", "main.py"), folder=folder, runtime=base.Runtime.PIPELINE,
                        requirements=folder / "requirements.txt")
    result = await harness.run(spec)  # network "none": uv cannot reach an index
    assert result.failure is states.FailureKind.START_FAILED, result
    assert "preparing its Python environment failed" in result.error
    assert any("uv pip install failed" in t for _, t in harness.log(spec)), harness.log(spec)
