"""Running programs as the database user: commands with timeouts, daemons by PID.

PostgreSQL and pgBackRest refuse to run as root, so when pgbackups runs as root every
server and every pgBackRest command runs as the ``postgres`` OS user; otherwise as the
current user. Commands always have a timeout and captured output; daemons are started
in their own session and stopped by the PID recorded when they were started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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


def _run_bytes(
    args: tuple[str, ...],
    *,
    user: OsUser | None,
    timeout: float,
    env: Mapping[str, str] | None,
    input_bytes: bytes | None,
    cwd: str | os.PathLike[str],
) -> tuple[int, bytes, bytes, bool]:
    """The one place a command is run to its end: (exit code, stdout, stderr, timed out);
    127 when the program is missing. Never raises for a non-zero exit or a timeout."""
    switch = _switch_to(user)
    try:
        proc = subprocess.run(
            args,
            input=input_bytes,
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=_env_for(user, env),
            cwd=cwd,
            check=False,
            user=switch.uid if switch else None,
            group=switch.gid if switch else None,
            extra_groups=[] if switch else None,
        )
    except subprocess.TimeoutExpired as exc:
        log.warning("timed out after %ss: %s", timeout, args[0])
        out = exc.stdout if isinstance(exc.stdout, bytes) else b""
        err = exc.stderr if isinstance(exc.stderr, bytes) else b""
        return -1, out, err + f"\ntimed out after {timeout:g}s".encode(), True
    except FileNotFoundError:
        return 127, b"", f"{args[0]}: program not found".encode(), False
    return proc.returncode, proc.stdout, proc.stderr, False


def _text(data: bytes) -> str:
    # pgBackRest echoes what a wrong passphrase decrypted to: bytes that are no UTF-8
    # must not turn a failed command into a traceback.
    return data.decode(errors="replace")


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
    code, out, err, timed_out = _run_bytes(
        args,
        user=user,
        timeout=timeout,
        env=env,
        input_bytes=input_text.encode() if input_text is not None else None,
        cwd=cwd,
    )
    return CommandResult(args, code, _text(out), _text(err), timed_out)


@dataclass(frozen=True)
class BinaryResult:
    """A finished command whose output is bytes (an archived WAL segment, decompressed)."""

    returncode: int
    stdout: bytes
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_binary(
    argv: Sequence[str],
    *,
    user: OsUser | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
) -> BinaryResult:
    """:func:`run` for a command whose output (and input) is binary; never raises for a
    non-zero exit or a timeout."""
    args = tuple(str(a) for a in argv)
    log.debug("run (binary): %s", " ".join(args))
    code, out, err, timed_out = _run_bytes(
        args, user=user, timeout=timeout, env=env, input_bytes=input_bytes, cwd="/"
    )
    return BinaryResult(code, out, _text(err), timed_out)


def run_watched(
    argv: Sequence[str],
    *,
    give_up: Callable[[], str | None],
    every: float,
    user: OsUser | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] = "/",
) -> CommandResult:
    """:func:`run`, asking ``give_up()`` every ``every`` seconds while the command runs:
    when it answers a reason, the command gets SIGTERM (SIGKILL 30 s later) and the
    result is a failure whose stderr ends with that reason. A long command whose outside
    world is gone (a backup whose S3 died) then ends in seconds, not after its own
    retries."""
    args = tuple(str(a) for a in argv)
    log.debug("run (watched): %s", " ".join(args))
    switch = _switch_to(user)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # pgBackRest echoes what a wrong passphrase decrypted to: bytes that are no
            # UTF-8 must not turn a failed command into a traceback.
            errors="replace",
            env=_env_for(user, env),
            cwd=cwd,
            user=switch.uid if switch else None,
            group=switch.gid if switch else None,
            extra_groups=[] if switch else None,
        )
    except FileNotFoundError:
        return CommandResult(args, 127, "", f"{args[0]}: program not found")
    deadline = time.monotonic() + timeout
    reason = ""
    timed_out = False
    while True:
        try:
            out, err = proc.communicate(timeout=max(0.01, min(every, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            timed_out, reason = True, f"timed out after {timeout:g}s"
        else:
            reason = give_up() or ""
        if reason:
            log.warning("stopping %s: %s", args[0], reason)
            proc.terminate()
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            break
    rc = proc.returncode if not reason else (proc.returncode or -1)
    return CommandResult(args, rc, out, err + (f"\n{reason}" if reason else ""), timed_out)


# A daemon run as the database user opens its own log: the log's folder is that user's,
# and root opening (or creating, or chowning) a name there could be sent anywhere by a
# link. ``sh`` opens the log after the switch to the user, then replaces itself with the
# program (exec), so the PID returned is still the program's.
_OPEN_LOG_THEN_EXEC = 'log=$1; shift; umask 027; exec "$@" >>"$log" 2>&1'


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    user: OsUser | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] = "/",
) -> int:
    """Start a daemon in its own session, output appended to ``log_file``; return its PID.

    The PID is the program itself (the shell that opens the log as ``user`` execs it),
    so it can be stopped by PID later. The log's folder must exist; a new log is 0640.
    """
    switch = _switch_to(user)
    args = [str(a) for a in argv]
    if switch:
        popen_args = ["/bin/sh", "-c", _OPEN_LOG_THEN_EXEC, "pgbackups-spawn", str(log_file)]
        proc = subprocess.Popen(
            [*popen_args, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env_for(user, env),
            cwd=cwd,
            start_new_session=True,
            user=switch.uid,
            group=switch.gid,
            extra_groups=[],
        )
    else:
        # Our own folder (we are the database user): still no link is followed.
        fd = os.open(
            log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640
        )
        with os.fdopen(fd, "ab") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env_for(user, env),
                cwd=cwd,
                start_new_session=True,
            )
    # Reaped here when it ends, by a thread of ours: a long-lived caller (the cluster's
    # agent, a benchmark) would otherwise keep it a zombie, which another program that
    # waits for it to end cannot reap, and waits on for ever (Patroni stopping a
    # PostgreSQL it took over: a restore's, started here). A caller that ends first
    # leaves it to init, as before.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    log.debug("spawned pid %d: %s", proc.pid, args[0])
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


# --- what a daemon leaves behind ----------------------------------------------------
#
# A daemon spawned above leads its own session, and whatever it starts stays in that
# session even when the daemon dies and the kernel hands its children to PID 1 (a
# restore's pgBackRest under a Patroni that was killed). Stopping the daemon therefore
# means stopping its session; and a program that left the session (a detached
# pgBackRest async worker) is still found by what it has open under the cluster's
# directories. Every signal goes to a (PID, kernel start time) pair seen in /proc and
# checked again just before the signal, so a PID reused meanwhile is never signalled.


@dataclass(frozen=True)
class ProcessInfo:
    """A process seen in /proc: enough to tell it from a later one with the same PID."""

    pid: int
    start_time: int
    ppid: int
    session: int
    uid: int
    has_terminal: bool
    argv: tuple[str, ...]
    why: str = ""  # what ties it to a directory (processes_using)

    def describe(self) -> str:
        command = " ".join(self.argv)[:120] or "?"
        return f"pid {self.pid} ({command})" + (f": {self.why}" if self.why else "")

    def is_same(self) -> bool:
        """Still alive and still the process that was seen (not a reused PID)."""
        return is_alive(self.pid) and process_start_time(self.pid) == self.start_time


def process_info(pid: int) -> ProcessInfo | None:
    """What /proc says about ``pid`` now; None when it is gone or a zombie."""
    try:
        fields = _stat_fields(pid)
        uid = os.stat(f"/proc/{pid}").st_uid
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    start, ppid, session, tty = int(fields[19]), int(fields[1]), int(fields[3]), int(fields[4])
    return ProcessInfo(pid, start, ppid, session, uid, tty != 0, argv)


def _all_pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def session_members(session: int, *, started_since: int | None) -> list[ProcessInfo]:
    """The processes of session ``session`` other than its leader that started at or
    after ``started_since`` (the leader's recorded start: its children cannot be older)."""
    found = []
    for pid in _all_pids():
        if pid == session:
            continue
        info = process_info(pid)
        if info is None or info.session != session:
            continue
        if started_since is not None and info.start_time < started_since:
            continue
        found.append(info)
    return found


def _under(path: str, directory: str) -> bool:
    path = path.removesuffix(" (deleted)")
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _why_using(pid: int, directory: str, argv: Sequence[str]) -> str:
    """The first tie of ``pid`` to ``directory``: its cwd, an open file, an argument."""
    with contextlib.suppress(OSError):
        if _under(os.readlink(f"/proc/{pid}/cwd"), directory):
            return "working directory"
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if _under(target, directory):
                    return f"open file {target}"
    for arg in argv:
        # "--pg1-path=/dir" or "-D /dir" or a plain path
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value.startswith("/") and _under(os.path.normpath(value), directory):
            return f"argument {arg}"
    return ""


def processes_using(directory: str | os.PathLike[str]) -> list[ProcessInfo]:
    """Every process (but this one) whose working directory, an open file, or a path in
    its arguments is ``directory`` or under it. Only reads /proc.

    For "does anything still write into this data directory?" this is the one call:
    ``if processes.processes_using(data_dir): refuse``.
    """
    target = os.path.realpath(directory)
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        info = process_info(pid)
        if info is None:
            continue
        why = _why_using(pid, target, info.argv)
        if why:
            found.append(dataclasses.replace(info, why=why))
    return found


def stop_processes(
    procs: Sequence[ProcessInfo], *, timeout: float = 30.0, sig: int = signal.SIGTERM
) -> list[ProcessInfo]:
    """Signal each process that is still the one seen, wait up to ``timeout`` for them
    all, then SIGKILL what is left. Returns those that were signalled."""
    signalled = []
    for info in procs:
        if not info.is_same():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, sig)
            signalled.append(info)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(p.pid) for p in signalled):
        time.sleep(0.1)
    for info in signalled:
        if info.is_same():
            log.warning("%s did not stop after %ss; killing it", info.describe(), timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
    for info in signalled:
        _wait_gone(info.pid, 5.0)
    return signalled


def stop_session(
    pid: int,
    start_time: int | None,
    *,
    timeout: float = 60.0,
    sig: int = signal.SIGTERM,
    rest_timeout: float = 30.0,
) -> tuple[bool, list[ProcessInfo]]:
    """Stop a daemon started by :func:`spawn` and everything still in its session.

    The daemon (``pid`` with the recorded ``start_time``) gets ``sig`` first and
    ``timeout`` seconds, so that it can stop its own children in order; what is left of
    its session then gets SIGTERM, and SIGKILL after ``rest_timeout``. This also runs when
    the daemon is already dead: its orphans are still in its session. When ``pid`` is now
    another process (a reused PID), nothing is signalled: that session is not ours.

    Returns (nothing of it runs any more, the other processes that were signalled).
    """
    if is_alive(pid) and process_start_time(pid) != start_time:
        log.warning("pid %d is another process now; not stopping it or its session", pid)
        return True, []
    ok = stop(pid, timeout=timeout, sig=sig) if is_alive(pid) else True
    rest = session_members(pid, started_since=start_time)
    stopped = stop_processes(rest, timeout=rest_timeout)
    return ok and not any(p.is_same() for p in rest), stopped
