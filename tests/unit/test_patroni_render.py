"""Rendering of Patroni's YAML from a WorkloadConfig, and parsing of its REST answers."""

from __future__ import annotations

import base64
import json
import shlex
from dataclasses import replace
from typing import Any

import pytest
import yaml

from pgbackups.adapters.patroni import (
    ClusterMember,
    MemberStatus,
    PatroniMember,
    PatroniPasswords,
    RestAuth,
    parse_cluster,
    render_config,
    restore_command,
)
from pgbackups.core.host import RestoreTarget, TlsMaterial, WorkloadConfig

MEMBER = PatroniMember(
    scope="main",
    name="main-0",
    data_dir="/state/units/0/data",
    host="127.0.0.1",
    pg_port=20010,
    rest_port=20011,
    socket_dir="/state/units/0/sock",
    etcd_hosts=("127.0.0.1:20000",),
    passwords=PatroniPasswords("su-secret", "rep-secret", "rw-secret", "rest-secret"),
    pgpass="/state/units/0/pgpass",
    pgbackrest_config="/state/units/0/pgbackrest.conf",
)
PLAIN = WorkloadConfig(s3=None, stanza=None, tls_server=False)
ARCHIVING = WorkloadConfig(s3=None, stanza="local.main", tls_server=False)


def test_archive_command_off_without_stanza() -> None:
    cfg = render_config(MEMBER, PLAIN)
    params = cfg["postgresql"]["parameters"]
    assert params["archive_mode"] == "on"
    assert params["archive_command"] == "/bin/true"
    dcs = cfg["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert dcs["archive_command"] == "/bin/true"
    assert cfg["postgresql"]["create_replica_methods"] == ["basebackup"]
    assert "pgbackrest" not in cfg["postgresql"]


def test_archive_command_on_with_stanza() -> None:
    cfg = render_config(MEMBER, ARCHIVING)
    expected = (
        'pgbackrest --config=/state/units/0/pgbackrest.conf --stanza=local.main archive-push "%p"'
    )
    assert cfg["postgresql"]["parameters"]["archive_command"] == expected
    assert cfg["bootstrap"]["dcs"]["postgresql"]["parameters"]["archive_command"] == expected
    assert cfg["postgresql"]["create_replica_methods"] == ["pgbackrest", "basebackup"]
    method = cfg["postgresql"]["pgbackrest"]
    assert method["command"] == (
        "pgbackrest --config=/state/units/0/pgbackrest.conf --stanza=local.main "
        "--delta restore --type=standby"
    )
    assert method["keep_data"] is True
    assert method["no_params"] is True


def test_pg_hba_normal() -> None:
    hba = render_config(MEMBER, PLAIN)["postgresql"]["pg_hba"]
    assert hba == [
        "local all postgres peer map=pgbackups",
        "local all all scram-sha-256",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
        "host postgres rewind_user 127.0.0.1/32 scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
    ]
    assert not any("trust" in rule for rule in hba)


def test_pg_ident_maps_the_db_os_user_and_root_to_the_superuser_only() -> None:
    cfg = render_config(MEMBER, PLAIN)
    assert cfg["postgresql"]["pg_ident"] == [
        "pgbackups postgres postgres",
        "pgbackups root postgres",
    ]
    alice = render_config(replace(MEMBER, db_os_user="alice"), PLAIN)["postgresql"]
    assert alice["pg_ident"] == ["pgbackups alice postgres", "pgbackups root postgres"]
    # Patroni's own connection goes through the socket, so it is the peer-mapped user.
    assert cfg["postgresql"]["use_unix_socket"] is True


def test_pg_hba_replication_only_from_the_units_addresses() -> None:
    member = replace(MEMBER, host="10.0.0.1", peer_addresses=("10.0.0.2", "10.0.0.3"))
    hba = render_config(member, PLAIN)["postgresql"]["pg_hba"]
    replication = [r for r in hba if " replication " in r]
    assert replication == [
        f"host replication replicator 10.0.0.{i}/32 scram-sha-256" for i in (1, 2, 3)
    ]
    rewind = [r for r in hba if "rewind_user" in r]
    assert rewind == [f"host postgres rewind_user 10.0.0.{i}/32 scram-sha-256" for i in (1, 2, 3)]
    assert hba[-3:] == [
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
        "host all all 10.0.0.1/32 scram-sha-256",
    ]


def test_pg_hba_refuses_a_unit_address_that_is_no_ip_address() -> None:
    member = replace(MEMBER, peer_addresses=("10.0.0.2/8 trust",))
    with pytest.raises(ValueError, match="not an IP address"):
        render_config(member, PLAIN)


def test_pg_hba_connectivity_off_rejects_before_normal_rules() -> None:
    hba = render_config(MEMBER, replace(PLAIN, connectivity=False))["postgresql"]["pg_hba"]
    reject = hba.index("host all all 0.0.0.0/0 reject")
    assert hba.index("host all all 127.0.0.1/32 reject") > reject
    normal = hba.index("host all all 127.0.0.1/32 scram-sha-256")
    assert reject < normal
    # the unix socket (pgBackRest, Patroni), replication and pg_rewind come first
    assert hba.index("local all postgres peer map=pgbackups") < reject
    internal = [i for i, r in enumerate(hba) if "replicator" in r or "rewind_user" in r]
    assert internal
    assert max(internal) < reject


def test_rest_api_asks_for_a_password() -> None:
    restapi = render_config(MEMBER, PLAIN)["restapi"]
    assert restapi["authentication"] == {"username": "pgbackups", "password": "rest-secret"}


def test_rest_auth_header_is_basic_and_hides_the_password() -> None:
    auth = RestAuth.of(MEMBER.passwords)
    assert auth.header() == "Basic " + base64.b64encode(b"pgbackups:rest-secret").decode()
    assert "rest-secret" not in repr(auth)


def test_tags_follow_creating_backup() -> None:
    assert render_config(MEMBER, PLAIN)["tags"]["nofailover"] is False
    tags = render_config(MEMBER, replace(PLAIN, creating_backup=True))["tags"]
    assert tags["nofailover"] is True
    assert tags["noloadbalance"] is True


def test_initdb_without_restore() -> None:
    boot = render_config(MEMBER, PLAIN)["bootstrap"]
    assert boot["initdb"] == [{"encoding": "UTF8"}, "data-checksums"]
    assert "method" not in boot


BASE = (
    "pgbackrest --config=/state/units/0/pgbackrest.conf --stanza=local.old "
    "--pg1-path=/state/units/0/data"
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            RestoreTarget(stanza="local.old", label="20240101-000000F"),
            f"{BASE} --set=20240101-000000F --type=immediate --target-action=promote restore",
        ),
        (
            RestoreTarget(
                stanza="local.old",
                type="time",
                target="2026-11-28 14:41:00.942862+00",
                target_timeline=2,
            ),
            f"{BASE} --type=time '--target=2026-11-28 14:41:00.942862+00' "
            "--target-action=promote --target-timeline=2 restore",
        ),
        (
            RestoreTarget(stanza="local.old", type="default", target_action="promote"),
            f"{BASE} --type=default restore",
        ),
        (
            RestoreTarget(stanza="local.old", type="default", target_timeline=3),
            f"{BASE} --type=default --target-timeline=3 restore",
        ),
    ],
)
def test_restore_command(target: RestoreTarget, expected: str) -> None:
    boot = render_config(MEMBER, replace(PLAIN, restore=target))["bootstrap"]
    assert boot["method"] == "pgbackrest"
    assert "initdb" not in boot
    assert boot["pgbackrest"] == {
        "command": expected,
        "no_params": True,
        "keep_existing_recovery_conf": True,
    }
    # Patroni shlex-splits the command: the time target stays one argument
    if target.target:
        assert f"--target={target.target}" in shlex.split(expected)


def test_restore_command_drops_what_pgbackrest_245_rejects() -> None:
    """--target-timeline with immediate, --target-action with default and --target
    without time are pgBackRest [031] errors: never rendered, whatever the target holds."""
    immediate = RestoreTarget(stanza="local.old", label="L", type="immediate", target_timeline=4)
    assert restore_command(MEMBER, immediate) == (
        f"{BASE} --set=L --type=immediate --target-action=promote restore"
    )
    default = RestoreTarget(stanza="local.old", type="default", target="latest", target_timeline=12)
    assert restore_command(MEMBER, default) == f"{BASE} --type=default --target-timeline=12 restore"


def test_ssl_parameters() -> None:
    member = replace(
        MEMBER, ssl=TlsMaterial(ca_file="/t/ca.crt", cert_file="/t/u.crt", key_file="/t/u.key")
    )
    params = render_config(member, PLAIN)["postgresql"]["parameters"]
    assert params["ssl"] == "on"
    assert params["ssl_cert_file"] == "/t/u.crt"
    assert params["ssl_key_file"] == "/t/u.key"
    assert params["ssl_ca_file"] == "/t/ca.crt"
    assert "ssl" not in render_config(MEMBER, PLAIN)["postgresql"]["parameters"]


def test_yaml_round_trip() -> None:
    cfg = render_config(
        MEMBER,
        replace(
            ARCHIVING,
            connectivity=False,
            restore=RestoreTarget(stanza="s", type="time", target="2026-01-01 00:00:00+00"),
        ),
    )
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg
    assert cfg["etcd3"] == {"hosts": ["127.0.0.1:20000"]}
    assert cfg["restapi"]["listen"] == "127.0.0.1:20011"


def test_passwords_not_in_repr() -> None:
    assert "su-secret" not in repr(MEMBER)


# --- REST parsing ---------------------------------------------------------

CLUSTER_302: dict[str, Any] = json.loads("""
{"members": [
  {"name": "main-0", "role": "leader", "state": "running",
   "api_url": "http://127.0.0.1:20011/patroni", "host": "127.0.0.1", "port": 20010,
   "timeline": 1},
  {"name": "main-1", "role": "replica", "state": "running",
   "api_url": "http://127.0.0.1:20014/patroni", "host": "127.0.0.1", "port": 20013,
   "timeline": 1, "lag": 0, "tags": {"nofailover": true}},
  {"name": "main-2", "role": "replica", "state": "stopped",
   "api_url": "http://127.0.0.1:20017/patroni", "host": "127.0.0.1", "port": 20016,
   "lag": "unknown"}
]}
""")

CLUSTER_4X: dict[str, Any] = json.loads("""
{"members": [
  {"name": "main-0", "role": "leader", "state": "running",
   "api_url": "http://127.0.0.1:20011/patroni", "host": "127.0.0.1", "port": 20010,
   "timeline": 2},
  {"name": "main-1", "role": "replica", "state": "streaming",
   "api_url": "http://127.0.0.1:20014/patroni", "host": "127.0.0.1", "port": 20013,
   "timeline": 2, "receive_lag": 0, "replay_lag": 16, "lag": 16,
   "lsn": "0/3000060", "receive_lsn": "0/3000060", "replay_lsn": "0/3000050"}
], "scope": "main"}
""")


def test_parse_cluster_302() -> None:
    members = parse_cluster(CLUSTER_302)
    assert [m.name for m in members] == ["main-0", "main-1", "main-2"]
    leader, replica, stopped = members
    assert leader.is_primary
    assert not leader.is_streaming
    assert leader.lag is None
    assert replica.is_streaming
    assert replica.lag == 0
    assert replica.tags == {"nofailover": True}
    assert replica.port == 20013
    assert not stopped.is_streaming
    assert stopped.lag is None
    assert stopped.timeline is None


def test_parse_cluster_4x() -> None:
    leader, replica = parse_cluster(CLUSTER_4X)
    assert leader.is_primary
    assert leader.timeline == 2
    assert replica.is_streaming
    assert replica.receive_lag == 0
    assert replica.replay_lag == 16
    assert replica.tags == {}


def test_member_status_302_and_4x() -> None:
    old = MemberStatus.from_json(
        {
            "state": "running",
            "role": "master",
            "server_version": 150018,
            "timeline": 1,
            "database_system_identifier": "7312345678901234567",
            "patroni": {"version": "3.0.2", "scope": "main"},
        }
    )
    assert old.is_primary
    assert old.is_running
    assert old.system_identifier == 7312345678901234567
    assert old.patroni_version == "3.0.2"
    new = MemberStatus.from_json(
        {
            "state": "streaming",
            "role": "replica",
            "timeline": 2,
            "replication_state": "streaming",
            "patroni": {"version": "4.1.5", "scope": "main", "name": "main-1"},
        }
    )
    assert not new.is_primary
    assert new.is_running
    assert new.replication_state == "streaming"


def test_cluster_member_tolerates_missing_fields() -> None:
    m = ClusterMember.from_json({"name": "x"})
    assert m.role == ""
    assert m.host is None
    assert not m.is_streaming


# --- Second line of defence: no value may carry a line or a control character --------


@pytest.mark.parametrize("bad", ["\n", "\r", "\x0b", "\x1c", "\x85", "\u2028", "\x00", "é"])
def test_a_stanza_that_is_not_printable_ascii_is_refused(bad: str) -> None:
    config = replace(ARCHIVING, stanza=f"local.main{bad}archive_mode=off")
    with pytest.raises(ValueError, match="archive_command is not printable ASCII"):
        render_config(MEMBER, config)


def test_a_restore_target_that_is_not_printable_ascii_is_refused() -> None:
    target = RestoreTarget(
        stanza="local.old", type="time", target="2026-11-28 14:41:00+00\x1crestore_command=x"
    )
    with pytest.raises(ValueError, match=r"bootstrap\.pgbackrest\.command is not printable"):
        render_config(MEMBER, replace(PLAIN, restore=target))


def test_the_refusal_never_shows_a_password() -> None:
    member = replace(MEMBER, passwords=PatroniPasswords("su\nsecret", "rep", "rw", "rest"))
    with pytest.raises(ValueError, match=r"superuser\.password") as caught:
        render_config(member, PLAIN)
    assert "secret" not in str(caught.value)
