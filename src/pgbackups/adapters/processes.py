"""Running programs as the database user: commands with timeouts, daemons by PID.

PostgreSQL and pgBackRest refuse to run as root, so when pgbackups runs as root every
server and every pgBackRest command runs as the ``postgres`` OS user; otherwise as the
current user. Commands always have a timeout and captured output; daemons are started
in their own session and stopped by the PID recorded when they were started.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgbackups.core.host import CommandResult

log = logging.getLogger(__name__)

DB_USER_WHEN_ROOT = "postgres"
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()


def current_user() -> OsUser:
    entry = pwd.getpwuid(os.geteuid())
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def db_user() -> OsUser:
    """The OS user that owns the data: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return current_user()
    try:
        entry = pwd.getpwnam(DB_USER_WHEN_ROOT)
    except KeyError as exc:
        raise RuntimeError(
            f"running as root needs the OS user {DB_USER_WHEN_ROOT!r} "
            "(apt-get install postgresql-15 creates it)"
        ) from exc
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _switch_to(user: OsUser | None) -> OsUser | None:
    """The user to switch to, or None when the command runs as ourselves."""
    return None if user is None or user.is_current else user


def _env_for(user: OsUser | None, env: Mapping[str, str] | None) -> dict[str, str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    if user is not None:
        base["HOME"] = user.home
        base["USER"] = user.name
        base["LOGNAME"] = user.name
    else:
        base["HOME"] = os.environ.get("HOME", "/")
    if env:
        base.update(env)
    return base


def run(
    argv: Sequence[str],
    *,
    user: OsUser | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    cwd: str | os.PathLike[str] = "/",
) -> CommandResult:
    """Run a command to its end, as ``user``; never raises for a non-zero exit or a timeout.

    ``cwd`` defaults to ``/`` because the database user cannot enter root's home.
    Secrets must travel in ``env``, ``input_text`` or a file, never in ``argv``.
    """
    args = tuple(str(a) for a in argv)
    log.debug("run: %s", " ".join(args))
    switch = _switch_to(user)
    try:
        proc = subprocess.run(
            args,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env_for(user, env),
            cwd=cwd,
            check=False,
            user=switch.uid if switch else None,
            group=switch.gid if switch else None,
            extra_groups=[] if switch else None,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        log.warning("timed out after %ss: %s", timeout, args[0])
        return CommandResult(args, -1, out, err + f"\ntimed out after {timeout:g}s", True)
    except FileNotFoundError:
        return CommandResult(args, 127, "", f"{args[0]}: program not found")
    return CommandResult(args, proc.returncode, proc.stdout, proc.stderr)


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    user: OsUser | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] = "/",
) -> int:
    """Start a daemon in its own session, output appended to ``log_file``; return its PID.

    The PID is the program itself (no wrapper shell), so it can be stopped by PID later.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    switch = _switch_to(user)
    with open(log_file, "ab") as out:
        if switch:
            os.chown(log_file, switch.uid, switch.gid)
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env_for(user, env),
            cwd=cwd,
            start_new_session=True,
            user=switch.uid if switch else None,
            group=switch.gid if switch else None,
            extra_groups=[] if switch else None,
        )
    log.debug("spawned pid %d: %s", proc.pid, argv[0])
    return proc.pid


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces and ``)``).

    Raises OSError or IndexError when it cannot be read.
    """
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def is_alive(pid: int) -> bool:
    """True while ``pid`` or any of its threads runs (a zombie with none left is dead).

    A multi-threaded program (rclone, etcd) that is killed shows its main thread as a
    zombie while the other threads are still exiting and still hold its sockets and
    files: it is alive until the last of them is gone.
    """
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    try:
        state = _stat_fields(pid)[0]
    except (OSError, IndexError):
        return True
    return state != "Z" or _threads_running(pid)


def _threads_running(pid: int) -> bool:
    """Some thread of ``pid`` other than a zombie main thread has not exited yet."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        return False
    for tid in tids:
        try:
            state = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            return True
    return False


def process_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot): tells a PID from its reuse."""
    try:
        fields = _stat_fields(pid)
    except (OSError, IndexError):
        return None
    return int(fields[19])


def _wait_gone(pid: int, seconds: float) -> bool:
    """Poll every 0.1 s, for up to ``seconds``, until ``pid`` is gone. True if it went."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    return False


def stop(pid: int, *, timeout: float = 60.0, sig: int = signal.SIGTERM) -> bool:
    """Signal ``pid`` and wait for it to end; SIGKILL after ``timeout``. True if it ended."""
    if not is_alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if _wait_gone(pid, timeout):
        return True
    log.warning("pid %d did not stop after %ss; killing it", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return _wait_gone(pid, 5.0)
