"""Copies of large pipeline folders on the code volume: content-addressed, atomic, pruned."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from kubeline.domain import errors
from kubeline.executors.kubernetes import bundles, code_volume

NOW = 1_800_000_000.0
DAY = 24 * 3600.0


def _folder(tmp_path: pathlib.Path, name: str = "sales") -> pathlib.Path:
    folder = tmp_path / "src" / name
    (folder / "pkg").mkdir(parents=True)
    (folder / "main.py").write_text("print('main')\n")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o750)
    (folder / "pkg" / "mod.py").write_text("X = 1\n")
    (folder / "data.bin").write_bytes(os.urandom(4096))
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    (folder / "link.py").symlink_to("pkg/mod.py")
    (folder / "escape").symlink_to("/etc/passwd")
    (folder / "up").symlink_to("../")
    return folder


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "shared"
    path.mkdir()
    return path


def test_a_copy_is_content_addressed_and_holds_what_a_bundle_holds(tmp_path: pathlib.Path,
                                                                   root: pathlib.Path) -> None:
    folder = _folder(tmp_path)
    sub_path = code_volume.publish(folder, root=root, pipeline="sales", now=NOW)
    digest = code_volume.content_hash(bundles.entries(folder))
    assert sub_path == f"pipelines/sales/{digest}"
    copy = root / sub_path
    found = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*"))
    assert found == ["data.bin", "link.py", "main.py", "pkg", "pkg/mod.py", "run.sh"]
    assert (copy / "link.py").is_symlink() and os.readlink(copy / "link.py") == "pkg/mod.py"
    assert (copy / "data.bin").read_bytes() == (folder / "data.bin").read_bytes()
    modes = {name: stat.S_IMODE((copy / name).stat().st_mode) for name in (".", "pkg", "run.sh", "main.py")}
    assert modes == {".": 0o755, "pkg": 0o755, "run.sh": 0o755, "main.py": 0o644}  # readable by the pods' uid
    assert copy.stat().st_mtime == NOW


def test_the_hash_is_deterministic_and_covers_paths_modes_and_contents(tmp_path: pathlib.Path) -> None:
    folder = _folder(tmp_path)
    first = code_volume.content_hash(bundles.entries(folder))
    assert first == code_volume.content_hash(bundles.entries(folder))
    (folder / "__pycache__" / "other.pyc").write_bytes(b"more junk")  # skipped: same hash
    assert code_volume.content_hash(bundles.entries(folder)) == first
    seen = {first}
    (folder / "main.py").chmod(0o755)
    seen.add(code_volume.content_hash(bundles.entries(folder)))
    (folder / "main.py").write_text("print('changed')\n")
    seen.add(code_volume.content_hash(bundles.entries(folder)))
    (folder / "pkg" / "mod.py").rename(folder / "pkg" / "other.py")
    seen.add(code_volume.content_hash(bundles.entries(folder)))
    assert len(seen) == 4


def test_the_same_content_is_reused_and_touched(tmp_path: pathlib.Path, root: pathlib.Path) -> None:
    folder = _folder(tmp_path)
    sub_path = code_volume.publish(folder, root=root, pipeline="sales", now=NOW)
    marker = root / sub_path / "marker"  # a new copy would not have it
    marker.write_text("")
    assert code_volume.publish(folder, root=root, pipeline="sales", now=NOW + 60) == sub_path
    assert marker.exists()
    assert (root / sub_path).stat().st_mtime == NOW + 60


def test_a_crashed_copy_is_ignored_and_later_cleaned(tmp_path: pathlib.Path, root: pathlib.Path) -> None:
    folder = _folder(tmp_path)
    parent = root / "pipelines" / "sales"
    crashed = parent / ".tmp-crashed"
    (crashed / "pkg").mkdir(parents=True)
    (crashed / "main.py").write_text("half")
    os.utime(crashed, (NOW - 60, NOW - 60))
    sub_path = code_volume.publish(folder, root=root, pipeline="sales", now=NOW)
    assert (root / sub_path / "main.py").read_text() == "print('main')\n"
    assert crashed.exists()  # young: maybe another replica is still writing it
    assert [p.name for p in parent.iterdir() if p.name.startswith(".tmp-")] == [".tmp-crashed"]
    code_volume.publish(folder, root=root, pipeline="sales", now=NOW + 2 * 3600)
    assert not crashed.exists()


def test_another_replica_finishing_the_same_copy_first_is_fine(tmp_path: pathlib.Path, root: pathlib.Path) -> None:
    folder = _folder(tmp_path)
    items = bundles.entries(folder)
    parent = root / "pipelines" / "sales"
    parent.mkdir(parents=True)
    target = parent / code_volume.content_hash(items)
    code_volume._copy(items, parent=parent, target=target)
    code_volume._copy(items, parent=parent, target=target)  # lost the rename race
    assert sorted(p.name for p in parent.iterdir()) == [target.name]


def test_old_copies_are_pruned_keeping_recent_use_and_the_newest_three(root: pathlib.Path) -> None:
    parent = root / "pipelines" / "sales"
    ages = {"a": 10 * DAY, "b": 9 * DAY, "c": 8 * DAY, "d": 7 * DAY, "e": 6 * DAY, "f": 3600.0}
    for name, age in ages.items():
        (parent / name).mkdir(parents=True)
        os.utime(parent / name, (NOW - age, NOW - age))
    assert code_volume.prune(parent, now=NOW) == ["a", "b", "c"]
    assert sorted(p.name for p in parent.iterdir()) == ["d", "e", "f"]


def test_pruning_keeps_everything_used_within_a_day(root: pathlib.Path) -> None:
    parent = root / "pipelines" / "sales"
    for index in range(6):
        (parent / f"v{index}").mkdir(parents=True)
        os.utime(parent / f"v{index}", (NOW - index * 3600, NOW - index * 3600))
    assert code_volume.prune(parent, now=NOW) == []
    assert len(list(parent.iterdir())) == 6


def test_publish_prunes_other_copies_of_that_pipeline_only(tmp_path: pathlib.Path, root: pathlib.Path) -> None:
    for pipeline in ("sales", "other"):
        for name in ("old1", "old2", "old3", "old4"):
            (root / "pipelines" / pipeline / name).mkdir(parents=True)
            os.utime(root / "pipelines" / pipeline / name, (NOW - 5 * DAY, NOW - 5 * DAY))
    sub_path = code_volume.publish(_folder(tmp_path), root=root, pipeline="sales", now=NOW)
    assert len(list((root / "pipelines" / "sales").iterdir())) == 3  # the new one + the newest two old ones
    assert (root / sub_path).is_dir()
    assert len(list((root / "pipelines" / "other").iterdir())) == 4


def test_a_code_dir_that_is_not_a_directory_is_named(tmp_path: pathlib.Path) -> None:
    folder = _folder(tmp_path)
    with pytest.raises(errors.ExecutorError, match=f"the code dir {tmp_path / 'nope'} .*is not a directory"):
        code_volume.publish(folder, root=tmp_path / "nope", pipeline="sales")
    (tmp_path / "file").write_text("")
    with pytest.raises(errors.ExecutorError, match="KUBELINE_KUBERNETES_CODE_DIR"):
        code_volume.publish(folder, root=tmp_path / "file", pipeline="sales")


def test_an_unwritable_code_dir_is_named(tmp_path: pathlib.Path) -> None:
    shared = pathlib.Path(tempfile.mkdtemp(prefix="kubeline-test-"))  # under /tmp: uid 1000 reaches it
    try:
        if os.geteuid() == 0:  # root may write anywhere: ask as uid 1000, in a child process
            shared.chmod(0o755)
            check = ("import os, pathlib, sys\nfrom kubeline.executors.kubernetes import code_volume\n"
                     "os.setgid(1000)\nos.setuid(1000)\n"
                     "try:\n code_volume.check_root(pathlib.Path(sys.argv[1]))\n"
                     "except Exception as exc:\n print(exc)\n")
            proc = subprocess.run([sys.executable, "-c", check, str(shared)], capture_output=True, text=True,
                                  timeout=60, check=False)
            message = proc.stdout + proc.stderr
        else:
            shared.chmod(0o555)
            with pytest.raises(errors.ExecutorError) as caught:
                code_volume.publish(_folder(tmp_path), root=shared, pipeline="sales")
            message = str(caught.value)
        assert f"the code dir {shared} (KUBELINE_KUBERNETES_CODE_DIR) is not writable by this server" in message
    finally:
        shared.chmod(0o755)
        shutil.rmtree(shared)


def test_a_copy_that_cannot_be_written_is_an_executor_error(tmp_path: pathlib.Path, root: pathlib.Path) -> None:
    folder = _folder(tmp_path)
    (root / "pipelines").write_text("not a dir")  # the copy cannot make its parent
    with pytest.raises(errors.ExecutorError, match=f"cannot copy pipeline folder {folder} to the code dir"):
        code_volume.publish(folder, root=root, pipeline="sales")


def test_names_are_safe_directory_names() -> None:
    assert code_volume.safe_name("sales") == "sales"
    assert code_volume.safe_name("a/../b c") == "a_.._b_c"
    assert code_volume.safe_name("..") == "_"


def test_uv_cache_dir_is_made_once(root: pathlib.Path) -> None:
    code_volume.ensure_uv_cache(root)
    code_volume.ensure_uv_cache(root)
    assert (root / "uv-cache").is_dir()
