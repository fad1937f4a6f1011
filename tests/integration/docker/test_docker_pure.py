"""Pure parts of the Docker executor (no daemon): the container spec, log positions, splitting."""

from __future__ import annotations

import pathlib

from kubeline.domain import specs
from kubeline.executors import base, docker_logs, docker_specs
from kubeline.logs import LogStore


def _spec(**kwargs) -> base.AttemptSpec:
    values = {"attempt_id": "a/1", "run_id": "r1", "pipeline": "p", "stage_id": "s", "number": 2,
              "stage_type": "python", "folder": pathlib.Path("/x"), "argv": ("python", "main.py"),
              "runtime": base.Runtime.PIPELINE, "python_version": "3.11", "requirements": None}
    values.update(kwargs)
    return base.AttemptSpec(**values)


def test_container_is_hardened_and_keeps_secrets_out_of_its_config():
    spec = _spec(env={"PLAIN": "1", "PW": "hunter2"}, secret_env=frozenset({"PW"}),
                 resources=specs.Resources(limits=specs.ResourceAmounts(memory="64Mi", cpu="250m"),
                                           requests=specs.ResourceAmounts(memory="32Mi", cpu="100m")))
    dirs = docker_specs.HostDirs(code="/h/code", bundle="/h/bundle", work="/h/work", artifacts="/h/art")
    c = docker_specs.container(spec, defaults=docker_specs.Defaults(network="none"), dirs=dirs)
    assert c.name == "kubeline-a_1"
    assert c.user == "1000:1000"
    assert c.environment["PLAIN"] == "1" and "PW" not in c.environment
    assert docker_specs.secret_environment(spec) == {"PW": "hunter2"}
    assert c.labels["kubeline.dev/attempt"] == "a_1" and c.labels["kubeline.dev/run"] == "r1"
    host = c.host_config
    assert host["Binds"] == ["/h/code:/kubeline/code:ro", "/h/bundle:/kubeline/bundle:ro",
                             "/h/work:/kubeline/work:rw", "/h/art:/kubeline/artifacts:rw"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and host["Init"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024
    assert host["MemoryReservation"] == 32 * 1024 * 1024
    assert host["NanoCpus"] == 250_000_000 and host["CpuShares"] == 102
    assert host["NetworkMode"] == "none"
    assert docker_specs.plan(spec)["cwd"] == "/kubeline/code"
    assert docker_specs.plan(_spec(folder=None))["cwd"] == "/kubeline/work/tmp"


def test_position_skips_what_was_taken_when_a_stream_is_reopened():
    position = docker_logs.Position()
    assert [position.take(t) for t in (5, 7, 7)] == [True, True, True]
    position.reopen()
    assert [position.take(t) for t in (5, 7, 7, 7, 9)] == [False, False, False, True, True]
    assert position.since() is None or position.since() == 0


def test_positions_from_the_log_file_are_per_stream(tmp_path):
    store = LogStore(tmp_path)
    sink = store.sink(run_id="r", stage_id="s", attempt=1)
    sink.write("stdout", "a", at=100.0000015)
    sink.write("stdout", "b", at=100.0000015)
    sink.write("stderr", "e", at=99.5000005)
    sink.write("system", "ignored", at=200.0)
    sink.close()
    found = docker_logs.positions_from_file(sink.path)
    assert (found["stdout"].last_us, found["stdout"].at_last) == (100_000_001, 2)
    assert (found["stderr"].last_us, found["stderr"].at_last) == (99_500_000, 1)
    assert docker_logs.positions_from_file(tmp_path / "missing.log")["stdout"].last_us == -1


def test_split_bytes_never_cuts_a_character():
    text = ("é" * 10).encode()
    pieces = docker_logs.split_bytes(text, 5)
    assert b"".join(pieces) == text
    assert all(len(p) <= 5 for p in pieces)
    assert [p.decode() for p in pieces] == ["éé", "éé", "éé", "éé", "éé"]
    assert docker_logs.split_bytes(b"\xff" * 7, 3) == [b"\xff" * 3, b"\xff" * 3, b"\xff"]


def test_a_live_stream_keeps_lines_stamped_before_the_last_one():
    position = docker_logs.Position()
    assert [position.take(t) for t in (5, 9, 7)] == [True, True, True]  # the host's clock stepped back
    position.reopen()
    assert [position.take(t) for t in (5, 7, 8, 6)] == [False, False, True, True]
