"""The warm executor with real processes: the local executor's behaviour, forked from a warm
interpreter (outcomes, logs, kills, limits, masking, adoption) and what a fresh `python` does."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import select
import signal
import time

import pytest
from conftest import make_executor  # type: ignore[import-not-found]

from kubeline.domain import specs, states


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_success_with_outputs_route_inputs_and_the_script_view(warm):
    code = """
        import json, os, sys
        from kubeline import task
        inputs = json.load(open(os.environ["KUBELINE_INPUTS"]))
        task.set_output("doubled", inputs["x"] * 2)
        task.set_output("view", {"exe": sys.executable, "cwd": os.getcwd(), "argv": sys.argv,
                                 "name": __name__, "file": __file__, "path0": sys.path[0],
                                 "plain": os.environ["PLAIN"], "cfg": task.config()["k"],
                                 "leak": os.environ.get("KUBELINE_SECRET_KEY"),
                                 "pgid": os.getpgid(0), "main": sys.modules["__main__"].__file__})
        task.set_route("big")
        open(os.path.join(os.environ["KUBELINE_ARTIFACTS_DIR"], "a.txt"), "w").write("kept")
        print("hello")
    """
    spec = warm.spec(code, argv=("python", "-u", "main.py", "one", "two"), inputs={"x": 21},
                     config={"k": "v"}, env={"PLAIN": "yes"})
    os.environ["KUBELINE_SECRET_KEY"] = "server-only"
    try:
        handle = await warm.start(spec)
    finally:
        del os.environ["KUBELINE_SECRET_KEY"]
    assert handle["warm_worker"] != handle["pid"]
    result = await warm.executor.wait(handle)
    assert result.succeeded, (result.error, warm.log(spec))
    assert result.exit_code == 0 and result.route == "big" and result.outputs["doubled"] == 42
    view = result.outputs["view"]
    folder = str(spec.folder)
    assert view["exe"].endswith("/bin/python") and view["cwd"] == folder
    assert view["argv"] == ["main.py", "one", "two"] and view["name"] == "__main__"
    assert view["file"] == view["main"] == f"{folder}/main.py" and view["path0"] == folder
    assert view["plain"] == "yes" and view["cfg"] == "v" and view["leak"] is None
    assert view["pgid"] == handle["pgid"]  # the attempt's own process group, like `local`
    assert warm.log(spec) == [("stdout", "hello")]
    assert (warm.tmp_path / "art" / "run-1" / spec.stage_id / "1" / "a.txt").read_text() == "kept"
    assert os.path.exists(handle["work_dir"])  # until the engine has stored the result
    await warm.executor.release(handle)
    await warm.executor.janitor.settle()  # the release's cleanup runs on its thread
    assert not os.path.exists(handle["work_dir"])


async def test_exit_codes_and_tracebacks_like_python(warm):
    spec = warm.spec("import sys; sys.exit(3)")
    result = await warm.run(spec)
    assert result.failure is states.FailureKind.EXIT_CODE
    assert result.exit_code == 3 and result.error == "exited with code 3"

    spec = warm.spec("import sys; sys.exit('bad input')")
    result = await warm.run(spec)
    assert result.exit_code == 1 and ("stderr", "bad input") in warm.log(spec)

    spec = warm.spec("def f():\n    raise ValueError('boom')\nf()")
    result = await warm.run(spec)
    assert result.exit_code == 1 and result.error == "exited with code 1"
    stderr = [text for stream, text in warm.log(spec) if stream == "stderr"]
    assert stderr == ["Traceback (most recent call last):",
                      f'  File "{spec.folder}/main.py", line 3, in <module>', "    f()",
                      f'  File "{spec.folder}/main.py", line 2, in f',
                      "    raise ValueError('boom')", "ValueError: boom"]  # no worker frames
    assert warm.log(spec)[-1] == ("system", "attempt failed: exited with code 1")

    spec = warm.spec("x = (")
    assert (await warm.run(spec)).exit_code == 1
    assert ("stderr", "SyntaxError: '(' was never closed") in warm.log(spec)


async def test_killed_by_a_signal(warm):
    result = await warm.run(warm.spec("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))
    assert result.failure is states.FailureKind.EXIT_CODE
    assert result.error == "killed by signal SIGSEGV"


async def test_one_process_per_attempt_a_child_of_its_worker(warm):
    """The handle names the process that runs the script: its session and group leader, a
    child of the warm worker (no supervisor in between); its exit with the rc it wrote ends the
    attempt, while its worker may still be reaping it: never a lost status."""
    spec = warm.spec("import os, sys\nprint(os.getpid(), os.getsid(0), os.getpgid(0), os.getppid())"
                     "\nsys.exit(7)")
    handle = await warm.start(spec)
    result = await warm.executor.wait(handle)
    assert (result.exit_code, result.error) == (7, "exited with code 7")
    pid = handle["pid"]
    assert warm.log(spec)[0] == ("stdout", f"{pid} {pid} {pid} {handle['warm_worker']}")
    assert handle["attempt_pid"] == pid and handle["attempt_start"] == handle["proc_start"]
    for _ in range(60):  # the end races the worker's reaping and the group kill
        assert (await warm.run(warm.spec("pass"))).succeeded


async def test_a_signal_from_outside_is_recorded_by_the_worker(warm):
    """Killed before it could write rc: its worker records 128 + the signal before reaping it."""
    spec = warm.spec("import time; print('up', flush=True); time.sleep(1000)")
    handle = await warm.start(spec)
    for _ in range(200):
        if warm.log(spec):
            break
        await asyncio.sleep(0.01)
    os.kill(handle["pid"], signal.SIGKILL)
    result = await warm.executor.wait(handle)
    assert (result.exit_code, result.error) == (137, "killed by signal SIGKILL")
    rc = pathlib.Path(handle["work_dir"]) / "rc"
    for _ in range(200):  # the result may come from the zombie, a moment before the worker's rc
        if rc.exists():
            break
        await asyncio.sleep(0.01)
    assert rc.read_text() == "137\n"
    await warm.executor.release(handle)


async def offered(warm) -> None:
    """Until the pool has all its workers and each has offered a spare (the next start is a pipe
    write; a worker still starting would offer one, and take starts, later)."""
    assert (await warm.run(warm.spec("pass"))).succeeded  # the pool is up
    deadline = time.monotonic() + 60  # a worker's start on a loaded machine
    while time.monotonic() < deadline:
        workers = [w for pool in warm.executor._pools.values() for w in pool._workers]
        if len(workers) == warm.executor.workers_per_venv and all(w.offers_spare for w in workers):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no spare offered")


async def test_a_start_on_an_offered_spare_records_its_end_like_any(warm):
    """The spare makes its work dir and handle itself; its worker learns it was taken from a
    note after the start and records a signal's status in rc, also when the attempt ended
    before the worker read the note."""
    await offered(warm)
    spec = warm.spec("import os, signal\nprint('up', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
    pids = next(iter(warm.executor.worker_pids().values()))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # the note waits; the attempt ends before it is read
    try:
        handle = await warm.start(spec)
        pidfd = os.pidfd_open(handle["pid"])
        for _ in range(500):  # ended (a zombie of the stopped worker)
            if select.select([pidfd], [], [], 0.01)[0]:
                break
        os.close(pidfd)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    result = await warm.executor.wait(handle)
    assert (result.exit_code, result.error) == (137, "killed by signal SIGKILL")
    rc = pathlib.Path(handle["work_dir"]) / "rc"
    for _ in range(200):
        if rc.exists():
            break
        await asyncio.sleep(0.01)
    assert rc.read_text() == "137\n"
    with open(os.path.join(handle["work_dir"], "handle.json")) as file:
        assert json.load(file) == handle
    assert warm.log(spec)[0] == ("stdout", "up")
    await warm.executor.release(handle)
    spec = warm.spec("print('next')")
    assert (await warm.run(spec)).succeeded and warm.log(spec) == [("stdout", "next")]


async def test_an_attempt_killed_once_it_wrote_its_rc_keeps_it(warm):
    """The executor hears an offered attempt's end from its note, before the process is gone,
    and kills its group: a kill that lands after the attempt wrote rc does not rewrite it."""
    await offered(warm)
    spec = warm.spec("import os, pathlib, signal\n"
                     "pathlib.Path(os.environ['KUBELINE_OUTPUTS']).with_name('rc').write_text('0\\n')\n"
                     "os.kill(os.getpid(), signal.SIGKILL)")
    handle = await warm.start(spec)
    result = await warm.executor.wait(handle)
    assert result.succeeded, result
    await asyncio.sleep(0.2)  # the worker has reaped it
    assert (pathlib.Path(handle["work_dir"]) / "rc").read_text() == "0\n"
    await warm.executor.release(handle)
    for _ in range(20):  # ended by the note, then killed with its group: still whole results
        spec = warm.spec("print('done')")
        assert (await warm.run(spec)).succeeded and warm.log(spec) == [("stdout", "done")]


async def test_shutdown_joins_threads_runs_atexit_and_flushes_files(warm):
    code = """
        import atexit, threading, time
        out = open("kept.txt", "w")
        out.write("unclosed but flushed")
        atexit.register(lambda: print("atexit ran"))
        def late():
            time.sleep(0.2)
            print("thread done")
        threading.Thread(target=late).start()
    """
    spec = warm.spec(code)
    assert (await warm.run(spec)).succeeded
    assert warm.log(spec) == [("stdout", "thread done"), ("stdout", "atexit ran")]
    assert (spec.folder / "kept.txt").read_text() == "unclosed but flushed"


async def test_very_short_scripts_logs_are_complete(warm):
    for _ in range(10):
        spec = warm.spec("import sys; print('a'); print('b', file=sys.stderr); sys.stdout.write('c')")
        assert (await warm.run(spec)).succeeded
        assert sorted(warm.log(spec)) == [("stderr", "b"), ("stdout", "a"), ("stdout", "c")]


async def test_secrets_are_masked(warm):
    spec = warm.spec("import os; print('token is', os.environ['TOKEN'])",
                     env={"TOKEN": "s3cr3t-value"}, secret_env=frozenset({"TOKEN"}))
    assert (await warm.run(spec, secrets=["s3cr3t-value"])).succeeded
    assert warm.log(spec) == [("stdout", "token is ***")]
    raw = (warm.tmp_path / "logs" / "run-1" / spec.stage_id / "1.log").read_text()
    assert "s3cr3t" not in raw


async def test_timeout_kills_the_group_including_a_child_ignoring_sigterm(warm):
    code = """
        import os, signal, time
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(1000)
        print(pid, flush=True)
        time.sleep(1000)
    """
    spec = warm.spec(code, timeout=1)
    started = time.monotonic()
    result = await warm.run(spec)
    assert result.failure is states.FailureKind.TIMEOUT
    assert result.error == "timed out after 1s"
    assert time.monotonic() - started < 10
    child = int(warm.log(spec)[0][1])
    await asyncio.sleep(0.1)
    assert not alive(child)


async def test_cancel_mid_run(warm):
    spec = warm.spec("import time; print('started', flush=True); time.sleep(1000)")
    handle = await warm.start(spec)
    await asyncio.sleep(0.3)
    await warm.executor.cancel(handle)
    result = await warm.executor.wait(handle)
    assert result.failure is states.FailureKind.CANCELLED
    assert ("stdout", "started") in warm.log(spec)
    assert not alive(handle["pid"])


async def test_memory_hog_ends_as_oom(warm):
    code = "x = []\nwhile True:\n    x.append(bytearray(4 << 20))"
    spec = warm.spec(code, resources=specs.Resources(limits={"memory": "64Mi"}), timeout=60)
    started = time.monotonic()
    result = await warm.run(spec)
    assert result.failure is states.FailureKind.OOM, result
    assert result.error == "exceeded its memory limit of 64Mi"
    assert time.monotonic() - started < 20


async def test_adopt_after_the_executor_is_gone(warm, tmp_path, venvs_root):
    code = """
        import sys, time
        for i in range(30):
            print(f"line {i}", flush=True)
            time.sleep(0.02)
        sys.exit(7)
    """
    spec = warm.spec(code)
    handle = await warm.start(spec)
    await asyncio.sleep(0.25)
    await warm.executor.close()  # the server "dies" (its warm workers too); the attempt runs on
    assert alive(handle["pid"])
    handle = json.loads(json.dumps(handle))  # as stored in the database
    await asyncio.sleep(0.2)

    successor = make_executor(tmp_path, venvs_root)
    try:
        assert await successor.find(spec.attempt_id) == handle  # also without the stored handle
        assert await successor.adopt(handle, warm.sink(spec))
        result = await successor.wait(handle)
        assert result.exit_code == 7 and result.failure is states.FailureKind.EXIT_CODE
        await successor.release(handle)
    finally:
        await successor.close()
    texts = [text for stream, text in warm.log(spec) if stream == "stdout"]
    assert texts == [f"line {i}" for i in range(30)]
    assert not await successor.adopt(handle, warm.sink(spec))  # released: gone (LOST)


async def test_a_worker_crash_spares_running_attempts_and_a_new_worker_starts(warm):
    spec = warm.spec("import time; time.sleep(0.5); print('survived')")
    handle = await warm.start(spec)
    await asyncio.sleep(0.2)  # running (the worker has handed over its request)
    (python, old), = warm.executor.worker_pids().items()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    result = await warm.executor.wait(handle)
    assert result.succeeded and warm.log(spec) == [("stdout", "survived")]
    spec = warm.spec("print('next')")
    result = await warm.run(spec)
    assert result.succeeded and warm.log(spec) == [("stdout", "next")]
    new = warm.executor.worker_pids()[python]
    assert new and not set(new) & set(old)


async def test_a_worker_dying_while_starting_an_attempt_is_retried_and_logged(warm):
    await offered(warm)  # every worker of the pool up: one still starting would take starts meanwhile
    pids = next(iter(warm.executor.worker_pids().values()))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # requests queue up unanswered...
    direct = []  # (a spare a worker offered takes a start without it: a pipe write)
    while True:
        spec = warm.spec("print('ran once')")
        starting = asyncio.ensure_future(warm.start(spec))
        await asyncio.sleep(0.3)
        if not starting.done():
            break
        direct.append((spec, starting.result()))
        assert len(direct) <= len(pids), "one offered spare per worker at most"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # ...and the worker dies before it forked anything
    for other, other_handle in direct:  # those run on, their worker gone
        assert (await warm.executor.wait(other_handle)).succeeded
        assert warm.log(other)[-1] == ("stdout", "ran once")
    handle = await starting
    result = await warm.executor.wait(handle)
    assert result.succeeded
    log = warm.log(spec)
    assert ("stdout", "ran once") in log
    system = [text for stream, text in log if stream == "system"]
    assert any("was killed by signal SIGKILL; starting this attempt on another warm worker" in text
               for text in system), system


async def test_unfit_stages_take_the_cold_path(warm):
    spec = warm.spec(argv=("sh", "-c", "echo from sh"), stage_type="shell")
    assert (await warm.run(spec, warm=False)).succeeded
    assert warm.log(spec) == [("stdout", "from sh")]
    spec = warm.spec("import os; print(os.environ['PYTHONHASHSEED'])", env={"PYTHONHASHSEED": "7"})
    assert (await warm.run(spec, warm=False)).succeeded
    assert warm.log(spec) == [("stdout", "7")]


async def test_pythonpath_from_the_stage_env(warm):
    spec = warm.spec("import helper; print(helper.VALUE)", env={"PYTHONPATH": "lib"})
    (spec.folder / "lib").mkdir()
    (spec.folder / "lib" / "helper.py").write_text("VALUE = 'from lib'\n")
    assert (await warm.run(spec)).succeeded
    assert warm.log(spec) == [("stdout", "from lib")]


async def test_missing_script_and_folder(warm, tmp_path):
    spec = warm.spec(argv=("python", "-u", "nope.py"))
    result = await warm.run(spec)
    assert result.exit_code == 2
    assert any("can't open file" in text for _, text in warm.log(spec))
    from kubeline.domain import errors

    spec = warm.spec("pass", folder=tmp_path / "missing")
    with pytest.raises(errors.ExecutorError, match="does not exist"):
        await warm.start(spec)


async def test_a_fan_out_is_handed_out_together_and_each_attempt_is_whole(warm, tmp_path):
    """Starts asked for at once are pipelined to the workers (no round trip each); the worker
    makes each work dir and its handle before it replies, the attempt its inputs, config and
    artifacts dir: every attempt sees its own, and a refused start amid them costs nothing."""
    assert (await warm.run(warm.spec("pass"))).succeeded  # the pool is up
    code = """
        import json, os
        inputs = json.load(open(os.environ["KUBELINE_INPUTS"]))
        config = json.load(open(os.environ["KUBELINE_CONFIG"]))
        assert os.path.isdir(os.environ["KUBELINE_ARTIFACTS_DIR"])
        print(inputs["n"], config["c"])
    """
    specs = [warm.spec(code, inputs={"n": n}, config={"c": -n}) for n in range(40)]
    refused = warm.spec("pass", folder=tmp_path / "missing")
    starts = [warm.start(spec) for spec in specs[:20]] + [warm.start(refused)] + \
        [warm.start(spec) for spec in specs[20:]]
    peak = 0

    async def sample() -> None:  # requests in flight to one worker at once
        nonlocal peak
        while True:
            for pool in warm.executor._pools.values():
                peak = max([peak, *(w.in_flight for w in pool._workers)])
            await asyncio.sleep(0)

    sampler = asyncio.ensure_future(sample())
    done = await asyncio.gather(*starts, return_exceptions=True)
    sampler.cancel()
    assert peak > 1
    from kubeline.domain import errors

    assert isinstance(done[20], errors.ExecutorError) and "does not exist" in str(done[20])
    handles = [h for i, h in enumerate(done) if i != 20]
    results = await asyncio.gather(*(warm.executor.wait(h) for h in handles))
    for handle in handles:  # on disk before the start returned (made by the worker), or made by
        with open(os.path.join(handle["work_dir"], "handle.json")) as file:  # an offered spare
            assert json.load(file) == handle
    for spec, handle, result in zip(specs, handles, results, strict=True):
        assert result.succeeded, (spec.attempt_id, result)
        assert warm.log(spec) == [("stdout", f"{spec.inputs['n']} {-spec.inputs['n']}")]
        await warm.executor.release(handle)
    assert not (tmp_path / "work" / refused.attempt_id).exists()


async def held(warm, spec):
    """``start_held`` of ``spec`` once a spare is offered (a worker offers its next one a moment
    after a start)."""
    await offered(warm)
    for _ in range(500):
        found = await warm.executor.start_held(spec, warm.sink(spec))
        if found is not None:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError("nothing held")


async def test_a_held_attempt_prepares_and_runs_its_script_only_once_let_go(warm, tmp_path):
    """Made ready while the engine records it: its work dir, handle and inputs are there, the
    script is not run; ``go`` runs it, and the attempt ends like any."""
    marker = tmp_path / "ran"
    spec = warm.spec(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\nprint('ran')",
                     inputs={"n": 1})
    ready = await held(warm, spec)
    work = pathlib.Path(ready.handle["work_dir"])
    for _ in range(300):  # prepared by the spare a moment after the hand-over
        if (work / "inputs.json").exists():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert json.loads((work / "handle.json").read_text()) == ready.handle
    assert not marker.exists() and alive(ready.handle["pid"])
    ready.go()
    result = await warm.executor.wait(ready.handle)
    assert result.succeeded and marker.read_text() == "yes"
    assert warm.log(spec) == [("stdout", "ran")]
    await warm.executor.release(ready.handle)


async def test_an_aborted_hold_runs_nothing_and_leaves_nothing(warm, tmp_path):
    """The record failed (or the server is gone): the spare ends without running the script,
    removes its work dir and its artifacts dir, and the attempt is not found as started."""
    marker = tmp_path / "ran"
    spec = warm.spec(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('yes')")
    ready = await held(warm, spec)
    work = pathlib.Path(ready.handle["work_dir"])
    artifacts = pathlib.Path(ready.handle["artifacts_dir"])
    for _ in range(300):
        if (work / "inputs.json").exists() and artifacts.is_dir():
            break
        await asyncio.sleep(0.01)
    ready.abort()
    for _ in range(500):
        if not alive(ready.handle["pid"]):
            break
        await asyncio.sleep(0.01)
    assert not alive(ready.handle["pid"])
    assert not marker.exists() and not work.exists() and not artifacts.exists()
    assert await warm.executor.find(spec.attempt_id) is None
    spec = warm.spec("print('next')")  # the pool goes on
    assert (await warm.run(spec)).succeeded and warm.log(spec) == [("stdout", "next")]


async def test_nothing_is_held_for_a_cold_stage(warm):
    spec = warm.spec("pass", argv=("python", "-X", "dev", "main.py"))
    await offered(warm)
    assert await warm.executor.start_held(spec, warm.sink(spec)) is None
