"""TCP listeners that behave like broken or hostile database servers."""

from __future__ import annotations

import socket
import threading


class Listener:
    """Accepts every connection on a free loopback port; ``reply`` is sent at once (if any),
    then the connection is held open, silent, until :meth:`close`."""

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.reply:
                try:
                    conn.sendall(self.reply)
                except OSError:
                    pass
            with self._lock:
                self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        with self._lock:
            for conn in self._held:
                conn.close()
            self._held.clear()


def closed_port() -> int:
    """A loopback port where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
