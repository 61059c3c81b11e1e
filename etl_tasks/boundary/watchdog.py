"""A bound on every answer a spec's database gives, even from a server that goes silent.

libpq has a connect timeout but no read timeout: a server that accepts a
connection and then never answers a query holds the caller forever
(``statement_timeout`` only helps when the server is alive to enforce it).
The watchdog notes when each connection was taken and shuts its socket down
once it is held past its limit, so the blocked driver call returns with an
error that Baton classifies as transient. PyMySQL has read and write
timeouts of its own; SQLite never waits on a network.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

log = logging.getLogger(__name__)
POLL_S = 0.1


class ConnectionWatchdog:
    """Shuts down the socket of any watched connection held past its limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[Any, float]] = {}
        self._cut: set[int] = set()
        self._pid = 0

    def watch(self, dbapi_conn: Any, limit_s: float) -> None:
        fileno = getattr(dbapi_conn, "fileno", None)
        if fileno is None:
            return
        with self._lock:
            self._watched[id(dbapi_conn)] = (dbapi_conn, time.monotonic() + limit_s)
            self._ensure_thread()

    def release(self, dbapi_conn: Any) -> bool:
        """Stop watching ``dbapi_conn``; return whether it had been cut meanwhile."""
        with self._lock:
            self._watched.pop(id(dbapi_conn), None)
            if id(dbapi_conn) in self._cut:
                self._cut.discard(id(dbapi_conn))
                return True
            return False

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()  # after a fork the parent's thread is gone: start one here
        threading.Thread(target=self._run, name="baton-conn-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(POLL_S)
            now = time.monotonic()
            with self._lock:
                due = [(k, c) for k, (c, at) in self._watched.items() if at <= now]
                for key, _ in due:
                    self._watched.pop(key, None)
                    self._cut.add(key)
            for _, conn in due:
                _shut_down(conn)


def _shut_down(dbapi_conn: Any) -> None:
    try:
        if getattr(dbapi_conn, "closed", 0):
            return
        fd = dbapi_conn.fileno()
        sock = socket.socket(fileno=os.dup(fd))
    except Exception:  # closed meanwhile: nothing is waiting on it
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
        log.warning("a source or target connection was silent past its limit; cut it")
    except OSError:
        pass
    finally:
        sock.close()


WATCHDOG = ConnectionWatchdog()
