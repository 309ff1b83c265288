"""The benchmark's link emulator (benchmarks/linkemu.py), a real relay on loopback: bytes
verbatim both ways, a half-close passed on, and the round trip it adds (a lower bound:
a loaded machine only makes it longer). The network profiles' arithmetic and targets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's benchmarks

from benchmarks import linkemu, profile_report, profiles

RTT = 0.06


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    """Answers each connection with the SHA-256 of everything it sent, after its EOF."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                digest = hashlib.sha256()
                while data := conn.recv(65536):
                    if data == b"ping":
                        conn.sendall(b"pong")
                        continue
                    digest.update(data)
                conn.sendall(digest.hexdigest().encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def relay_port() -> Iterator[int]:
    server, _ = _echo_server()
    probe = socket.create_server(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    ready = threading.Event()
    relay = linkemu.Relay(("127.0.0.1", int(server.getsockname()[1])), RTT)
    loop = asyncio.new_event_loop()
    task = loop.create_task(relay.serve("127.0.0.1", port, ready))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    loop.call_soon_threadsafe(task.cancel)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    server.close()


def test_bytes_pass_verbatim_and_the_half_close_too(relay_port: int) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with socket.create_connection(("127.0.0.1", relay_port), timeout=30) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)  # the server answers only after our EOF
        answer = b""
        while data := conn.recv(65536):
            answer += data
    assert answer.decode() == hashlib.sha256(payload).hexdigest()


def test_the_round_trip_is_added_and_the_handshake_once(relay_port: int) -> None:
    start = time.monotonic()  # before connecting: the handshake is counted from there
    with socket.create_connection(("127.0.0.1", relay_port), timeout=30) as conn:
        conn.sendall(b"ping")
        assert conn.recv(4) == b"pong"
        first = time.monotonic() - start
        start = time.monotonic()
        conn.sendall(b"ping")
        assert conn.recv(4) == b"pong"
        second = time.monotonic() - start
    # The first exchange pays the connection's round trip (SYN / SYN-ACK) and its own.
    assert first >= 2 * RTT * 0.95
    assert second >= RTT * 0.95


def test_profiles_and_their_token_buckets() -> None:
    assert [p.name for p in profiles.by_name("wan,lan")] == ["wan", "lan"]
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.by_name("lan,moon")
    burst = {p.name: p.burst for p in profiles.PROFILES}
    # 4 ms of the rate, never below tbf's 32 kbit.
    assert burst == {"lan": "40000kbit", "region": "4000kbit", "wan": "800kbit"}


def _profile(full: float, direct: float, barman: float, ready: int) -> dict[str, object]:
    return {
        "profile": {"rate": "1gbit", "rtt_ms": 5.0},
        "backups": {
            "full:pgbackups": [full],
            "full:direct": [direct],
            "diff:pgbackups": [2.0],
            "diff:direct": [1.0],
            "incr:pgbackups": [2.0],
            "incr:direct": [1.0],
        },
        "backup_extra": {"full_repo_size": [23_000_000]},
        "restores": {"restore:pgbackups": [10.0], "restore:direct": [5.0]},
        "barman": {
            "seconds": {"none -J2": [barman], "gzip -J2": [barman * 3]},
            "sizes": {"none -J2": 78_000_000, "gzip -J2": 24_000_000},
            "best": "none -J2",
        },
        "loss_window": {
            "ages": [1.0, 3.0, 2.0],
            "ready": [0, ready],
            "tps": 1000,
            "wal_bytes_per_second": 2_000_000,
        },
    }


def test_targets_met_and_missed_with_the_reason() -> None:
    results = {
        "data": {"database_bytes": 60_000_000},
        "profiles": {
            "region": _profile(full=4.0, direct=3.9, barman=9.0, ready=1),
            "wan": _profile(full=8.0, direct=6.0, barman=10.0, ready=9),
        },
    }
    summary = profile_report.summarize(results)
    region = summary["profiles"]["region"]
    assert region["speedup_vs_barman"] == 2.25 and region["full_overhead"] == 1.026
    assert region["repo_mb_barman"] == 78.0 and region["barman_best"] == "none -J2"
    by_met = {t["target"]: t["met"] for t in summary["targets"]}
    assert by_met["region: full backup >= 2x faster than barman-cloud's best"] is True
    wan = next(t for t in summary["targets"] if t["target"].startswith("wan: full backup >= 3x"))
    assert wan["met"] is False and "pgBackRest alone is 1.667x" in wan["why"]
    assert by_met["wan: full backup overhead over pgBackRest <= 1.05x"] is False
    queue = [t for t in summary["targets"] if "keeps up" in t["target"]]
    assert [t["met"] for t in queue] == [True, False]
    text = profile_report.render_text(summary)
    assert "MISSED" in text and "met" in text and "region  pgbackups" in text
