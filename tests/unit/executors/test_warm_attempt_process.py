"""Parts of a warm attempt's process (``warm_worker``), each in a subprocess of its own.

Its environment is exactly the one its request carries: it changes only what differs from the
worker's, and the result must still be the request's, down to what a child of the attempt
inherits. An offered spare's end note goes on a socket object made while it waited, and the
worker's own code imports nothing in an attempt."""

from __future__ import annotations

import json
import subprocess
import sys

from kubeline.executors import warm_worker

CHECK = """
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import warm_worker
env = json.loads(sys.argv[2])
warm_worker._set_environ(env)
child = subprocess.run(["/usr/bin/env", "-0"], capture_output=True, check=True).stdout
inherited = dict(item.split("=", 1) for item in child.decode().split("\\0") if item)
print(json.dumps({"environ": dict(os.environ), "inherited": inherited}))
"""


def test_the_environment_becomes_the_requests_exactly() -> None:
    worker_env = {"PATH": "/usr/bin:/bin", "ONLY_WORKER": "gone", "SHARED": "worker", "SAME": "same"}
    wanted = {"PATH": "/usr/bin:/bin", "SHARED": "attempt", "SAME": "same", "NEW": "added", "EMPTY": ""}
    folder = str(__import__("pathlib").Path(warm_worker.__file__).parent)
    done = subprocess.run([sys.executable, "-c", CHECK, folder, json.dumps(wanted)], env=worker_env,
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert found["environ"] == wanted
    assert found["inherited"] == wanted


NOTE = """
import os, socket, sys
sys.path.insert(0, sys.argv[1])
import warm_worker
ours, theirs = socket.socketpair()
fd = theirs.detach()
channel = warm_worker._channel(fd)  # made while the spare waits
read_end, write_end = os.pipe()
assert warm_worker._channel(read_end) is None  # a pipe (a spare the worker hands out): none
warm_worker._NOTE, warm_worker._NOTE_CHANNEL = fd, channel
warm_worker._note(3)
print(ours.recv(64).decode().strip())
"""


def test_an_offered_spares_note_goes_on_the_socket_it_made_while_waiting() -> None:
    folder = str(__import__("pathlib").Path(warm_worker.__file__).parent)
    done = subprocess.run([sys.executable, "-c", NOTE, folder], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "3"


ENDING = """
import os, sys
sys.path.insert(0, sys.argv[1])
import warm_worker
warm_worker._preload()
loaded = set(sys.modules)
main = warm_worker._new_main(os.path.join(sys.argv[1], "script.py"))
real_exit = os._exit
def exit_(code):
    print(" ".join(sorted(set(sys.modules) - loaded)), flush=True)
    real_exit(code)
os._exit = exit_
warm_worker._shutdown(0, main)
"""


def test_an_attempt_imports_nothing_as_it_starts_and_ends() -> None:
    """A first import in a fresh fork copies the pages the import machinery writes (~0.17 ms of
    each attempt for ``atexit``): what the worker's own code imports is loaded before it forks."""
    folder = str(__import__("pathlib").Path(warm_worker.__file__).parent)
    done = subprocess.run([sys.executable, "-c", ENDING, folder], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


LINES = """
import os, sys
sys.path.insert(0, sys.argv[1])
import warm_worker
read_end, write_end = os.pipe()
os.write(write_end, b'{"request": 1}\\ngo\\npart')  # a held attempt's go right behind its request
os.close(write_end)
print(repr([warm_worker._read_line(read_end) for _ in range(3)]))
"""


def test_a_message_right_behind_the_request_is_read_next_not_lost() -> None:
    folder = str(__import__("pathlib").Path(warm_worker.__file__).parent)
    done = subprocess.run([sys.executable, "-c", LINES, folder], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == repr([b'{"request": 1}', b"go", b""])
