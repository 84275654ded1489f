"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production), and a small
pool of psycopg async connections for the API's submission hot path on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from trainforge.private import private_sqlite

log = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling would BEGIN lazily (DEFERRED) and then fail with
    # "database is locked" when a reader upgrades to a writer; we issue BEGIN IMMEDIATE
    # ourselves (see _sqlite_begin), which makes every transaction a serialised writer: the
    # single-process equivalent of SELECT … FOR UPDATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for ``url`` with the settings the store relies on.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://…``).
        pool_size: connections kept open (PostgreSQL only).

    Returns:
        The engine.
    """
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            # SQLite creates the file, not its directory (a fresh $TRAINFORGE_HOME); and it
            # would create the file world-readable under the usual umask. The database holds
            # token hashes and every job's details: owner-only (its -wal/-shm follow its mode).
            private_sqlite(Path(database))
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=pool_size
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=2 * pool_size
    )


class AsyncPgPool:
    """At most ``size`` psycopg async connections in autocommit mode, reused LIFO.

    For single-statement transactions on the event loop (the statement is its own transaction),
    without SQLAlchemy's per-statement cost or a thread hop. One pool per event loop (see
    :meth:`Database.async_pool`): asyncio primitives belong to the loop that first waits on
    them.

    No ping on checkout under load: a connection idle for less than ``check_idle_s`` is used as
    is (it just answered a statement). Only one that sat idle longer, which a database restart
    or an idle timeout may have closed meanwhile, is checked with ``SELECT 1`` first and
    replaced if that fails.
    """

    def __init__(self, connect_kwargs: Mapping[str, Any], size: int, *,
                 check_idle_s: float = 5.0) -> None:
        self._connect_kwargs = dict(connect_kwargs)
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[psycopg.AsyncConnection[Any], float]] = []
        self._closed = False
        self.check_idle_s = check_idle_s

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for one or more autocommit statements.

        It goes back to the pool if it is still idle and healthy afterwards; one left in any
        other state (broken, cancelled mid-statement, a transaction left open) is closed.

        Raises:
            psycopg.OperationalError: no connection could be opened.
        """
        async with self._slots:
            conn = await self._take()
            try:
                yield conn
            finally:
                if (self._closed or conn.closed or conn.broken
                        or conn.info.transaction_status != pq.TransactionStatus.IDLE):
                    with contextlib.suppress(Exception):
                        await conn.close()
                else:
                    self._idle.append((conn, time.monotonic()))

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        while self._idle:
            conn, since = self._idle.pop()
            if conn.closed or conn.broken:
                continue
            if time.monotonic() - since > self.check_idle_s:
                try:
                    await conn.execute("SELECT 1")
                except psycopg.Error:
                    with contextlib.suppress(Exception):
                        await conn.close()
                    continue
            return conn
        return await psycopg.AsyncConnection.connect(**self._connect_kwargs, autocommit=True)

    async def close(self) -> None:
        """Close the idle connections (those in use are closed when they come back)."""
        self._closed = True
        while self._idle:
            conn, _ = self._idle.pop()
            with contextlib.suppress(Exception):
                await conn.close()


class Database:
    """One engine and its session factory (and, on PostgreSQL, async pools on demand)."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._async_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPgPool] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self.sessions.begin() as session:
            yield session

    def ping(self) -> None:
        """Run a trivial query (readiness check). Raises the driver's error if it fails."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def async_pool(self) -> AsyncPgPool:
        """The running event loop's pool of async connections (PostgreSQL only).

        Connects with the engine's own arguments (host, database, ``options`` such as the
        search_path), so both reach the same schema.

        Raises:
            RuntimeError: not on PostgreSQL, or called outside an event loop.
        """
        if not self.is_postgres:
            raise RuntimeError("async connections are for PostgreSQL; SQLite uses the engine")
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            _, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
            kwargs.pop("context", None)  # SQLAlchemy's adapters; the pool uses psycopg's own
            pool = self._async_pools[loop] = AsyncPgPool(kwargs, self.pool_size)
        return pool

    async def aclose(self) -> None:
        """Close the running event loop's async pool, if it has one."""
        pool = self._async_pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    def dispose(self) -> None:
        self.engine.dispose()
