"""``pgbackups s3 set|unset|show``: the local twin of relating the S3 integrator.

``set`` validates the settings, stores them (0600) and fires ``s3-credentials-changed``
on every unit, then ``peer-changed`` (the leader's application bag changed). With no
option it points at the cluster's own S3 server. The secret key never has to appear on
a command line: it is read from a file or from standard input.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pgbackups.core import messages as msg
from pgbackups.core.outcomes import Outcome
from pgbackups.core.settings import (
    PASSPHRASE_KEY,
    URI_STYLES,
    S3Settings,
    S3SettingsProblem,
    parse_s3_settings,
)
from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.errors import UsageError
from pgbackups.local.progress import Progress

if TYPE_CHECKING:
    from pgbackups.local.runtime.cluster import Cluster

OPTION_KEYS = {
    "bucket": "bucket",
    "endpoint": "endpoint",
    "region": "region",
    "path": "path",
    "uri_style": "s3-uri-style",
    "storage_class": "storage-class",
    "delete_older_than_days": "delete-older-than-days",
    "access_key": "access-key",
}


def _read_secret(source: str, option: str = "--secret-key-file", what: str = "secret key") -> str:
    if source == "-":
        text = sys.stdin.readline()
    else:
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {option} {source}: {exc.strerror}") from exc
    secret = text.strip()
    if not secret:
        raise UsageError(f"the {what} is empty ({option}: a file or - for stdin)")
    return secret


PASSPHRASE_FILE = "repository-passphrase"  # noqa: S105 - a file name, not a secret


def passphrase_file(cluster: Cluster) -> Path:
    """The cluster's own repository passphrase: secrets/ (0700), the file 0600, root's."""
    return cluster.paths.secrets_dir / PASSPHRASE_FILE


def own_passphrase(cluster: Cluster) -> str:
    """The cluster's repository passphrase, generated (256 bits) the first time."""
    from pgbackups.local.machinery.paths import write_file

    path = passphrase_file(cluster)
    if not path.exists():
        write_file(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return path.read_text().strip()


def _same_repository(old: dict[str, str] | None, new: dict[str, str]) -> bool:
    if old is None:
        return False
    before, after = parse_s3_settings(old), parse_s3_settings(new)
    if isinstance(before, S3SettingsProblem) or isinstance(after, S3SettingsProblem):
        return False
    return before.repository_id == after.repository_id


def choose_passphrase(cluster: Cluster, args: argparse.Namespace, params: dict[str, str]) -> None:
    """Encryption of the repository (docs/security.md, "Encryption at rest"):
    ``--no-encryption``: none; ``--encryption-passphrase-file``: that passphrase (another
    cluster's repository); otherwise, for the repository the stored settings already name,
    what they had (a repository cannot be switched), and for any other the cluster's own
    generated passphrase: a new repository is encrypted."""
    from pgbackups.local.runtime.host import read_s3_parameters

    params.pop(PASSPHRASE_KEY, None)
    if args.no_encryption:
        return
    if args.encryption_passphrase_file:
        params[PASSPHRASE_KEY] = _read_secret(
            args.encryption_passphrase_file, "--encryption-passphrase-file", "passphrase"
        )
        return
    previous = read_s3_parameters(cluster)
    if previous is not None and _same_repository(previous, params):
        if previous.get(PASSPHRASE_KEY):
            params[PASSPHRASE_KEY] = previous[PASSPHRASE_KEY]
        return
    params[PASSPHRASE_KEY] = own_passphrase(cluster)


def _read_ca(path: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --ca-file {path}: {exc.strerror}") from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"--ca-file {path} holds no PEM certificate")
    return text


def refuse_empty_options(args: argparse.Namespace) -> None:
    """An option given as ``''`` is refused, never read as "not given".

    ``--endpoint ''`` once fell through to the default endpoint, AWS, with this cluster's
    own keys; an empty ``--region`` or ``--path`` would as silently mean the default.
    """
    if getattr(args, "no_encryption", False) and getattr(args, "encryption_passphrase_file", None):
        raise UsageError("--no-encryption and --encryption-passphrase-file exclude each other")
    for attr in (*OPTION_KEYS, "secret_key_file", "ca_file", "encryption_passphrase_file"):
        value = getattr(args, attr, None)
        if value is not None and not str(value).strip():
            flag = "--" + attr.replace("_", "-")
            raise UsageError(f"{flag} is empty: give a value, or leave the option out")


def build_parameters(cluster: Cluster, args: argparse.Namespace) -> dict[str, str]:
    """The raw settings: the cluster's own S3 server, overridden by the options.

    Pointing at another endpoint drops the own server's keys and CA, so that they are
    never sent anywhere else: that endpoint's keys must then be given.
    """
    own = cluster.s3()
    params = own.parameters()
    if args.endpoint and args.endpoint.rstrip("/") != own.endpoint:
        for key in ("access-key", "secret-key", "tls-ca-chain", "region"):
            params.pop(key, None)
        if not args.access_key or not args.secret_key_file:
            raise UsageError(
                "another endpoint needs its own keys: --access-key K --secret-key-file F "
                "(F may be - to read the secret from standard input)"
            )
    for attr, key in OPTION_KEYS.items():
        value = getattr(args, attr)
        if value is not None:
            params[key] = str(value)
    if args.secret_key_file:
        params["secret-key"] = _read_secret(args.secret_key_file)
    if args.ca_file:
        params["tls-ca-chain"] = json.dumps([_read_ca(args.ca_file)])
    choose_passphrase(cluster, args, params)
    return params


def _report(outcomes: dict[str, Outcome], progress: Progress, event: str) -> None:
    for unit, outcome in outcomes.items():
        progress.say(f"{unit}: {event} -> {type(outcome).__name__.lower()}")


def cmd_set(args: argparse.Namespace) -> int:
    refuse_empty_options(args)
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime, write_s3_parameters
    from pgbackups.local.runtime.status import print_unit_statuses

    cluster = Cluster.load(args.name)
    params = build_parameters(cluster, args)
    # Every value through the same allow-lists as the charm's relation data, before
    # anything is written (exit 2).
    checked = parse_s3_settings(params)
    if not isinstance(checked, S3Settings):
        raise UsageError(checked.message())
    progress = Progress()
    with cluster.operation("s3 set"):
        write_s3_parameters(cluster, params)
        progress.say(
            f"S3 settings stored: bucket {checked.bucket} at {checked.endpoint}, "
            f"path {checked.path}"
        )
        if checked.encrypted:
            progress.say(
                f"repository encrypted ({checked.redacted()['encryption']}); keep a copy of "
                f"its passphrase ({passphrase_file(cluster)} unless you gave one): "
                "without it no backup can be read"
            )
        else:
            progress.say("repository NOT encrypted (--no-encryption, or created so)")
        runtime = Runtime(cluster)
        _report(runtime.fire_all("s3-credentials-changed"), progress, "s3-credentials-changed")
        _report(runtime.peers_changed(), progress, "peer-changed")
    print_unit_statuses(cluster)
    return _s3_block_exit(cluster)


def _s3_block_exit(cluster: Cluster) -> int:
    """1 when S3 left a unit Blocked: the settings are stored (a later fix clears the
    block) but backups do not work, and a script must not take that for success. WAL is
    held on the units meanwhile when the repository was this cluster's."""
    blocked = [
        (unit.name, message)
        for unit in cluster.units()
        for status, message in [cluster.get_status(unit.name)]
        if status == "blocked" and msg.is_s3_block_message(message)
    ]
    for name, message in blocked:
        print(f"error: {name}: {message}", file=sys.stderr)
    return 1 if blocked else 0


def cmd_unset(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime, read_s3_parameters, write_s3_parameters
    from pgbackups.local.runtime.status import print_unit_statuses

    cluster = Cluster.load(args.name)
    progress = Progress()
    with cluster.operation("s3 unset"):
        if read_s3_parameters(cluster) is None:
            progress.say("no S3 settings were set")
        write_s3_parameters(cluster, None)
        runtime = Runtime(cluster)
        _report(runtime.fire_all("s3-credentials-gone"), progress, "s3-credentials-gone")
    print_unit_statuses(cluster)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import read_s3_parameters

    cluster = Cluster.load(args.name)
    raw = read_s3_parameters(cluster)
    if raw is None:
        print("no S3 settings (pgbackups s3 set)")
        return 0
    checked = parse_s3_settings(raw)
    if isinstance(checked, S3Settings):
        view = checked.redacted()
    else:
        hidden = ("secret-key", PASSPHRASE_KEY)
        view = {k: ("<redacted>" if k in hidden else v) for k, v in raw.items()}
        view["problem"] = checked.message()
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in view)
        for key, value in sorted(view.items()):
            print(f"{key:<{width}}  {value}")
    return 0


def register(sub: Subparsers) -> None:
    s3 = subcommand(
        sub,
        "s3",
        "set, unset or show the S3 settings of a cluster",
        "The local twin of relating the S3 integrator: `set` fires s3-credentials-changed\n"
        "on every unit (stanza-create, WAL archiving on), `unset` fires\n"
        "s3-credentials-gone (archiving off, S3 blocks cleared).",
        """
        pgbackups s3 set                          # the cluster's own S3 server
        pgbackups s3 set --bucket other --path /prod
        pgbackups s3 set --endpoint https://s3.example.com --region eu-west-1 \\
            --bucket b --access-key AKIA... --secret-key-file ~/.s3-secret
        printf '%s\\n' "$SECRET" | pgbackups s3 set --access-key K --secret-key-file -
        pgbackups s3 show
        pgbackups s3 unset
        """,
    )
    verbs = s3.add_subparsers(dest="s3_command", metavar="VERB", required=True)

    p = subcommand(
        verbs,
        "set",
        "store S3 settings and fire s3-credentials-changed",
        "Store S3 settings (validated first; nothing changes on bad input) and fire\n"
        "s3-credentials-changed on every unit. Without options: the cluster's own S3\n"
        "server. Options override single settings. The secret key is read from a file\n"
        "or from standard input (-), never from the command line.",
        """
        pgbackups s3 set
        pgbackups s3 set --bucket backups --path /main --uri-style path
        pgbackups s3 set --access-key K --secret-key-file /root/s3-secret
        """,
    )
    add_name(p)
    p.add_argument("--bucket", help="bucket name")
    p.add_argument(
        "--endpoint", help="https://HOST[:PORT] of the S3 endpoint (default: own server)"
    )
    p.add_argument("--region", help="region (e.g. us-east-1)")
    p.add_argument("--path", help="base path in the bucket (normalised to a leading /)")
    p.add_argument("--uri-style", choices=URI_STYLES, help="path or host (virtual) style")
    p.add_argument("--ca-file", help="PEM CA that signed the endpoint's certificate")
    p.add_argument("--access-key", help="access key id")
    p.add_argument(
        "--secret-key-file", metavar="FILE", help="file holding the secret key (- for stdin)"
    )
    p.add_argument("--storage-class", help="S3 storage class")
    # A string, not type=int: int() takes " 5", "+5", "1_0" and non-ASCII digits; the
    # settings' own check (digits, 1..36500) is the one that decides.
    p.add_argument(
        "--delete-older-than-days",
        metavar="DAYS",
        help="expire backups older than DAYS, 1 to 36500 (time-based retention)",
    )
    p.add_argument(
        "--encryption-passphrase-file",
        metavar="FILE",
        help="the repository's encryption passphrase (- for stdin): to use a repository "
        "another cluster created encrypted (default: this cluster's own, generated)",
    )
    p.add_argument(
        "--no-encryption",
        action="store_true",
        help="an unencrypted repository (default: encrypted, aes-256-cbc)",
    )
    p.set_defaults(func=cmd_set)

    p = subcommand(
        verbs,
        "unset",
        "remove S3 settings and fire s3-credentials-gone",
        "Remove the S3 settings: WAL archiving turns off and S3 blocks clear.\n"
        "The backups in S3 are not touched.",
        "pgbackups s3 unset",
    )
    add_name(p)
    p.set_defaults(func=cmd_unset)

    p = subcommand(
        verbs,
        "show",
        "show the S3 settings (secrets redacted)",
        "Show the stored S3 settings; the keys are redacted.",
        "pgbackups s3 show --json",
    )
    add_name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)
