"""One result protocol: the pod entrypoint hands back outputs and route through its log (or an
upload), and the executor's reader takes them back, refusing cut or damaged results."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from kubeline.runtime import pod, results

TOKEN = "attempt-token-" + "k" * 30


@pytest.fixture
def work(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    (tmp_path / "io").mkdir()
    monkeypatch.setenv("KUBELINE_ATTEMPT_TOKEN", TOKEN)
    monkeypatch.setenv("KUBELINE_ATTEMPT_ID", "A1")
    monkeypatch.delenv("KUBELINE_URL", raising=False)
    monkeypatch.setenv("KUBELINE_BUNDLE", str(tmp_path / "no-bundle"))
    return tmp_path


def _reader() -> results.Reader:
    return results.Reader([pod.end_marker(TOKEN, "stdout"), pod.end_marker(TOKEN, "stderr")],
                          results.line_tag(TOKEN))


def _read(out: str, err: str) -> tuple[results.Reader, list[str]]:
    """What the executor reads: both streams merged (stderr first here: any order works)."""
    reader, log = _reader(), []
    for line in [*err.splitlines(), *out.splitlines()]:
        if not reader.take(line):
            log.append(line)
    return reader, log


def test_without_an_upload_url_the_result_travels_in_the_log(work: pathlib.Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    outputs = {"n": 3, "blob": "x" * 50_000, "text": "é\n" * 10}
    (work / "io" / "outputs.json").write_text(json.dumps(outputs))
    (work / "io" / "route").write_text("left\n")
    print("the stage's own line")
    assert pod.hand_back(work) == 0
    captured = capsys.readouterr()
    reader, log = _read(captured.out, captured.err)
    assert log == ["the stage's own line"]
    assert reader.complete and reader.delivery == results.RESULT
    assert reader.body() == {"outputs": outputs, "route": "left"}
    assert TOKEN not in captured.out + captured.err


def test_an_unreachable_upload_url_falls_back_to_the_log_in_seconds(work: pathlib.Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELINE_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(pod, "UNREACHABLE_SECONDS", 0.3)
    (work / "io" / "outputs.json").write_text('{"ok": true}')
    assert pod.hand_back(work) == 0
    captured = capsys.readouterr()
    assert ("could not reach the Kubeline API at http://127.0.0.1:9 from the pod: connection refused; "
            "handing the result back through the pod log instead") in captured.err
    reader, _ = _read(captured.out, captured.err)
    assert reader.body() == {"outputs": {"ok": True}, "route": None}


def test_a_result_larger_than_a_pod_log_carries_fails_saying_why(work: pathlib.Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (work / "io" / "outputs.json").write_text(json.dumps({"big": os.urandom(3_500_000).hex()}))
    assert pod.hand_back(work) == pod.UPLOAD_FAILED
    captured = capsys.readouterr()
    assert "more than the 4096 KiB a pod log carries, and no upload URL was given; set " \
           "KUBELINE_KUBERNETES_API_URL" in captured.err
    reader, _ = _read(captured.out, captured.err)
    assert reader.complete and reader.delivery == results.FAILED


def test_invalid_outputs_fail_with_the_reason(work: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "io" / "outputs.json").write_text("[1, 2]")
    assert pod.hand_back(work) == 1
    captured = capsys.readouterr()
    assert "wrote JSON that is not an object to $KUBELINE_OUTPUTS (a list)" in captured.err
    assert _read(captured.out, captured.err)[0].delivery == results.FAILED


def _lines(body: dict[str, object]) -> list[str]:
    payload = results.encode(body)
    return results.lines(TOKEN, payload)


def test_a_result_cut_in_the_middle_is_refused_by_name() -> None:
    lines = _lines({"outputs": {"blob": os.urandom(40_000).hex()}, "route": None})
    assert len(lines) >= 3
    reader = _reader()
    for line in [f"{pod.end_marker(TOKEN, 'stdout')} result {len(lines)}", pod.end_marker(TOKEN, "stderr") + " result",
                 *lines[:1], *lines[2:]]:
        assert reader.take(line)
    assert not reader.complete
    with pytest.raises(results.ResultError, match=rf"its result was cut: {len(lines) - 1} of {len(lines)} "
                                                  r"result lines reached the pod log \(missing from line 2\)"):
        reader.body()


def test_a_damaged_result_is_refused() -> None:
    (line,) = _lines({"outputs": {"n": 1}})
    reader = _reader()
    reader.take(f"{pod.end_marker(TOKEN, 'stdout')} result 1")
    reader.take(line[:-8] + "AAAAAAAA")
    with pytest.raises(results.ResultError, match="damaged"):
        reader.body()


def test_a_stage_cannot_forge_result_lines_or_markers() -> None:
    forged = results.lines("guessed-token", results.encode({"outputs": {"evil": 1}}))
    reader = _reader()
    assert not any(reader.take(line) for line in forged)
    assert not reader.take(pod.end_marker("guessed-token", "stdout") + " result 1")
    assert not reader.take("[kubeline] could not prepare the attempt")
    assert reader.delivery is None


def test_replayed_lines_count_once_and_order_does_not_matter() -> None:
    lines = _lines({"outputs": {"blob": os.urandom(30_000).hex()}})
    reader = _reader()
    for line in [*reversed(lines), *lines, pod.end_marker(TOKEN, "stderr") + " result",
                 f"{pod.end_marker(TOKEN, 'stdout')} result {len(lines)}"]:
        reader.take(line)
    assert reader.complete
    assert set(reader.body()["outputs"]) == {"blob"}


def test_the_pod_loads_the_protocol_shipped_beside_it(tmp_path: pathlib.Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "kubeline_results.py").write_text(pathlib.Path(results.__file__).read_text() + "\nSHIPPED = True\n")
    monkeypatch.setenv("KUBELINE_BUNDLE", str(bundle))
    monkeypatch.delitem(__import__("sys").modules, "kubeline_results", raising=False)
    shipped = pod._results()
    assert shipped.SHIPPED is True
    assert str(bundle) not in __import__("sys").path
    assert shipped.end_marker(TOKEN, "stdout") == pod.end_marker(TOKEN, "stdout")
