"""PgBackRest and postgres adapters against real PostgreSQL 15, pgBackRest and rclone S3."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pytest
from realservers import Certs, Postgres, S3Server, free_port, owned_dir, wait_for

from pgbackups.adapters import certificates, postgres, processes
from pgbackups.adapters.files import write_atomically
from pgbackups.adapters.pgbackrest import (
    PeerHost,
    PgBackRest,
    PgBackRestConfig,
    Timeouts,
    TlsServerConfig,
    archive_get_command,
    detect_features,
    render_config,
    write_ca_chain,
    write_config,
)
from pgbackups.adapters.processes import OsUser
from pgbackups.adapters.s3 import S3Bucket
from pgbackups.core import archive
from pgbackups.core.host import BackupToolError, CommandResult, RestoreTarget
from pgbackups.core.repository import TimelineBranch

pytestmark = pytest.mark.real

STANZA = "it.adapters"
TIMEOUTS = Timeouts(command=90, backup=120, info=30, ping=5, io=10)


@dataclass(frozen=True)
class Setup:
    pg: Postgres
    tool: PgBackRest
    base: Path
    config: PgBackRestConfig


def _config(base: Path, pg: Postgres, s3: S3Server, stanza: str, **kw: object) -> PgBackRestConfig:
    settings = kw.pop("settings", None) or s3.settings("it-pgbr", path="/it-repo")
    return PgBackRestConfig(
        stanza=stanza,
        pg_path=str(pg.data_dir),
        s3=settings,  # type: ignore[arg-type]
        pg_port=pg.port,
        pg_socket_path=str(pg.socket_dir),
        log_path=str(base / "log"),
        lock_path=str(base / "lock"),
        spool_path=str(base / "spool"),
        ca_file=str(base / "s3-ca.pem"),
        process_max=2,
        restore_process_max=2,
        io_timeout=10,
        features=detect_features(),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def setup(
    workdir: Path,
    db_user: OsUser,
    s3: S3Server,
    make_postgres: Callable[..., Postgres],
) -> Iterator[Setup]:
    base = owned_dir(workdir / "pgbr", db_user, 0o750)
    for sub in ("log", "lock", "spool"):
        owned_dir(base / sub, db_user)
    conf = base / "pgbackrest.conf"
    settings = s3.settings("it-pgbr", path="/it-repo")
    assert write_ca_chain(settings, base / "s3-ca.pem", db_user) == str(base / "s3-ca.pem")
    S3Bucket(settings).ensure_bucket()  # pgBackRest does not create buckets
    pg = make_postgres(
        "main",
        {
            "archive_mode": "on",
            "archive_command": f"'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'",
        },
    )
    config = _config(base, pg, s3, STANZA)
    write_config(render_config(config), conf, db_user)
    yield Setup(pg, PgBackRest(conf, STANZA, user=db_user, timeouts=TIMEOUTS), base, config)


def test_postgres_facts(setup: Setup) -> None:
    pg = setup.pg
    from_controldata = postgres.system_identifier(str(pg.data_dir))
    assert from_controldata is not None and from_controldata > 0
    with postgres.connect(str(pg.socket_dir), pg.port) as conn:
        assert postgres.system_identifier(conn) == from_controldata
        assert postgres.current_timeline(conn) == 1
        assert postgres.in_recovery(conn) is False
    assert postgres.accepts_connections(str(pg.socket_dir), pg.port)
    assert not postgres.accepts_connections(str(pg.socket_dir), free_port(), connect_timeout=1)
    assert postgres.system_identifier(str(setup.base / "no-such-dir")) is None


def test_stanza_backups_info_timelines(setup: Setup, db_user: OsUser, s3: S3Server) -> None:
    tool, pg = setup.tool, setup.pg
    assert tool.version() == setup.config.features.version

    [before] = tool.info(STANZA)
    assert before.name == STANZA and not before.exists

    created = tool.stanza_create()
    assert created.ok, tool.error_line(created)
    checked = tool.check()
    assert checked.ok, tool.error_line(checked)

    full = tool.backup("full", on_primary=True)
    assert full.ok, tool.error_line(full)
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g", db_user)
    time.sleep(1)  # labels have a one-second resolution
    incr = tool.backup("incr", on_primary=True)
    assert incr.ok, tool.error_line(incr)

    [stanza] = tool.info(STANZA)
    assert stanza.exists and stanza.status_code == 0
    assert stanza.system_ids == (postgres.system_identifier(str(pg.data_dir)),)
    first, second = stanza.backups
    assert (first.type, second.type) == ("full", "incr")
    assert second.reference == (first.label,) and second.prior == first.label
    assert second.label.startswith(first.label + "_") and second.label.endswith("I")
    assert first.timeline == second.timeline == 1
    assert first.finished and second.finished
    assert second.start >= first.stop and second.start.tzinfo is not None
    assert stanza.archive_min is not None and not stanza.backup_lock_held

    assert [s.name for s in tool.info()] == [STANZA]
    assert tool.timelines(STANZA) == []

    # Every pgBackRest output is free of the S3 keys.
    for result in (created, checked, full, incr):
        text = result.stdout + result.stderr + " ".join(result.args)
        assert s3.credentials.secret_key not in text
        assert s3.credentials.access_key not in text


def test_archive_segments_as_stored(setup: Setup, s3: S3Server) -> None:
    """repo-ls gives every archived segment with its stored size; the chain from the
    lowest to the highest is whole, and an empty object put in by hand is seen as such."""
    [stanza] = setup.tool.info(STANZA)
    segments = setup.tool.archive_segments(STANZA)
    assert segments, "the backups above archived WAL"
    names = [s.name for s in segments]
    assert names[0] == stanza.archive_min and names[-1] == stanza.archive_max
    assert all(s.size > 0 and s.key.startswith(f"archive/{STANZA}/15-1/") for s in segments)
    first = segments[0]
    chain = archive.follow(segments, first.segno, archive.Lineage.of(first.timeline))
    assert chain.complete and chain.end == stanza.archive_max
    # list-backups' one listing sees the same segments (and no timeline: no restore yet).
    assert setup.tool.archive(STANZA) == archive.ArchiveListing((), tuple(segments))
    # info and that listing side by side (list-backups): the same answers as one by one.
    stanzas, listing = setup.tool.info_and_archive(STANZA)
    assert [s.name for s in stanzas] == [s.name for s in setup.tool.info()]
    assert listing == archive.ArchiveListing((), tuple(segments))
    # A stanza info does not show has no listing (its failure, if any, says nothing).
    assert setup.tool.info_and_archive("it.none")[1] is None
    # A lost write as the old local S3 server left it: the object is there, with no bytes.
    bucket = S3Bucket(s3.settings("it-pgbr"))
    after = archive.segment_name(1, segments[-1].segno + 1)
    key = f"it-repo/archive/{STANZA}/15-1/{after[:16]}/{after}-{'0' * 40}.zst"
    bucket.put(key, b"")
    try:
        listed = {s.name: s.size for s in setup.tool.archive_segments(STANZA)}
        assert listed[after] == 0
        chain = archive.follow(
            setup.tool.archive_segments(STANZA), first.segno, archive.Lineage.of(1)
        )
        assert [p.describe() for p in chain.problems] == [
            f"WAL segment {after} is empty in the repository"
        ]
    finally:
        bucket.client.delete_object(Bucket=bucket.settings.bucket, Key=key)


def test_wrong_secret_gives_the_error_code_not_the_secret(
    setup: Setup, db_user: OsUser, s3: S3Server
) -> None:
    wrong = "WrongSecretValue0123456789abcdefghijklmn"
    settings = s3.settings("it-pgbr", path="/it-wrong", secret_key=wrong)
    config = _config(setup.base, setup.pg, s3, "it.wrong", settings=settings)
    conf = setup.base / "wrong.conf"
    write_config(render_config(config), conf, db_user)
    tool = PgBackRest(conf, "it.wrong", user=db_user, timeouts=TIMEOUTS)

    result = tool.stanza_create()
    assert not result.ok
    line = tool.error_line(result)
    # A HEAD has no body: the S3 error code is there only for requests that have one.
    assert line.startswith("ERROR: [039]: HTTP request failed with 403 (Forbidden)")
    assert wrong not in line and wrong not in result.stdout + result.stderr
    assert s3.credentials.access_key not in line

    with pytest.raises(BackupToolError) as caught:
        tool.info()
    assert wrong not in str(caught.value)
    assert "HTTP request failed with 403 (Forbidden)" in str(caught.value)


def test_tls_server_starts_and_answers_ping(
    setup: Setup, db_user: OsUser, s3: S3Server, certs: Certs
) -> None:
    cert, key = certs.issue("it-unit-0", db_user)
    port = free_port()
    tls = TlsServerConfig(
        address="localhost",
        port=port,
        cert_file=str(cert),
        key_file=str(key),
        ca_file=str(certs.ca_cert),
        allowed_clients=("it-unit-1",),
    )
    config = _config(setup.base, setup.pg, s3, STANZA, tls=tls)
    conf = setup.base / "server.conf"
    write_config(render_config(config), conf, db_user)
    tool = PgBackRest(conf, STANZA, user=db_user, timeouts=TIMEOUTS)

    assert tool.server_ping(f"localhost:{port}") is False
    pid = tool.start_server(setup.base / "log" / "server.log")
    try:
        wait_for(lambda: tool.server_ping(f"localhost:{port}"), 15, "pgbackrest server")
        assert processes.is_alive(pid)
    finally:
        assert processes.stop(pid, timeout=10)
    assert tool.server_ping(f"localhost:{port}") is False


def _write_pem(path: Path, text: str, owner: OsUser, mode: int) -> str:
    write_atomically(text, path, owner, mode)
    return str(path)


def test_tls_server_admits_only_our_units_certificates(
    setup: Setup, db_user: OsUser, s3: S3Server, certs: Certs
) -> None:
    """The server trusts the private CA alone and, of its certificates, only the peers'
    names: a client with a peer's name from another CA (a shared provider, say) and one
    with a guessed name from our own CA are both refused; the peer is let in."""
    stanza = "it.auth"
    base = owned_dir(setup.base / "auth", db_user, 0o750)
    for sub in ("log", "lock", "spool"):
        owned_dir(base / sub, db_user)
    ours = certificates.new_authority("it-private-ca")
    ca_file = _write_pem(base / "ca.crt", ours.cert_pem, db_user, 0o644)

    def identity(name: str, authority: certificates.CertificateAuthority) -> tuple[str, str]:
        issued = certificates.issue(authority, name, ["localhost"])
        return (
            _write_pem(base / f"{name}.crt", issued.cert_pem, db_user, 0o644),
            _write_pem(base / f"{name}.key", issued.key_pem, db_user, 0o600),
        )

    server_cert, server_key = identity("it-unit-0", ours)
    port = free_port()
    write_ca_chain(s3.settings("it-pgbr"), base / "s3-ca.pem", db_user)
    server_config = _config(
        base,
        setup.pg,
        s3,
        stanza,
        tls=TlsServerConfig(
            address="localhost",
            port=port,
            cert_file=server_cert,
            key_file=server_key,
            ca_file=ca_file,
            allowed_clients=("it-unit-1",),
        ),
    )
    write_config(render_config(server_config), base / "server.conf", db_user)
    server = PgBackRest(base / "server.conf", stanza, user=db_user, timeouts=TIMEOUTS)

    # A client whose only PostgreSQL is the server's, reached through the TLS server.
    # The shared CA stands for a TLS provider: it signs any name an application asks for.
    impostor_cert, impostor_key = certs.issue("it-unit-1", db_user)
    clients = {
        "peer": identity("it-unit-1", ours),
        "right name, other CA": (str(impostor_cert), str(impostor_key)),
        "guessed name, our CA": identity("it-unit-9", ours),
    }
    tools: dict[str, PgBackRest] = {}
    for what, (cert, key) in clients.items():
        conf = base / f"client-{len(tools)}.conf"
        text = render_config(_config(base, setup.pg, s3, stanza)) + (
            f"pg1-host=localhost\npg1-host-type=tls\npg1-host-port={port}\n"
            f"pg1-host-ca-file={ca_file}\npg1-host-cert-file={cert}\npg1-host-key-file={key}\n"
        )
        write_config(text, conf, db_user)
        tools[what] = PgBackRest(conf, stanza, user=db_user, timeouts=TIMEOUTS)

    pid = server.start_server(base / "log" / "server.log")
    try:
        wait_for(lambda: server.server_ping(f"localhost:{port}"), 15, "pgbackrest server")
        # The server's environment holds nothing secret (its key is a file, 0600).
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        for secret in (s3.credentials.secret_key, s3.credentials.access_key, ours.key_pem):
            assert secret not in environ
        refused = {what: tools[what].stanza_create() for what in list(clients)[1:]}
        admitted = tools["peer"].stanza_create()
    finally:
        assert processes.stop(pid, timeout=10)

    assert admitted.ok, tools["peer"].error_line(admitted)
    reasons = {what: _pg1_refusal(result) for what, result in refused.items()}
    # The handshake fails on the CA; a certificate of ours with a name the server does not
    # admit gets through the handshake and is refused per command.
    assert reasons["right name, other CA"].endswith("tlsv1 alert unknown ca"), reasons
    assert reasons["guessed name, our CA"].startswith("[AccessError]"), reasons
    assert reasons["guessed name, our CA"].endswith("access denied"), reasons


def _pg1_refusal(result: CommandResult) -> str:
    """Why pgBackRest could not use pg1 (its warning), from a failed command's output."""
    assert not result.ok
    for line in (result.stderr + result.stdout).splitlines():
        if "unable to check pg1: " in line:
            return line.split("unable to check pg1: ", 1)[1].strip()
    return "(no pg1 warning)"


def test_timelines_from_history_objects(setup: Setup, s3: S3Server) -> None:
    """repo-ls lists only ``archive/<stanza>/``'s ``.history`` files (put there by hand)."""
    bucket = S3Bucket(s3.settings("it-pgbr"))
    for key in (
        "it-repo/archive/it.hist/15-1/00000002.history",
        "it-repo/archive/it.hist/15-1/0000000A.history",
        "it-repo/archive/it.hist/15-1/0000000A0000000000000003-0123456789abcdef.zst",
        "it-repo/archive/it.hist/15-1/000000010000000000000002.00000028.backup",
        "it-repo/archive/it.hist/archive.info",
        "it-repo/archive/it.histX/15-1/00000003.history",
        "it-repo/backup/it.hist/00000004.history",
    ):
        bucket.put(key, b"1\t0/3000000\tno recovery target specified\n")
    records = setup.tool.timelines("it.hist")
    assert [r.timeline for r in records] == [2, 10]
    assert [r.key for r in records] == [
        "archive/it.hist/15-1/00000002.history",
        "archive/it.hist/15-1/0000000A.history",
    ]
    assert all(r.stanza == "it.hist" and r.created.tzinfo is not None for r in records)
    # One unfiltered listing gives the same timelines and the same (no) segments: the
    # object of timeline 10 above has no 40-digit checksum, so it is no segment.
    listing = setup.tool.archive("it.hist")
    assert listing.timelines == tuple(records)
    assert listing.segments == tuple(setup.tool.archive_segments("it.hist")) == ()
    assert abs(time.time() - records[0].created.timestamp()) < 600
    # repo-get reads a history file back as the timeline's branches.
    assert setup.tool.history(records[0]) == (TimelineBranch(1, "0/3000000"),)
    missing = replace(records[0], key="archive/it.hist/15-1/00000009.history")
    with pytest.raises(BackupToolError) as info:
        setup.tool.history(missing)
    assert "00000009.history" in str(info.value)


def test_backup_from_the_standby_over_tls(
    setup: Setup,
    db_user: OsUser,
    s3: S3Server,
    certs: Certs,
    make_postgres: Callable[..., Postgres],
) -> None:
    """Two units, each with its TLS server: the replica backs up with backup-standby,
    reaching the primary through the primary's TLS server; the primary with
    --no-backup-standby."""
    stanza = "it.standby"
    units = {}
    for name in ("it-primary", "it-replica"):
        base = owned_dir(setup.base / name, db_user, 0o750)
        for sub in ("log", "lock", "spool"):
            owned_dir(base / sub, db_user)
        units[name] = base
    primary_conf = units["it-primary"] / "pgbackrest.conf"
    primary = make_postgres(
        "standby-primary",
        {
            "archive_mode": "on",
            "archive_command": f"'pgbackrest --config={primary_conf} --stanza={stanza} "
            "archive-push %p'",
        },
    )
    replica = make_postgres("standby-replica", {}, replica_of=primary)
    with postgres.connect(str(replica.socket_dir), replica.port) as conn:
        assert postgres.in_recovery(conn) is True

    tls_ports = {"it-primary": free_port(), "it-replica": free_port()}
    pgs = {"it-primary": primary, "it-replica": replica}
    tools: dict[str, PgBackRest] = {}
    for name, other in (("it-primary", "it-replica"), ("it-replica", "it-primary")):
        cert, key = certs.issue(name, db_user)
        base = units[name]
        write_ca_chain(s3.settings("it-pgbr"), base / "s3-ca.pem", db_user)
        config = _config(
            base,
            pgs[name],
            s3,
            stanza,
            tls=TlsServerConfig(
                address="localhost",
                port=tls_ports[name],
                cert_file=str(cert),
                key_file=str(key),
                ca_file=str(certs.ca_cert),
                allowed_clients=(other,),
            ),
            peers=(
                PeerHost(
                    host="localhost",
                    port=tls_ports[other],
                    pg_path=str(pgs[other].data_dir),
                    pg_port=pgs[other].port,
                    pg_socket_path=str(pgs[other].socket_dir),
                ),
            ),
        )
        assert config.ca_file == str(base / "s3-ca.pem")
        write_config(render_config(config), base / "pgbackrest.conf", db_user)
        tools[name] = PgBackRest(base / "pgbackrest.conf", stanza, user=db_user, timeouts=TIMEOUTS)

    servers = [tools[name].start_server(units[name] / "log" / "server.log") for name in tools]
    try:
        for name in tools:
            address = f"localhost:{tls_ports[name]}"
            wait_for(partial(tools["it-primary"].server_ping, address), 15, "TLS server")
        created = tools["it-primary"].stanza_create()
        assert created.ok, tools["it-primary"].error_line(created)
        checked = tools["it-replica"].check()
        assert checked.ok, tools["it-replica"].error_line(checked)

        standby_full = tools["it-replica"].backup("full", on_primary=False)
        assert standby_full.ok, tools["it-replica"].error_line(standby_full)
        assert "wait for replay on the standby" in standby_full.stdout
        time.sleep(1)
        primary_incr = tools["it-primary"].backup("incr", on_primary=True)
        assert primary_incr.ok, tools["it-primary"].error_line(primary_incr)
    finally:
        for pid in servers:
            processes.stop(pid, timeout=10)

    [info] = tools["it-replica"].info(stanza)
    full, incr = info.backups
    assert (full.type, incr.type) == ("full", "incr")
    assert incr.reference == (full.label,)


def test_a_restore_beside_the_data_directory_leaves_the_units_spool_alone(
    setup: Setup, db_user: OsUser
) -> None:
    """A restore into another directory while the database runs (a restore's first
    step): its own spool, so the unit's archive-push queue (what the stopping database
    pushes meanwhile) is never removed under it; recovery is told where the archive is
    with that spool and the data directory's final path."""
    tool = setup.tool
    [stanza] = tool.info(STANZA)
    assert stanza.backups, "test_stanza_backups_info_timelines took them"
    queue = owned_dir(setup.base / "spool" / "archive" / STANZA / "out", db_user)
    acknowledged = queue / "000000010000000000000042.ok"
    acknowledged.write_text("")
    staging = owned_dir(setup.base / "restored", db_user, 0o700)
    spool = str(setup.base / "spool" / "restore")
    command = archive_get_command(str(setup.base / "pgbackrest.conf"), STANZA, "/the/data", spool)
    target = RestoreTarget(stanza=STANZA, label=stanza.backups[0].label)
    result = tool.restore(str(staging), target, restore_command=command, spool_path=spool)
    assert result.ok, tool.error_line(result)
    assert (staging / "PG_VERSION").read_text().strip() == "15"
    assert (staging / "recovery.signal").exists()
    auto = (staging / "postgresql.auto.conf").read_text()
    assert f"--pg1-path=/the/data --spool-path={spool} archive-get %f" in auto, auto
    assert "recovery_target = 'immediate'" in auto and "recovery_target_action = 'promote'" in auto
    assert acknowledged.exists(), "the unit's archive-push queue was left alone"
