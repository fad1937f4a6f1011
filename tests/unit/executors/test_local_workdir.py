"""Where local attempts keep their work dirs: a private dir on a tmpfs, else the data dir."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest

from kubeline.executors import local_workdir

ROOT_IS_TMPFS = {"/"}  # tests pretend the filesystem of tmp_path is a tmpfs


def test_the_mount_table_names_the_tmpfs_mounts(tmp_path: pathlib.Path) -> None:
    table = tmp_path / "mounts"
    table.write_text("/dev/vda / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n"
                     "tmpfs /run/user/1000 tmpfs rw 0 0\nshm /with\\040space tmpfs rw 0 0\nbroken\n")
    assert local_workdir.tmpfs_mounts(table) == {"/dev/shm", "/run/user/1000", "/with space"}
    assert local_workdir.tmpfs_mounts(tmp_path / "missing") == set()
    assert local_workdir.on_tmpfs(tmp_path, {"/"}) and not local_workdir.on_tmpfs(tmp_path, set())


def test_the_runtime_dir_first_then_shm_then_the_data_dir(tmp_path: pathlib.Path) -> None:
    home, runtime, shm = tmp_path / "home", tmp_path / "run-user", tmp_path / "shm"
    runtime.mkdir(mode=0o700)
    shm.mkdir()
    chosen = local_workdir.default_work_dir(home, environ={"XDG_RUNTIME_DIR": str(runtime)}, shm=shm,
                                            mounts=ROOT_IS_TMPFS)
    assert chosen.parent == runtime / "kubeline" and len(chosen.name) == 16
    assert local_workdir.default_work_dir(home, environ={}, shm=shm, mounts=ROOT_IS_TMPFS).parent \
        == shm / f"kubeline-{os.getuid()}"
    assert local_workdir.default_work_dir(home, environ={}, shm=shm, mounts=set()) == home / "work"
    relative = local_workdir.default_work_dir(home, environ={"XDG_RUNTIME_DIR": "run"}, shm=shm,
                                              mounts=ROOT_IS_TMPFS)
    assert relative.parent == shm / f"kubeline-{os.getuid()}"  # a relative runtime dir is ignored
    assert (shm / f"kubeline-{os.getuid()}").stat().st_mode & 0o777 == 0o700


def test_two_data_dirs_never_share_a_work_dir(tmp_path: pathlib.Path) -> None:
    one = local_workdir.default_work_dir(tmp_path / "a", environ={}, shm=tmp_path, mounts=ROOT_IS_TMPFS)
    two = local_workdir.default_work_dir(tmp_path / "b", environ={}, shm=tmp_path, mounts=ROOT_IS_TMPFS)
    again = local_workdir.default_work_dir(tmp_path / "x" / ".." / "a", environ={}, shm=tmp_path,
                                           mounts=ROOT_IS_TMPFS)
    assert one != two and one == again


@pytest.mark.parametrize("made", ["open to others", "a symlink", "a file"])
def test_a_shared_dir_someone_else_could_have_made_is_refused(
        tmp_path: pathlib.Path, made: str, caplog: pytest.LogCaptureFixture) -> None:
    shm, home = tmp_path / "shm", tmp_path / "home"
    shm.mkdir()
    ours = shm / f"kubeline-{os.getuid()}"
    if made == "open to others":
        ours.mkdir()
        ours.chmod(0o777)
    elif made == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        ours.symlink_to(tmp_path / "elsewhere")
    else:
        ours.write_text("")
    with caplog.at_level(logging.WARNING):
        chosen = local_workdir.default_work_dir(home, environ={}, shm=shm, mounts=ROOT_IS_TMPFS)
    assert chosen == home / "work"
    assert f"attempt work dirs cannot go to {ours}" in caplog.text
