"""``gclf serve``'s connections: a deadline for each request's headers, and a lingering close.

uvicorn times out neither a new connection that sends nothing nor a request whose headers stop
halfway (its ``timeout_keep_alive`` covers only the idle time after a response, and the first byte
of the next request cancels it), so a few hundred sockets that each send half a request line would
hold a worker's connections for ever. :class:`HeaderDeadlineProtocol` is uvicorn's h11 protocol
with one timer per connection: started when the connection opens, and when the first bytes of a
request come after an idle keep-alive time; stopped once the request's headers are complete (h11
has left its ``IDLE`` state). When it fires the connection is closed, after a 408 if part of a
request had come. The body has its own limit (``--timeout-s``, :func:`gclf.deploy.guards.limited`).

uvicorn closes a connection right after its answer when the client asked for that (``Connection:
close``) or on an error, and closing a socket with unread data resets it: a client still sending a
body it was refused (a 503 from the headers) would get the reset rather than the answer. So, as
nginx does, the close lingers (:class:`LingeringTransport`): the answer is sent, then our side of
the connection is shut, and what the client still sends is dropped as it comes until it closes its
side or :data:`LINGER_S` pass.
"""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LINGER_S = 5.0  # nginx's lingering_timeout


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers are not complete
    ``header_timeout_s`` after the connection opened or the request began, and closing them all
    with a linger."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(LingeringTransport(transport, self.loop))  # type: ignore[arg-type]
        self.start_header_timer()  # a connection that never sends a byte is closed too

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # lingering: the client's remaining bytes are dropped unparsed
            return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the body has its own limit
            self.stop_header_timer()
        elif self.header_timer is None:  # a new request after a keep-alive pause has begun
            self.start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_header_timer()
        super().connection_lost(exc)

    def start_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout_s, self.headers_overdue)

    def stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def headers_overdue(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial, _ = self.conn.trailing_data
        if partial:  # part of a request came: say why it ends (a silent socket just closes)
            self.transport.write(request_timeout(self.header_timeout_s))
        self.transport.close()


class LingeringTransport:
    """An asyncio transport whose :meth:`close` lingers: the answer written so far goes out, then our
    side is shut (FIN), and the connection closes once the client closes its side or after
    :data:`LINGER_S`. Everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport, self.loop = transport, loop
        self.lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self.transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        self.lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()  # after what is buffered: the client reads the whole answer
        self.transport.resume_reading()  # to see the client's close, and drop what comes before it
        self.loop.call_later(LINGER_S, self.transport.close)


def request_timeout(header_timeout_s: float) -> bytes:
    """A whole 408 response, written raw: h11 sends responses only to requests it has parsed."""
    body = json.dumps({"error": f"the request headers did not arrive within {header_timeout_s:g} s"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def raise_open_file_limit() -> None:
    """Each connection is a file descriptor: a soft limit of 1,024 (a common default) would refuse
    connections long before the queues are full, so take the hard limit (child processes inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
