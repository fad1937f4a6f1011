"""Which database errors make a transaction run again (the database is away for a moment) and
which are the statement's own (raised at once): ``engines.unreachable``."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from kubeline.storage.sql import engines


def wrapped(orig: Exception, *, kind: type[sa_exc.DBAPIError] = sa_exc.OperationalError,
            invalidated: bool = False) -> sa_exc.DBAPIError:
    return kind("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize("orig", [
    psycopg.OperationalError("connection failed: Connection refused"),  # no server: no SQLSTATE
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),
    psycopg.errors.ConnectionFailure("connection failure"),
])
def test_the_database_away_is_retried(orig: Exception) -> None:
    assert engines.unreachable(wrapped(orig))


def test_a_dropped_connection_is_retried_whatever_the_error() -> None:
    assert engines.unreachable(wrapped(psycopg.errors.DeadlockDetected("x"), invalidated=True))


@pytest.mark.parametrize("orig", [
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
])
def test_the_statements_own_errors_are_not(orig: Exception) -> None:
    assert not engines.unreachable(wrapped(orig))


def test_an_interface_error_without_a_server_answer_is_not() -> None:
    assert not engines.unreachable(wrapped(psycopg.InterfaceError("bad use"), kind=sa_exc.InterfaceError))
