"""render_config golden checks, write_config/write_ca_chain, features, PgBackRest argv."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pgbackups.adapters import pgbackrest, processes
from pgbackups.adapters.pgbackrest import (
    LocalPeer,
    PeerHost,
    PgBackRest,
    PgBackRestConfig,
    PgBackRestFeatures,
    Timeouts,
    TlsServerConfig,
    default_process_max,
    detect_features,
    parse_archive_listing,
    parse_version,
    render_config,
    server_argv,
    write_ca_chain,
    write_config,
)
from pgbackups.core.host import BackupToolError, CommandResult
from pgbackups.core.policy import Retention
from pgbackups.core.settings import S3Settings

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


def _s3(**kw: Any) -> S3Settings:
    base: dict[str, Any] = {
        "bucket": "pgbr",
        "access_key": "AKIAEXAMPLE",
        "secret_key": "s3cr3t",
        "endpoint": "https://localhost:4569",
        "path": "/cluster-a",
        "uri_style": "path",
    }
    base.update(kw)
    return S3Settings(**base)


def _cfg(**kw: Any) -> PgBackRestConfig:
    base: dict[str, Any] = {
        "stanza": "local.demo",
        "pg_path": "/srv/pg/data",
        "s3": _s3(),
        "pg_port": 6001,
        "pg_socket_path": "/srv/pg/sock",
        "log_path": "/srv/pgbr/log",
        "lock_path": "/srv/pgbr/lock",
        "spool_path": "/srv/pgbr/spool",
        "process_max": 2,
        "restore_process_max": 2,
    }
    base.update(kw)
    return PgBackRestConfig(**base)


GOLDEN_SINGLE = """\
# Written by pgbackups; it is rewritten whenever the settings change.
# It holds the S3 secret key: keep it readable by the database user only.
[global]
repo1-type=s3
repo1-path=/cluster-a
repo1-s3-bucket=pgbr
repo1-s3-endpoint=localhost
repo1-storage-port=4569
repo1-s3-region=us-east-1
repo1-s3-uri-style=path
repo1-s3-key=AKIAEXAMPLE
repo1-s3-key-secret=s3cr3t
repo1-retention-full-type=time
repo1-retention-full=9999999
repo1-retention-history=365
repo1-bundle=y
log-path=/srv/pgbr/log
lock-path=/srv/pgbr/lock
spool-path=/srv/pgbr/spool
log-level-console=info
log-level-file=detail
start-fast=y
compress-type=zst
process-max=2
archive-async=y

[global:archive-push]
archive-push-queue-max=1GiB

[global:restore]
process-max=2

[local.demo]
pg1-path=/srv/pg/data
pg1-port=6001
pg1-socket-path=/srv/pg/sock
pg1-user=postgres
"""


def _options(text: str, section: str) -> list[str]:
    lines: list[str] = []
    current = None
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_golden_single_unit_without_tls() -> None:
    assert render_config(_cfg()) == GOLDEN_SINGLE


def test_render_is_pure() -> None:
    assert render_config(_cfg()) == render_config(_cfg())


def test_endpoint_host_only_and_port_only_when_given() -> None:
    text = render_config(_cfg(s3=_s3(endpoint="https://s3.example.com")))
    assert "repo1-s3-endpoint=s3.example.com\n" in text
    assert "repo1-storage-port" not in text
    text = render_config(_cfg(s3=_s3(endpoint="https://minio.internal:9000")))
    assert "repo1-s3-endpoint=minio.internal\n" in text
    assert "repo1-storage-port=9000\n" in text


def test_region_defaults_to_us_east_1_and_is_kept_when_given() -> None:
    assert "repo1-s3-region=us-east-1\n" in render_config(_cfg(s3=_s3(region="")))
    assert "repo1-s3-region=eu-west-3\n" in render_config(_cfg(s3=_s3(region="eu-west-3")))


def test_ca_file_only_with_a_chain() -> None:
    no_chain = render_config(_cfg(ca_file="/srv/pgbr/s3-ca.pem"))
    assert "repo1-storage-ca-file" not in no_chain
    with_chain = render_config(_cfg(s3=_s3(tls_ca_chain=(PEM,)), ca_file="/srv/pgbr/s3-ca.pem"))
    assert "repo1-storage-ca-file=/srv/pgbr/s3-ca.pem\n" in with_chain


def test_retention_in_days_and_host_uri_style() -> None:
    text = render_config(_cfg(s3=_s3(delete_older_than_days=30, uri_style="host")))
    assert "repo1-retention-full-type=time\nrepo1-retention-full=30\n" in text
    assert "repo1-s3-uri-style=host\n" in text


def test_the_operators_retention_wins_over_the_s3_days() -> None:
    s3 = _s3(delete_older_than_days=30)
    count = render_config(_cfg(s3=s3, retention=Retention(2)))
    assert (
        "repo1-retention-full-type=count\nrepo1-retention-full=2\nrepo1-retention-history" in count
    )
    assert "retention-diff" not in count
    both = render_config(_cfg(s3=s3, retention=Retention(14, "time", 3)))
    assert (
        "repo1-retention-full-type=time\nrepo1-retention-full=14\nrepo1-retention-diff=3\n" in both
    )


def test_annotations_and_labels_are_checked_before_a_command_runs() -> None:
    assert pgbackrest._check_annotation("trigger", "scheduled") == "trigger=scheduled"
    for key, value in (("Trigger", "x"), ("trigger", "two words"), ("a=b", "c"), ("t", "")):
        with pytest.raises(ValueError, match="is not key=value"):
            pgbackrest._check_annotation(key, value)
    assert pgbackrest._check_label("20261128-150000F_20261128-160000I")
    with pytest.raises(ValueError, match="not a pgBackRest backup label"):
        pgbackrest._check_label("20261128-150000F --repo=2")


def test_version_gated_options() -> None:
    v245 = render_config(_cfg(s3=_s3(storage_class="STANDARD_IA")))
    assert "repo1-bundle=y" in v245
    assert "repo1-block" not in v245
    assert "storage-class" not in v245
    v246 = render_config(
        _cfg(
            s3=_s3(storage_class="STANDARD_IA"),
            features=PgBackRestFeatures(
                version=(2, 58), storage_class_option="repo-s3-storage-class"
            ),
        )
    )
    assert "repo1-bundle=y\nrepo1-block=y\n" in v246
    assert "repo1-s3-storage-class=STANDARD_IA\n" in v246
    old = render_config(_cfg(features=PgBackRestFeatures(version=(2, 38))))
    assert "repo1-bundle" not in old


def test_no_repository() -> None:
    text = render_config(_cfg(s3=None))
    assert "repo1-" not in text and "s3" not in text
    assert "pg1-path=/srv/pg/data" in text


def test_archive_async_off_has_no_queue_section() -> None:
    text = render_config(_cfg(archive_async=False))
    assert "archive-async=n" in text
    assert "[global:archive-push]" not in text


TLS = TlsServerConfig(
    address="localhost",
    port=8432,
    cert_file="/srv/tls/u0.crt",
    key_file="/srv/tls/u0.key",
    ca_file="/srv/tls/ca.crt",
    allowed_clients=("u1.local", "u2.local"),
)


def test_tls_server_with_peers() -> None:
    peers = (
        PeerHost(host="localhost", port=8433, pg_path="/srv/pg/u1", pg_port=6002),
        PeerHost(
            host="u2.local", port=8434, pg_path="/srv/pg/u2", pg_port=6003, pg_socket_path="/s"
        ),
    )
    text = render_config(_cfg(tls=TLS, peers=peers))
    glob = _options(text, "global")
    assert glob[-8:] == [
        "backup-standby=y",
        "tls-server-address=localhost",
        "tls-server-port=8432",
        "tls-server-cert-file=/srv/tls/u0.crt",
        "tls-server-key-file=/srv/tls/u0.key",
        "tls-server-ca-file=/srv/tls/ca.crt",
        "tls-server-auth=u1.local=local.demo",
        "tls-server-auth=u2.local=local.demo",
    ]
    assert _options(text, "local.demo") == [
        "pg1-path=/srv/pg/data",
        "pg1-port=6001",
        "pg1-socket-path=/srv/pg/sock",
        "pg1-user=postgres",
        "pg2-host=localhost",
        "pg2-host-type=tls",
        "pg2-host-port=8433",
        "pg2-host-ca-file=/srv/tls/ca.crt",
        "pg2-host-cert-file=/srv/tls/u0.crt",
        "pg2-host-key-file=/srv/tls/u0.key",
        "pg2-path=/srv/pg/u1",
        "pg2-port=6002",
        "pg2-user=postgres",
        "pg3-host=u2.local",
        "pg3-host-type=tls",
        "pg3-host-port=8434",
        "pg3-host-ca-file=/srv/tls/ca.crt",
        "pg3-host-cert-file=/srv/tls/u0.crt",
        "pg3-host-key-file=/srv/tls/u0.key",
        "pg3-path=/srv/pg/u2",
        "pg3-port=6003",
        "pg3-socket-path=/s",
        "pg3-user=postgres",
    ]


def test_tls_off_has_no_tls_or_standby_options() -> None:
    text = render_config(_cfg())
    assert "tls-" not in text and "backup-standby" not in text and "pg2-" not in text


def test_tls_server_without_peers_has_no_backup_standby() -> None:
    text = render_config(_cfg(tls=TLS))
    assert "tls-server-port=8432" in text and "backup-standby" not in text


def test_peers_without_tls_are_refused() -> None:
    with pytest.raises(ValueError, match="TLS"):
        render_config(_cfg(peers=(PeerHost(host="h", pg_path="/p"),)))


def test_local_peers_are_numbered_after_tls_peers_and_have_no_host() -> None:
    local = (LocalPeer(pg_path="/srv/pg/u3", pg_port=6004, pg_socket_path="/s3"),)
    text = render_config(_cfg(local_peers=local))
    assert _options(text, "local.demo")[4:] == [
        "pg2-path=/srv/pg/u3",
        "pg2-port=6004",
        "pg2-socket-path=/s3",
        "pg2-user=postgres",
    ]
    assert "backup-standby" not in text and "pg2-host" not in text
    peers = (PeerHost(host="localhost", port=8433, pg_path="/srv/pg/u1", pg_port=6002),)
    both = _options(render_config(_cfg(tls=TLS, peers=peers, local_peers=local)), "local.demo")
    assert "pg2-host=localhost" in both and "pg3-path=/srv/pg/u3" in both
    assert not any(line.startswith("pg3-host") for line in both)


def test_line_breaks_in_values_are_refused() -> None:
    with pytest.raises(ValueError, match="not printable ASCII"):
        render_config(_cfg(s3=_s3(secret_key="abc\nrepo1-path=/evil")))
    with pytest.raises(ValueError):
        render_config(_cfg(stanza="a]\n[b"))


def test_default_process_max() -> None:
    assert default_process_max(1) == 1
    assert default_process_max(2) == 2
    assert default_process_max(64) == 4
    assert default_process_max(0) == 1
    assert 1 <= default_process_max() <= 4


def test_parse_version() -> None:
    assert parse_version("pgBackRest 2.45\n") == (2, 45)
    assert parse_version("pgBackRest 2.58.0") == (2, 58)
    assert parse_version("nonsense") is None


# --- files ---------------------------------------------------------------------------------


def test_write_config_mode_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "pgbackrest.conf"
    path.parent.mkdir()  # the folder is the caller's to make (and to own)
    me = processes.current_user()
    write_config("[global]\nrepo1-s3-key-secret=a\n", path, me)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    write_config("[global]\nrepo1-s3-key-secret=b\n", path, me, mode=0o600)
    assert path.read_text() == "[global]\nrepo1-s3-key-secret=b\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["pgbackrest.conf"]
    with pytest.raises(ValueError):
        write_config("x", path, me, mode=0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_write_config_owned_by_the_db_user(tmp_path: Path) -> None:
    path = tmp_path / "pgbackrest.conf"
    user = processes.db_user()
    write_config("x\n", path, user)
    assert (path.stat().st_uid, path.stat().st_gid) == (user.uid, user.gid)


def test_write_ca_chain(tmp_path: Path) -> None:
    assert write_ca_chain(_s3(), tmp_path / "ca.pem", None) is None
    assert not (tmp_path / "ca.pem").exists()
    written = write_ca_chain(_s3(tls_ca_chain=(PEM, PEM)), tmp_path / "ca.pem", None)
    assert written == str(tmp_path / "ca.pem")
    assert (tmp_path / "ca.pem").read_text().count("BEGIN CERTIFICATE") == 2


# --- commands, with a fake runner ------------------------------------------------------------


class FakeRun:
    def __init__(self, *results: CommandResult) -> None:
        self.results = list(results)
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: Any, *, user: Any = None, timeout: float = 0, **_: Any) -> Any:
        self.calls.append((list(argv), timeout))
        return self.results.pop(0)


def _tool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *results: CommandResult
) -> tuple[PgBackRest, FakeRun]:
    fake = FakeRun(*results)
    monkeypatch.setattr(processes, "run", fake)
    monkeypatch.setattr(processes, "run_watched", fake)  # a backup's run, S3 watched
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text(render_config(_cfg()))
    tool = PgBackRest(
        conf, "local.demo", user=processes.current_user(), timeouts=Timeouts(io=5, backup=99)
    )
    return tool, fake


def _ok(stdout: str = "") -> CommandResult:
    return CommandResult(("pgbackrest",), 0, stdout, "")


def test_backup_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool, fake = _tool(monkeypatch, tmp_path, _ok(), _ok())
    tool.backup("incr", on_primary=True)
    tool.backup("full", on_primary=False)
    (primary, timeout), (replica, _) = fake.calls
    conf = f"--config={tmp_path / 'pgbackrest.conf'}"
    assert primary == [
        "pgbackrest",
        conf,
        "--stanza=local.demo",
        "--type=incr",
        "--log-level-console=info",
        "--io-timeout=5",
        "--no-backup-standby",
        "backup",
    ]
    assert timeout == 99
    assert "--no-backup-standby" not in replica and "--type=full" in replica
    with pytest.raises(ValueError):
        tool.backup("differential", on_primary=True)


def test_info_missing_stanza_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = (
        '[{"archive":[],"backup":[],"db":[],"name":"local.demo","repo":[],'
        '"status":{"code":1,"lock":{"backup":{"held":false}},"message":"missing stanza path"}}]'
    )
    tool, fake = _tool(monkeypatch, tmp_path, _ok(missing))
    [stanza] = tool.info("local.demo")
    assert not stanza.exists
    argv = fake.calls[0][0]
    assert argv[-1] == "info" and "--output=json" in argv and "--stanza=local.demo" in argv


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (CommandResult(("x",), 49, "", "ERROR: [049]: unable to get address\n"), "[049]"),
        (CommandResult(("x",), -1, "", "\ntimed out after 60s", True), "timed out"),
        (_ok("garbage"), "JSON"),
        (
            _ok(
                '[{"name":"[invalid]","repo":[{"key":1,"status":{"code":99,"message":'
                '"[HostConnectError] refused"}}],"status":{"code":99,"message":"other"}}]'
            ),
            "could not read the repository: other: [HostConnectError] refused",
        ),
    ],
)
def test_info_failures_raise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, result: CommandResult, message: str
) -> None:
    tool, _ = _tool(monkeypatch, tmp_path, result)
    with pytest.raises(BackupToolError, match="^.*" + message.replace("[", r"\[")):
        tool.info()


def test_output_is_scrubbed_of_the_config_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    leaky = CommandResult(("x",), 39, "AKIAEXAMPLE", "ERROR: [039]: denied for s3cr3t\n")
    tool, _ = _tool(monkeypatch, tmp_path, leaky)
    result = tool.stanza_create()
    assert "s3cr3t" not in result.stderr and "AKIAEXAMPLE" not in result.stdout
    assert tool.error_line(result) == "ERROR: [039]: denied for <redacted>"


def test_timelines_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    listing = '{"15-1/00000003.history":{"type":"file","size":1,"time":1795877000}}'
    tool, fake = _tool(monkeypatch, tmp_path, _ok(listing))
    [record] = tool.timelines("local.demo")
    assert record.timeline == 3 and record.key == "archive/local.demo/15-1/00000003.history"
    argv = fake.calls[0][0]
    assert argv[2:5] == ["--recurse", r"--filter=\.history$", "--output=json"]
    assert argv[-2:] == ["repo-ls", "archive/local.demo"]


def test_archive_is_one_listing_of_timelines_and_segments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seg = "0000000100000000000000FF-" + "a" * 40 + ".zst"
    nxt = "000000010000000100000000-" + "b" * 40 + ".zst"
    listing = json.dumps(
        {
            ".": {"type": "path"},
            "15-1/00000002.history": {"type": "file", "size": 40, "time": 1795877000},
            f"15-1/0000000100000000/{seg}": {"type": "file", "size": 9, "time": 1},
            f"15-1/0000000100000001/{nxt}": {"type": "file", "size": 0, "time": 2},
            "15-1/0000000100000000/000000010000000000000002.00000028.backup": {
                "type": "file",
                "size": 3,
            },
            "15-1/0000000100000000/000000010000000000000003.partial": {"type": "file"},
            "backup.history": {"type": "file", "size": 1},
        }
    )
    tool, fake = _tool(monkeypatch, tmp_path, _ok(listing))
    result = tool.archive("local.demo")
    assert [t.timeline for t in result.timelines] == [2]
    assert [(s.timeline, s.segno, s.size) for s in result.segments] == [(1, 0xFF, 9), (1, 0x100, 0)]
    assert result.segments[1].key == f"archive/local.demo/15-1/0000000100000001/{nxt}"
    # The same segments as the filtered listing archive_segments() reads.
    assert list(result.segments) == parse_archive_listing(listing, "archive/local.demo")
    argv = fake.calls[0][0]
    assert len(fake.calls) == 1 and not any(a.startswith("--filter") for a in argv)
    assert argv[-2:] == ["repo-ls", "archive/local.demo"]


def test_server_ping_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool, fake = _tool(
        monkeypatch, tmp_path, _ok(), CommandResult(("x",), 101, "", "ERROR: [101]: TLS")
    )
    assert tool.server_ping("localhost:8433") is True
    assert tool.server_ping("u1.local") is False
    first, second = fake.calls[0][0], fake.calls[1][0]
    assert first[-2:] == ["server-ping", "localhost"] and "--tls-server-port=8433" in first
    assert second[-2:] == ["server-ping", "u1.local"]
    assert not any(a.startswith("--tls-server-port") for a in second)


def test_detect_features_caches_a_success_but_not_a_failed_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    help_text = "  --repo-storage-class  storage class\n"
    fake = FakeRun(
        CommandResult(("pgbackrest",), 127, "", "pgbackrest: program not found"),
        CommandResult(("pgbackrest",), 127, "", "pgbackrest: program not found"),
        _ok("pgBackRest 2.54.0\n"),
        _ok(help_text),
    )
    monkeypatch.setattr(processes, "run", fake)
    pgbackrest._PROBED_FEATURES.clear()  # the cache is per process: start empty
    try:
        assert detect_features() == PgBackRestFeatures()  # not installed yet: 2.45's
        found = detect_features()  # asked again, not the cached fallback
        assert found == PgBackRestFeatures((2, 54), "repo-storage-class")
        assert detect_features() is found  # no third probe: FakeRun has no answers left
        assert len(fake.calls) == 4
    finally:
        pgbackrest._PROBED_FEATURES.clear()


def test_server_argv() -> None:
    assert server_argv("/etc/p.conf") == ["pgbackrest", "--config=/etc/p.conf", "server"]


# --- Second line of defence: whatever a caller builds, no value adds a line ----------


@pytest.mark.parametrize(
    "bad",
    ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "é"],
)
def test_a_value_that_is_not_printable_ascii_is_refused(bad: str) -> None:
    settings = _s3(region=f"us-east-1{bad}repo1-s3-verify-tls=n")
    with pytest.raises(ValueError, match="repo1-s3-region has a value that is not printable"):
        render_config(_cfg(s3=settings))


def test_the_refusal_never_shows_the_value() -> None:
    settings = _s3(secret_key="s3cr3t\x0bcmd-ssh=/tmp/x")
    with pytest.raises(ValueError, match="repo1-s3-key-secret") as caught:
        render_config(_cfg(s3=settings))
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("key", ["Repo1-path", "repo1 path", "x=y", "cmd-ssh\x1crepo1-host", ""])
def test_an_option_name_that_is_not_a_name_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="option name"):
        render_config(_cfg(extra_global=((key, "1"),)))


@pytest.mark.parametrize("stanza", ["", "a]b", "main\x1c[x]", "-main", "ma in"])
def test_a_stanza_that_is_not_a_name_is_refused(stanza: str) -> None:
    with pytest.raises(ValueError, match="invalid stanza name"):
        render_config(_cfg(stanza=stanza))


def test_the_text_is_printable_ascii_lines() -> None:
    text = render_config(_cfg(tls=TLS, peers=(PeerHost("db-1.example", "/srv/pg"),)))
    assert all(" " <= c <= "~" or c == "\n" for c in text)
    assert text.splitlines() == text.split("\n")[:-1]
