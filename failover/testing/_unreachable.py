"""A base URL whose TCP connect never completes, as with a black-holed host."""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator

_MAX_FILLERS = 64  # far more than a listen(0) backlog holds


@contextlib.contextmanager
def unreachable() -> Iterator[str]:
    """Yield a base URL on 127.0.0.1 where every TCP connect hangs until its timeout.

    A socket listens with a backlog of 0 and never accepts; connections that are never
    accepted fill its queue, after which the kernel drops new SYNs (Linux), so a client
    waits in connect until its connect timeout. Everything is closed on exit.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(_MAX_FILLERS):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(address)
            _, connected, _ = select.select([], [filler], [], 0.2)
            if not connected:  # its SYN was dropped: the queue is full
                break
        else:
            raise RuntimeError("could not fill the accept queue of a listening socket")
        yield f"http://127.0.0.1:{address[1]}/v1"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
