"""The local executor with real processes: outcomes, logs, kills, limits, adoption."""
# ruff: noqa: ASYNC222 - blocking /proc reads are the point of these checks

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import resource
import signal
import textwrap
import time

import pytest

from kubeline.domain import errors, specs, states
from kubeline.executors import local, local_workdir

OUTPUTS = "import json, os; json.dump({{'n': {n}}}, open(os.environ['KUBELINE_OUTPUTS'], 'w'))"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_success_with_outputs_route_inputs_and_contract_env(harness):
    code = textwrap.dedent("""
        import json, os, sys
        inputs = json.load(open(os.environ["KUBELINE_INPUTS"]))
        config = json.load(open(os.environ["KUBELINE_CONFIG"]))
        json.dump({"doubled": inputs["x"] * 2, "cfg": config["k"], "exe": sys.executable,
                   "cwd": os.getcwd(), "stage": os.environ["KUBELINE_STAGE"],
                   "attempt": os.environ["KUBELINE_ATTEMPT"], "plain": os.environ["PLAIN"],
                   "leak": os.environ.get("KUBELINE_SECRET_KEY")},
                  open(os.environ["KUBELINE_OUTPUTS"], "w"))
        open(os.environ["KUBELINE_ROUTE_FILE"], "w").write("big\\n")
        open(os.path.join(os.environ["KUBELINE_ARTIFACTS_DIR"], "a.txt"), "w").write("kept")
        print("hello")
    """)
    spec = harness.spec(code, inputs={"x": 21}, config={"k": "v"}, env={"PLAIN": "yes"})
    os.environ["KUBELINE_SECRET_KEY"] = "server-only"
    try:
        handle = await harness.executor.start(spec, harness.sink(spec))
    finally:
        del os.environ["KUBELINE_SECRET_KEY"]
    result = await harness.executor.wait(handle)
    assert result.succeeded, result.error
    assert result.exit_code == 0 and result.route == "big"
    outputs = result.outputs
    assert outputs["doubled"] == 42 and outputs["cfg"] == "v" and outputs["plain"] == "yes"
    assert outputs["stage"] == spec.stage_id and outputs["attempt"] == "1"
    assert outputs["leak"] is None
    assert harness.log(spec) == [("stdout", "hello")]
    assert (harness.tmp_path / "art" / "run-1" / spec.stage_id / "1" / "a.txt").read_text() \
        == "kept"
    assert os.path.exists(handle["work_dir"])  # until the engine has stored the result
    await harness.executor.release(handle)
    await harness.executor.janitor.settle()  # the release's cleanup runs on its thread
    assert not os.path.exists(handle["work_dir"])  # raw output files are not kept after that


async def test_folder_is_the_working_directory(harness, tmp_path):
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "main.py").write_text("import os; print(os.getcwd())")
    spec = harness.spec(argv=("python", "main.py"), folder=folder)
    assert (await harness.run(spec)).succeeded
    assert harness.log(spec) == [("stdout", str(folder))]


async def test_exit_code_and_traceback(harness):
    spec = harness.spec("import sys; sys.exit(3)")
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.EXIT_CODE
    assert result.exit_code == 3 and result.error == "exited with code 3"

    spec = harness.spec("def f():\n    raise ValueError('boom')\nf()")
    result = await harness.run(spec)
    assert result.exit_code == 1
    log = harness.log(spec)
    assert ("stderr", "Traceback (most recent call last):") in log
    assert ("stderr", "ValueError: boom") in log
    assert log[-1] == ("system", "attempt failed: exited with code 1")


async def test_killed_by_a_signal(harness):
    result = await harness.run(harness.spec("import os, signal; os.kill(os.getpid(), "
                                            "signal.SIGSEGV)"))
    assert result.failure is states.FailureKind.EXIT_CODE
    assert result.error == "killed by signal SIGSEGV"


async def test_invalid_outputs_fail_clearly(harness):
    spec = harness.spec("import os; open(os.environ['KUBELINE_OUTPUTS'], 'w').write('{nope')")
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.EXIT_CODE
    assert "invalid JSON to $KUBELINE_OUTPUTS" in result.error
    spec = harness.spec("import os; open(os.environ['KUBELINE_OUTPUTS'], 'w').write('[1]')")
    assert "not an object" in (await harness.run(spec)).error


async def test_binary_garbage_output(harness):
    code = ("import os, sys; out = sys.stdout.buffer\n"
            "out.write(bytes(range(256)) * 50 + b'\\n\\xff\\xfeok\\n')\n"
            "out.flush(); sys.stderr.buffer.write(b'\\x80' * 3000)")
    spec = harness.spec(code)
    assert (await harness.run(spec)).succeeded
    log = harness.log(spec)
    assert ("stdout", "\ufffd\ufffdok") in log
    stderr = [text for stream, text in log if stream == "stderr"]
    assert "".join(stderr) == "\ufffd" * 3000 and len(stderr) == 3  # split at the 1024 limit


async def test_very_short_process_logs_are_complete(harness):
    for _ in range(5):
        spec = harness.spec(argv=("sh", "-c", "echo a; echo b >&2; printf c"))
        assert (await harness.run(spec)).succeeded
        assert sorted(harness.log(spec)) == [("stderr", "b"), ("stdout", "a"), ("stdout", "c")]


async def test_secrets_are_masked(harness):
    spec = harness.spec("import os; print('token is', os.environ['TOKEN'])",
                        env={"TOKEN": "s3cr3t-value"}, secret_env=frozenset({"TOKEN"}))
    assert (await harness.run(spec, secrets=["s3cr3t-value"])).succeeded
    assert harness.log(spec) == [("stdout", "token is ***")]
    raw = (harness.tmp_path / "logs" / "run-1" / spec.stage_id / "1.log").read_text()
    assert "s3cr3t" not in raw


async def test_timeout_kills_the_group_including_a_child_ignoring_sigterm(harness):
    code = textwrap.dedent("""
        import os, signal, time
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(1000)
        print(pid, flush=True)
        time.sleep(1000)
    """)
    spec = harness.spec(code, timeout=1)
    started = time.monotonic()
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.TIMEOUT
    assert result.error == "timed out after 1s"
    assert time.monotonic() - started < 10
    child = int(harness.log(spec)[0][1])
    await asyncio.sleep(0.1)
    assert not alive(child)


async def test_cancel_mid_run(harness):
    spec = harness.spec("import time; print('started', flush=True); time.sleep(1000)")
    handle = await harness.executor.start(spec, harness.sink(spec))
    await asyncio.sleep(0.3)
    await harness.executor.cancel(handle)
    result = await harness.executor.wait(handle)
    assert result.failure is states.FailureKind.CANCELLED
    assert ("stdout", "started") in harness.log(spec)
    assert not alive(handle["pid"])


async def test_forked_and_setsid_daemons_are_cleaned_up(harness):
    code = textwrap.dedent("""
        import os, time
        for detach in (False, True):
            pid = os.fork()
            if pid == 0:
                if detach:
                    os.setsid()
                time.sleep(1000)
                os._exit(0)
            print(pid, flush=True)
    """)
    spec = harness.spec(code)
    assert (await harness.run(spec)).succeeded
    pids = [int(text) for _, text in harness.log(spec)]
    await asyncio.sleep(0.1)
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


async def test_memory_hog_ends_as_oom(harness):
    code = "x = []\nwhile True:\n    x.append(bytearray(4 << 20))"
    spec = harness.spec(code, resources=specs.Resources(limits={"memory": "64Mi"}), timeout=60)
    started = time.monotonic()
    result = await harness.run(spec)
    assert result.failure is states.FailureKind.OOM
    assert result.error == "exceeded its memory limit of 64Mi"
    assert time.monotonic() - started < 20


async def test_memory_watchdog_without_cgroups(tmp_path):
    executor = local.LocalExecutor(work_dir=tmp_path / "w", artifacts_dir=tmp_path / "a",
                                   venvs=None, use_cgroups=False)  # type: ignore[arg-type]
    from kubeline.executors import base
    from kubeline.logs import LogStore

    spec = base.AttemptSpec(
        attempt_id="wd", run_id="r", pipeline="p", stage_id="s", number=1, stage_type="python",
        folder=None, argv=("python", "-c", "x = []\nwhile True:\n    x.append(b'x' * (4 << 20))"),
        runtime=base.Runtime.KUBELINE, python_version="3.11", requirements=None, timeout=60,
        resources=specs.Resources(limits={"memory": "64Mi"}))
    assert not executor.capabilities.cpu_limit
    sink = LogStore(tmp_path / "logs").sink(run_id="r", stage_id="s", attempt=1)
    result = await executor.wait(await executor.start(spec, sink))
    assert result.failure is states.FailureKind.OOM
    assert result.error == "exceeded its memory limit of 64Mi"


async def test_soft_limit_warns_once_and_never_kills(harness):
    code = ("import time\nx = bytearray(40 << 20)\nx[::4096] = b'x' * len(x[::4096])\n"
            "time.sleep(0.6)")
    spec = harness.spec(code, resources=specs.Resources(soft_limits={"memory": "16Mi"}))
    assert (await harness.run(spec)).succeeded
    warnings = [text for stream, text in harness.log(spec) if stream == "system"]
    assert len(warnings) == 1 and "above the soft limit 16Mi" in warnings[0]


async def test_cpu_limit_is_applied_when_cgroups_allow(harness):
    if not harness.executor.capabilities.cpu_limit:
        pytest.skip("no writable cpu cgroup here")
    code = "import time\nend = time.time() + 1\nwhile time.time() < end: pass\n" \
           "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_utime)"
    spec = harness.spec(code, resources=specs.Resources(limits={"cpu": "200m"}))
    assert (await harness.run(spec)).succeeded
    assert float(harness.log(spec)[0][1]) < 0.6  # 0.2 cores for ~1 s of wall time


async def test_huge_output_streams_with_bounded_memory(harness):
    code = ("import sys\nline = b'y' * 99 + b'\\n'\nchunk = line * 10000\n"
            "for _ in range(100): sys.stdout.buffer.write(chunk)")
    spec = harness.spec(code)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/statm") as file:
        rss_before = int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert (await harness.run(spec)).succeeded
    with open("/proc/self/statm") as file:
        rss_after = int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert rss_after - rss_before < 50 << 20
    assert peak_growth_kb < 50 << 10
    count = sum(1 for _ in harness.store.read("run-1", stage_id=spec.stage_id))
    assert count == 1_000_000


async def test_start_failures_raise_executor_error(harness, tmp_path):
    with pytest.raises(errors.ExecutorError, match="not installed or not on PATH"):
        await harness.executor.start(harness.spec(argv=("no-such-program-xyz",)),
                                     harness.sink(harness.spec("")))
    with pytest.raises(errors.ExecutorError, match="does not exist"):
        spec = harness.spec("pass", folder=tmp_path / "missing")
        await harness.executor.start(spec, harness.sink(spec))
    with pytest.raises(errors.ExecutorError, match="adopt it first"):
        await harness.executor.wait({"attempt_id": "never-started"})


async def test_adopt_after_the_executor_is_gone(harness, tmp_path):
    code = textwrap.dedent("""
        import sys, time
        for i in range(30):
            print(f"line {i}", flush=True)
            time.sleep(0.02)
        sys.exit(7)
    """)
    spec = harness.spec(code)
    handle = await harness.executor.start(spec, harness.sink(spec))
    await asyncio.sleep(0.25)
    await harness.executor.close()  # the server "dies"; the attempt keeps running
    assert alive(handle["pid"])
    handle = json.loads(json.dumps(handle))  # as stored in the database
    await asyncio.sleep(0.2)

    successor = local.LocalExecutor(work_dir=tmp_path / "work", artifacts_dir=tmp_path / "art",
                                    venvs=harness.executor.venvs)
    assert await successor.adopt(handle, harness.sink(spec))
    result = await successor.wait(handle)
    assert result.exit_code == 7 and result.failure is states.FailureKind.EXIT_CODE
    texts = [text for stream, text in harness.log(spec) if stream == "stdout"]
    assert texts == [f"line {i}" for i in range(30)]
    await successor.release(handle)
    assert not await successor.adopt(handle, harness.sink(spec))  # released: gone (LOST)


async def test_adopt_refuses_an_unknown_attempt(harness, tmp_path):
    handle = {"attempt_id": "x", "pid": 2**22 - 1, "pgid": 2**22 - 1, "proc_start": 1,
              "work_dir": str(tmp_path / "nothing")}
    assert not await harness.executor.adopt(handle, harness.sink(harness.spec("")))


async def test_cancel_of_an_attempt_nobody_follows_kills_it(harness):
    spec = harness.spec("import time; time.sleep(1000)")
    handle = await harness.executor.start(spec, harness.sink(spec))
    await harness.executor.close()
    await harness.executor.cancel(handle)
    for _ in range(50):
        if not alive(handle["pid"]):
            break
        await asyncio.sleep(0.05)
    assert not alive(handle["pid"])
    os.waitpid(handle["pid"], os.WNOHANG)


def test_signal_exit_code_mapping_names_the_signal():
    assert signal.Signals(11).name == "SIGSEGV"


@pytest.mark.skipif(not local_workdir.on_tmpfs(pathlib.Path("/dev/shm")),
                    reason="/dev/shm is not a tmpfs on this machine")
async def test_a_work_dir_on_tmpfs_holds_only_the_output_not_read_yet(harness, tmp_path):
    """The default work dir is in memory (local_workdir): what the tail handed to the log store
    is punched out of the raw output file, so a chatty attempt does not fill the tmpfs."""
    work = pathlib.Path("/dev/shm") / f"kubeline-test-{os.getpid()}-{tmp_path.name}"
    executor = local.LocalExecutor(work_dir=work, artifacts_dir=tmp_path / "art",
                                   venvs=harness.executor.venvs, log_line_limit=1024)
    assert executor.punch
    code = textwrap.dedent("""\
        import os, sys, time
        line = b'z' * 99 + b'\\n'
        most = 0
        for _ in range(24):  # 24 MB, at ~8 MB/s
            sys.stdout.buffer.write(line * 10_000)
            sys.stdout.flush()
            time.sleep(0.12)
            most = max(most, os.fstat(1).st_blocks * 512)
        print('most held', most, file=sys.stderr)
    """)
    spec = harness.spec(code)
    try:
        handle = await executor.start(spec, harness.sink(spec))
        assert handle["work_dir"].startswith(str(work))
        assert (await executor.wait(handle)).succeeded
        await executor.release(handle)
    finally:
        await executor.close()
    log = harness.log(spec)
    assert sum(1 for stream, _ in log if stream == "stdout") == 240_000
    [held] = [int(text.split()[-1]) for stream, text in log if stream == "stderr"]
    assert held < 8 << 20, f"the raw output file held {held} bytes of 24 MB written"
    assert not work.exists()  # released, then the empty work dir removed with the executor
