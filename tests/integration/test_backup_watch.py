"""The watch that stops a backup whose S3 is gone: a real process stopped on request, and
a real endpoint that refuses connections (tests/e2e/test_faults.py runs it with
pgBackRest and a dying S3 server)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pgbackups.adapters import processes
from pgbackups.adapters.pgbackrest import (
    STOPPED_BACKUP,
    RepositoryWatch,
    extract_error_line,
    repository_address,
    tls_server_endpoint,
)

pytestmark = pytest.mark.real


def test_a_watched_command_is_stopped_when_asked() -> None:
    asked: list[float] = []

    def give_up() -> str | None:
        asked.append(time.monotonic())
        return f"{STOPPED_BACKUP}S3 gone" if len(asked) >= 3 else None

    started = time.monotonic()
    result = processes.run_watched(
        ["sh", "-c", "echo started; echo 'ERROR: [063]: terminated' >&2; exec sleep 60"],
        give_up=give_up,
        every=0.2,
        timeout=60,
    )
    assert time.monotonic() - started < 5
    assert not result.ok and not result.timed_out
    assert result.stdout == "started\n"
    assert result.stderr.endswith(f"\n{STOPPED_BACKUP}S3 gone")
    # The cause, not pgBackRest's "terminated on signal" that follows from it.
    assert extract_error_line(result) == f"{STOPPED_BACKUP}S3 gone"


def test_a_watched_command_that_ends_is_its_own_result() -> None:
    result = processes.run_watched(
        ["sh", "-c", "echo done; exit 3"], give_up=lambda: None, every=0.1, timeout=10
    )
    assert (result.returncode, result.stdout, result.timed_out) == (3, "done\n", False)


def test_a_watched_command_still_times_out() -> None:
    result = processes.run_watched(["sleep", "30"], give_up=lambda: None, every=0.1, timeout=0.5)
    assert result.timed_out and not result.ok


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_watch_gives_up_only_after_the_endpoint_stayed_gone() -> None:
    port = _closed_port()
    watch = RepositoryWatch(("127.0.0.1", port), gone_after=0.6, connect_timeout=1)
    assert watch() is None, "one refusal is a blip"
    time.sleep(0.7)
    reason = watch()
    assert reason == (
        f"{STOPPED_BACKUP}S3 at 127.0.0.1:{port} unreachable for 0.6s (Connection refused)"
    )


def test_the_watch_forgets_a_blip_once_the_endpoint_answers() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = int(server.getsockname()[1])
        watch = RepositoryWatch(("127.0.0.1", port), gone_after=0.3, connect_timeout=1)
        assert watch() is None  # not listening yet: refused
        server.listen()
        time.sleep(0.4)
        assert watch() is None, "answers again: the clock starts over"
    time.sleep(0.1)
    assert watch() is None


def test_the_endpoint_is_read_from_the_rendered_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text("[global]\nrepo1-s3-endpoint=s3.example.com\nrepo1-storage-port=9000\n")
    assert repository_address(conf) == ("s3.example.com", 9000)
    conf.write_text("[global]\nrepo1-s3-endpoint=s3.example.com\n")
    assert repository_address(conf) == ("s3.example.com", 443)
    conf.write_text("[global]\nlog-path=/x\n")
    assert repository_address(conf) is None
    assert repository_address(tmp_path / "missing.conf") is None


def test_the_primary_watch_names_the_primary_and_gives_up_after_its_own_time() -> None:
    """A replica's backup also watches the primary's TLS server (its start and stop run
    there): a real endpoint that refuses, named in the reason."""
    port = _closed_port()
    watch = RepositoryWatch(
        ("127.0.0.1", port), gone_after=0.4, connect_timeout=1, what="the primary's server"
    )
    assert watch() is None
    time.sleep(0.5)
    assert watch() == (
        f"{STOPPED_BACKUP}the primary's server at 127.0.0.1:{port} unreachable for 0.4s "
        "(Connection refused)"
    )


def test_a_tls_server_address_is_a_host_and_port() -> None:
    assert tls_server_endpoint("10.201.3.10:27112") == ("10.201.3.10", 27112)
    assert tls_server_endpoint("unit-0.example") == ("unit-0.example", 8432)
    assert tls_server_endpoint("host:port") is None
    assert tls_server_endpoint(":8432") is None
    assert tls_server_endpoint("") is None
