"""Where a git-synced pipeline came from, read from its folder's path (runs record the path)."""

from kubeline.domain import repos

SHA = "3f2a9c0d1b2e4f56a7b8c9d0e1f2a3b4c5d6e7f8"


def test_commit_and_source_of_a_synced_pipeline_path() -> None:
    path = f"/home/k/.kubeline/git/team-a/trees/{SHA}/pipelines/hello"
    assert (repos.commit_of(path), repos.source_of(path)) == (SHA, "team-a")


def test_a_folder_pipeline_has_neither() -> None:
    for path in ("/srv/pipelines/hello", None, "/x/git/team/trees/not-a-sha/hello"):
        assert (repos.commit_of(path), repos.source_of(path)) == (None, None)
