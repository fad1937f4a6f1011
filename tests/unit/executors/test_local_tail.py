"""Splitting attempt output files into log lines: limits, binary data, partial lines."""

from __future__ import annotations

import os
import subprocess

import pytest

from kubeline.executors import local_tail


class ListSink:
    def __init__(self):
        self.lines = []

    def write(self, stream, text, *, at=None):
        self.lines.append((stream, text))

    def close(self):
        pass


def tail_of(path, limit=1024, offset=0):
    return local_tail.StreamTail(path=path, stream="stdout", offset=offset, limit=limit)


def test_whole_lines_now_partial_line_at_the_end(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(b"one\r\ntwo\nthr")
    sink, tail = ListSink(), tail_of(path)
    tail.pump(sink)
    assert sink.lines == [("stdout", "one"), ("stdout", "two")]
    assert tail.offset == 9
    with path.open("ab") as file:
        file.write(b"ee\nfour")
    tail.pump(sink)
    tail.pump(sink, final=True)
    assert [text for _, text in sink.lines] == ["one", "two", "three", "four"]
    assert tail.offset == path.stat().st_size
    tail.close()


def test_long_lines_are_split_at_character_boundaries(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(("é" * 1500).encode() + b"\n" + b"x" * 2500)
    sink, tail = ListSink(), tail_of(path, limit=1024)
    tail.pump(sink, final=True)
    texts = [text for _, text in sink.lines]
    assert "".join(texts[:3]) == "é" * 1500 and all("\ufffd" not in t for t in texts)
    assert all(len(t.encode()) <= 1024 for t in texts)
    assert "".join(texts[3:]) == "x" * 2500


def test_binary_garbage_is_decoded_with_replacement(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(bytes(range(256)) * 4 + b"\n\xff\xfe\x00end\n")
    sink, tail = ListSink(), tail_of(path)
    tail.pump(sink, final=True)
    assert sink.lines[-1] == ("stdout", "\ufffd\ufffd\x00end")


def test_resume_from_an_offset_repeats_nothing(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(b"a\nb\nc\n")
    sink = ListSink()
    tail_of(path, offset=2).pump(sink, final=True)
    assert [text for _, text in sink.lines] == ["b", "c"]


def test_missing_file_reads_nothing(tmp_path):
    assert tail_of(tmp_path / "nope").pump(ListSink()) == 0


def test_what_was_read_is_punched_out_and_the_writer_goes_on(tmp_path):
    """A work dir on tmpfs: the bytes handed to the sink leave the file's memory (a hole, the
    size kept), the lines are all there, and the writer appends at its offset as before."""
    path = tmp_path / "out"
    line = b"x" * 99 + b"\n"
    with path.open("wb") as writer:
        writer.write(line * 30_000)  # 3 MB
        writer.flush()
        sink = ListSink()
        tail = local_tail.StreamTail(path=path, stream="stdout", offset=0, limit=1024, punch=True)
        while tail.pump(sink):
            pass
        assert len(sink.lines) == 30_000 and path.stat().st_size == 3_000_000
        # the read part is a hole now, but what was read since the last punch
        assert path.stat().st_blocks * 512 <= local_tail.PUNCH_EVERY + 64 * 1024
        with path.open("rb") as reader:
            assert reader.read(4096) == b"\0" * 4096
        writer.write(b"after the hole\n")
        writer.flush()
        tail.pump(sink, final=True)
        tail.close()
    assert sink.lines[-1] == ("stdout", "after the hole") and len(sink.lines) == 30_001


def test_without_punch_the_file_keeps_its_bytes(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(b"y" * 99 + b"\n" * 1 + (b"z" * 99 + b"\n") * 20_000)
    tail = local_tail.StreamTail(path=path, stream="stdout", offset=0, limit=1024)
    tail.pump(ListSink(), final=True)
    tail.close()
    assert path.stat().st_blocks * 512 >= path.stat().st_size
    assert path.read_bytes()[:3] == b"yyy"


def test_a_file_it_may_not_write_is_read_without_punching(tmp_path):
    path = tmp_path / "out"
    path.write_bytes((b"r" * 99 + b"\n") * 20_000)
    path.chmod(0o444)
    immutable = os.geteuid() == 0  # root may write a 0444 file: make it immutable instead
    if immutable and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("as root, a file root may not open for writing needs chattr +i, refused here")
    try:
        sink = ListSink()
        tail = local_tail.StreamTail(path=path, stream="stdout", offset=0, limit=1024, punch=True)
        tail.pump(sink, final=True)
        tail.close()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    assert len(sink.lines) == 20_000 and path.stat().st_blocks * 512 >= path.stat().st_size
