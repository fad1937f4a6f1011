"""Git sync against real repositories over file://, on SQLite and PostgreSQL: atomic switch,
validation before serving, force-push, deleted branch, unreachable remote, credentials in URLs,
and two replicas agreeing on one commit through the database."""

from __future__ import annotations

import pathlib

from kubeline.domain import repos
from kubeline.storage.sql import SqlStore

from .conftest import GOOD, Origin, make_sync


def spec_for(origin: Origin, **extra: object) -> repos.RepoSpec:
    return repos.RepoSpec.model_validate({"name": "team", "url": origin.url, "subdir": "pipelines", **extra})


async def served(store: SqlStore) -> dict[str, str | None]:
    return {p.name: repos.commit_of(p.path) for p in await store.list_pipelines()}


async def test_a_valid_commit_is_served_from_its_own_tree(tmp_path: pathlib.Path, origin: Origin,
                                                          store: SqlStore) -> None:
    first = origin.commit(GOOD)
    sync = make_sync(tmp_path / "git", store, spec_for(origin))
    state = await sync.sync("team")
    assert (state.status, state.good_commit, state.problems) == ("ok", first, [])
    assert await served(store) == {"hello": first, "report": first}
    assert sync.current("team") == first
    assert (tmp_path / "git/team/current/pipelines/hello/main.py").read_text() == "print('hello')\n"
    assert not list((tmp_path / "git/team/trees").glob(".*")), "no half-made tree left behind"
    second = origin.commit({"pipelines/hello/main.py": "print('hello 2')\n", "pipelines/report/pipeline.yaml": None,
                            "pipelines/report/main.py": "print('r')\n"})
    state = await sync.sync("team")
    assert (state.status, state.good_commit, state.message) == ("ok", second, f"serving {second[:12]}")
    assert await served(store) == {"hello": second, "report": second}
    old_tree = tmp_path / "git/team/trees" / first
    assert (old_tree / "pipelines/hello/main.py").read_text() == "print('hello')\n"  # runs of `first` keep it
    again = await sync.sync("team")
    assert (again.status, again.message) == ("ok", f"up to date at {second[:12]}")


async def test_an_invalid_commit_keeps_the_last_good_one_and_reports_every_problem(
        tmp_path: pathlib.Path, origin: Origin, store: SqlStore) -> None:
    good = origin.commit(GOOD)
    sync = make_sync(tmp_path / "git", store, spec_for(origin))
    await sync.sync("team")
    bad = origin.commit({"pipelines/report/pipeline.yaml": "stages:\n  - {id: a, type: shel}\n",
                         "pipelines/cron/pipeline.json": '{"schedule_cron": "61 * * * *", "retries": -1}',
                         "pipelines/cron/main.py": ""})
    state = await sync.sync("team")
    assert (state.status, state.good_commit, state.seen_commit) == ("invalid", good, bad)
    assert state.message.startswith(f"commit {bad[:12]} not served: 3 problem(s); serving {good[:12]}")
    assert any("report/pipeline.yaml: stages[0].type: unknown stage type 'shel'" in p for p in state.problems)
    assert any("cron/pipeline.json" in p and "61 * * * *" in p for p in state.problems)
    assert any("cron/pipeline.json: retries" in p for p in state.problems)
    assert await served(store) == {"hello": good, "report": good}
    assert sync.current("team") == good
    fixed = origin.commit({"pipelines/report/pipeline.yaml": GOOD["pipelines/report/pipeline.yaml"],
                           "pipelines/cron/pipeline.json": '{"schedule_cron": "1 * * * *"}'})
    state = await sync.sync("team")
    assert (state.status, state.good_commit, state.problems) == ("ok", fixed, [])
    assert await served(store) == {"hello": fixed, "report": fixed, "cron": fixed}


async def test_force_push_deleted_branch_and_unreachable_remote_keep_the_last_good_pipelines(
        tmp_path: pathlib.Path, origin: Origin, store: SqlStore) -> None:
    origin.commit(GOOD)
    second = origin.commit({"pipelines/hello/main.py": "print(2)\n"})
    sync = make_sync(tmp_path / "git", store, spec_for(origin))
    await sync.sync("team")
    from .conftest import git
    git("reset", "--quiet", "--hard", "HEAD~1", cwd=origin.work)
    rewritten = origin.commit({"pipelines/hello/main.py": "print('rewritten')\n"}, force=True)
    state = await sync.sync("team")
    assert (state.status, state.good_commit) == ("ok", rewritten)
    assert f"force-pushed: {second[:12]} is not an ancestor of {rewritten[:12]}" in state.message

    git("update-ref", "-d", "refs/heads/main", cwd=origin.bare)  # the branch is deleted on the remote
    state = await sync.sync("team")
    assert (state.status, state.good_commit) == ("branch_missing", rewritten)
    assert state.message == (f"branch 'main' does not exist on {origin.url} (deleted or renamed?); "
                             f"serving {rewritten[:12]}")
    assert await served(store) == {"hello": rewritten, "report": rewritten}

    origin.bare.rename(origin.bare.with_name("moved.git"))
    state = await sync.sync("team")
    assert (state.status, state.good_commit) == ("unreachable", rewritten)
    assert state.message.startswith(f"cannot fetch {origin.url}: ") and state.message.endswith(
        f"; serving {rewritten[:12]}")
    assert await served(store) == {"hello": rewritten, "report": rewritten}


async def test_credentials_in_a_url_are_never_stored_or_reported(tmp_path: pathlib.Path, store: SqlStore) -> None:
    spec = repos.RepoSpec.model_validate({"name": "team", "url": "https://kube:s3cr3t-t0ken@127.0.0.1:9/x.git"})
    assert spec.url == "https://127.0.0.1:9/x.git" and "s3cr3t" not in repr(spec)
    assert "s3cr3t" not in spec.model_dump_json()
    sync = make_sync(tmp_path / "git", store, spec)
    state = await sync.sync("team")
    assert state.status == "unreachable" and state.url == "https://127.0.0.1:9/x.git"
    stored = await store.database.run(lambda conn: str(conn.exec_driver_sql("SELECT * FROM git_syncs").all()),
                                      write=False)
    assert "s3cr3t" not in stored and "s3cr3t" not in state.message
    assert "127.0.0.1" in state.message  # says which remote failed
    assert repos.redact("fatal: https://a:b@h/x and token Zq9", "Zq9") == "fatal: https://***@h/x and token ***"


async def test_two_replicas_serve_the_one_commit_the_database_agreed_on(
        tmp_path: pathlib.Path, origin: Origin, store: SqlStore) -> None:
    first = origin.commit(GOOD)
    replica_a = make_sync(tmp_path / "a", store, spec_for(origin))
    replica_b = make_sync(tmp_path / "b", store, spec_for(origin))
    await replica_a.sync("team")
    assert replica_b.current("team") is None
    await replica_b.adopt("team")
    assert replica_b.current("team") == first  # checked out by b itself, from its own fetch
    second = origin.commit({"pipelines/hello/main.py": "print(2)\n"})
    state = await replica_b.sync("team")
    assert state.good_commit == second and replica_a.current("team") == first
    await replica_a.adopt("team")
    assert replica_a.current("team") == second
    # a replica proposing from a stale base loses the compare-and-set and serves the winner's commit
    third = origin.commit({"pipelines/hello/main.py": "print(3)\n"})
    lost = await replica_a.table.record(spec=replica_a.spec("team"), status="ok", message="", seen_commit=third,
                                        problems=[], propose=third, based_on=first)
    assert lost.good_commit == second
