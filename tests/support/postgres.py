"""A database of its own on the machine's PostgreSQL for one test (``NAILA_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``, trust auth); the test skips, saying so, when none answers."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

SERVER_URL = os.environ.get("NAILA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """``postgresql://…/naila_test_<random>``: a new, empty database, dropped afterwards."""
    try:
        admin = psycopg.connect(SERVER_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL server unreachable at {SERVER_URL}: {exc}")
    name = f"naila_test_{uuid.uuid4().hex[:16]}"
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield urlsplit(SERVER_URL)._replace(path=f"/{name}").geturl()
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()
