"""A link emulator in user space: a TCP relay that adds a one-way delay each way.

This kernel has no ``sch_netem`` (``tc qdisc add … netem`` answers "Specified qdisc kind
is unknown"), but it has ``tbf``. So a network profile is made of two parts: the *rate*
is a kernel token bucket (``tbf``) on both ends of the S3 machine's link
(``netns.shape``), and the *delay* is this relay, run inside the S3 machine in front of
rclone: it listens where clients expect S3 (``ADDRESS:PORT``), rclone listens on the
machine's own loopback, and every chunk read from one side is written to the other
``delay`` seconds later (half the round trip each way).

What it models: the propagation delay of each request and answer, and one extra round
trip per new TCP connection (the SYN / SYN-ACK a client pays before its first byte: its
first bytes leave ``rtt + delay`` after the connection was accepted). What it does not:
loss, jitter, and TCP's own window over the long path (the relay acknowledges at once
and buffers up to ``--buffer`` bytes each way, so a connection behaves as one whose
window has already grown to the bandwidth-delay product: slow start is not paid).
Bytes are relayed verbatim (TLS passes through, certificates name the same address).

Its own ceiling is a Python event loop on a shared CPU: measure it with
``python -m benchmarks.linkemu --self-test`` (docs/performance.md gives the figure).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import socket
import sys
import threading
import time

CHUNK = 256 * 1024
DEFAULT_BUFFER = 8 * 1024 * 1024


class _Direction:
    """Bytes from one side to the other, each chunk due ``delay`` after it arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, limit: int) -> None:
        self.loop = loop
        self.delay = delay
        self.limit = limit
        self.not_before = 0.0  # the connection's handshake round trip (client → server)
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None
        self.sink_paused = False
        self.source_paused = False
        self.eof = False
        self.closed = False

    def push(self, data: bytes) -> None:
        due = max(self.loop.time(), self.not_before) + self.delay
        self.queue.append((due, data))
        self.queued += len(data)
        if self.queued > self.limit and self.source is not None and not self.source_paused:
            self.source.pause_reading()
            self.source_paused = True
        self._arm()

    def finish(self) -> None:
        """The source sent EOF (or went away): pass it on once the queue is delivered."""
        self.eof = True
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None or self.sink is None:
            return
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)
        elif self.eof and not self.closed:
            self.closed = True
            if self.sink.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    self.sink.write_eof()
            else:
                self.sink.close()

    def _flush(self) -> None:
        self.timer = None
        if self.sink is None or self.sink.is_closing():
            self.queue.clear()
            return
        now = self.loop.time()
        parts = []
        while self.queue and self.queue[0][0] <= now:
            parts.append(self.queue.popleft()[1])
        data = b"".join(parts)
        self.queued -= len(data)
        self.sink.write(data)
        self._maybe_resume()
        self._arm()

    def _maybe_resume(self) -> None:
        if (
            self.source_paused
            and self.queued <= self.limit // 2
            and not self.sink_paused
            and self.source is not None
        ):
            self.source.resume_reading()
            self.source_paused = False

    def sink_pause(self) -> None:
        self.sink_paused = True
        if self.source is not None and not self.source_paused:
            self.source.pause_reading()
            self.source_paused = True

    def sink_resume(self) -> None:
        self.sink_paused = False
        self._maybe_resume()


class _Side(asyncio.Protocol):
    """One TCP connection of a relayed pair: what it reads goes out through ``outgoing``;
    ``incoming`` is the direction that writes to it (its flow control)."""

    def __init__(self, outgoing: _Direction, incoming: _Direction) -> None:
        self.outgoing, self.incoming = outgoing, incoming
        self.transport: asyncio.Transport | None = None
        self.peer_done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=1024 * 1024)
        self.outgoing.source = transport
        self.incoming.sink = transport
        self.incoming._arm()

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.finish()
        return True  # keep our half open: the answer may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self.outgoing.finish()
        self.incoming.sink = None
        self.incoming.queue.clear()
        other = self.outgoing.sink
        if other is not None and self.incoming.source is not None:
            # The peer's bytes have nowhere to go: close it once ours are delivered.
            self.loop_close_later(other)

    def loop_close_later(self, other: asyncio.Transport) -> None:
        direction = self.outgoing
        if direction.queue or direction.timer is not None:
            direction.loop.call_later(max(direction.delay, 0.01), self.loop_close_later, other)
        elif not other.is_closing():
            other.close()

    def pause_writing(self) -> None:
        self.incoming.sink_pause()

    def resume_writing(self) -> None:
        self.incoming.sink_resume()


class Relay:
    """Accepts on ``listen``, connects each client to ``upstream``; ``rtt`` seconds."""

    def __init__(self, upstream: tuple[str, int], rtt: float, buffer: int = DEFAULT_BUFFER):
        self.upstream = upstream
        self.rtt = rtt
        self.buffer = buffer
        self._tasks: set[asyncio.Task[None]] = set()

    def _client(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        up = _Direction(loop, self.rtt / 2, self.buffer)
        down = _Direction(loop, self.rtt / 2, self.buffer)
        up.not_before = loop.time() + self.rtt
        client = _Side(up, down)

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: _Side(down, up), *self.upstream)
            except OSError:
                if client.transport is not None:
                    client.transport.close()

        task = loop.create_task(connect())
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)
        return client

    async def serve(self, host: str, port: int, ready: threading.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._client, host, port, reuse_address=True)
        if ready is not None:
            ready.set()
        print(f"linkemu: {host}:{port} -> {self.upstream[0]}:{self.upstream[1]}, "
              f"rtt {self.rtt * 1000:g} ms", flush=True)  # fmt: skip
        async with server:
            await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def self_test(rtt: float, megabytes: int = 400) -> float:
    """MB/s the relay moves on loopback (a sink server, the relay, a sender)."""
    received = threading.Event()
    sink = socket.create_server(("127.0.0.1", 0))
    sink_port = sink.getsockname()[1]
    total = megabytes * 1024 * 1024

    def drain() -> None:
        conn, _ = sink.accept()
        got = 0
        while got < total:
            data = conn.recv(CHUNK)
            if not data:
                break
            got += len(data)
        conn.close()
        received.set()

    threading.Thread(target=drain, daemon=True).start()
    probe = socket.create_server(("127.0.0.1", 0))
    relay_port = probe.getsockname()[1]
    probe.close()
    ready = threading.Event()
    relay = Relay(("127.0.0.1", sink_port), rtt)
    threading.Thread(
        target=lambda: asyncio.run(relay.serve("127.0.0.1", relay_port, ready)), daemon=True
    ).start()
    ready.wait(10)
    block = b"x" * CHUNK
    with socket.create_connection(("127.0.0.1", relay_port)) as conn:
        start = time.monotonic()
        sent = 0
        while sent < total:
            conn.sendall(block)
            sent += len(block)
        received.wait(300)
        seconds = time.monotonic() - start
    return megabytes / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.linkemu", description=__doc__)
    p.add_argument("--listen", type=_address, help="HOST:PORT clients connect to")
    p.add_argument("--upstream", type=_address, help="HOST:PORT of the real server")
    p.add_argument("--rtt-ms", type=float, default=0.0, help="round trip added (ms)")
    p.add_argument("--buffer", type=int, default=DEFAULT_BUFFER, help="bytes queued each way")
    p.add_argument("--self-test", action="store_true", help="print the relay's own MB/s")
    args = p.parse_args(argv)
    if not 0 <= args.rtt_ms <= 10_000:
        p.error("--rtt-ms must be between 0 and 10000")
    if args.self_test:
        print(f"linkemu: {self_test(args.rtt_ms / 1000):.0f} MB/s on loopback", flush=True)
        return 0
    if args.listen is None or args.upstream is None:
        p.error("--listen and --upstream are required")
    relay = Relay(args.upstream, args.rtt_ms / 1000, args.buffer)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(relay.serve(*args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
