"""Network profiles: the same backups and restores with S3 behind an emulated link.

A cluster of its own (``benchnet``, one unit) runs as machines (network namespaces,
``local/machinery/netns.py``): the unit and the S3 server are two machines on one
switch, and the S3 machine's link gets a profile:

- the rate is a kernel token bucket (``tbf``) on both ends of the link;
- the round trip is ``benchmarks/linkemu.py``, a relay on the S3 machine in front of
  rclone (this kernel has no ``netem``; see that module for what the relay models).

Every command of the measurement runs from the unit's machine (pgBackRest, barman-cloud,
the ``pgbackups`` CLI, which itself reaches the unit and S3 as the workstation does), so
every byte to or from S3 crosses the profile. For each profile: full, differential and
incremental backups through pgbackups and pgBackRest alone, barman-cloud's full backup
with each compression it offers and two parallelisms (its best is the baseline of the
targets), a restore through each, and at ``region`` the loss window under full-speed
pgbench (does the asynchronous archive queue keep up?).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import phases
from benchmarks.env import Bench, BenchError, log, now
from benchmarks.stats import median
from pgbackups.adapters import processes
from pgbackups.local.errors import PgbackupsError
from pgbackups.local.machinery import netns, s3server

NAME = "benchnet"
LINKEMU = Path(__file__).resolve().parent / "linkemu.py"  # stdlib only: runs as a script


@dataclass(frozen=True)
class Profile:
    name: str
    rate: str  # a tc rate
    rate_bits: int
    rtt_ms: float

    @property
    def burst(self) -> str:
        """tbf's bucket: 4 ms of the rate (at least 32 kbit). Smaller buckets cap a fast
        link below its rate (the refill comes in timer steps)."""
        return f"{max(32, self.rate_bits // 250_000)}kbit"

    def describe(self) -> str:
        return f"{self.rate}, {self.rtt_ms:g} ms RTT"


PROFILES = (
    Profile("lan", "10gbit", 10_000_000_000, 0.2),
    Profile("region", "1gbit", 1_000_000_000, 5.0),
    Profile("wan", "200mbit", 200_000_000, 40.0),
)

# barman-cloud's settings tried per profile: its compressions at -J = CPUs, then the
# best of them with twice the parallelism (a long round trip favours more connections).
BARMAN_COMPRESSIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "gzip": ("--gzip",),
    "bzip2": ("--bzip2",),
}


# pgBackRest alone with one setting changed per profile (a full backup each), against
# its full backup with the rendered defaults (zst, process-max = CPUs): a long round
# trip may want more processes (requests in flight) or a cheaper compression.
PGBACKREST_SETTINGS: dict[str, tuple[str, ...]] = {
    "process-max 4": ("--process-max=4",),
    "process-max 8": ("--process-max=8",),
    "lz4, process-max 4": ("--compress-type=lz4", "--process-max=4"),
}


def by_name(names: str) -> list[Profile]:
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {p.name: p for p in PROFILES}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown profile(s) {', '.join(unknown)}: {', '.join(known)}")
    return [known[n] for n in wanted]


class Link:
    """The S3 machine's link under a profile: tbf on both ends, the relay in front of
    rclone (which runs on the S3 machine's loopback for the whole phase)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.relay_pid: int | None = None
        self.shaped = False
        self.moved = False  # rclone on the S3 machine's loopback

    def behind_relay(self, on: bool) -> None:
        self.bench.cluster.restart_s3(behind_relay=on)
        self.moved = on

    def apply(self, profile: Profile) -> None:
        cluster = self.bench.cluster
        self.shaped = True
        cluster.shape(netns.S3, rate=profile.rate, burst=profile.burst)
        state = cluster.state()
        host = cluster.facts.address(netns.S3, state)
        argv = [
            sys.executable, str(LINKEMU),
            "--listen", f"{host}:{state.s3_port}",
            "--upstream", f"127.0.0.1:{state.s3_port}",
            "--rtt-ms", f"{profile.rtt_ms:g}",
        ]  # fmt: skip
        with cluster.facts.inside(netns.S3):
            # As root, like the benchmark: it only relays bytes (TLS and S3's
            # authentication pass through it untouched).
            self.relay_pid = processes.spawn(
                argv, log_file=self.bench.home / f"linkemu-{profile.name}.log"
            )
        deadline = now() + 30
        # A TLS handshake with rclone through the relay, from this thread's machine.
        while not s3server.is_ready(
            state.s3_port, cluster.paths.ca_cert, host=host, server_name=cluster.s3().host
        ):
            if now() > deadline:
                raise BenchError(f"the link emulator for {profile.name} did not come up")
            time.sleep(0.1)

    def remove(self) -> None:
        if self.relay_pid is not None:
            processes.stop(self.relay_pid, timeout=30)
            self.relay_pid = None
        if self.shaped:
            self.bench.cluster.unshape(netns.S3)
            self.shaped = False


@contextmanager
def on_unit(bench: Bench) -> Iterator[None]:
    """This thread on the unit's machine: what it starts talks to S3 across the link."""
    with bench.cluster.facts.inside(bench.unit.machine):
        yield


def measure_barman(bench: Bench, repeat: int, cpus: int) -> dict[str, Any]:
    """barman-cloud's full backup per setting; the best (median) of them and its size."""
    seconds: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for name, options in BARMAN_COMPRESSIONS.items():
        for _ in range(repeat):
            bench.wait_archived()
            took, stored = phases.backup_barman(bench, name, *options, jobs=cpus)
            seconds.setdefault(f"{name} -J{cpus}", []).append(round(took, 3))
            sizes[f"{name} -J{cpus}"] = stored
            log(f"barman-cloud {name} -J{cpus}: {took:.2f}s, {stored / 1e6:.1f} MB")
    best_compression = min(BARMAN_COMPRESSIONS, key=lambda n: median(seconds[f"{n} -J{cpus}"]))
    jobs = 2 * cpus
    for _ in range(repeat):
        bench.wait_archived()
        took, stored = phases.backup_barman(
            bench, best_compression, *BARMAN_COMPRESSIONS[best_compression], jobs=jobs
        )
        seconds.setdefault(f"{best_compression} -J{jobs}", []).append(round(took, 3))
        sizes[f"{best_compression} -J{jobs}"] = stored
        log(f"barman-cloud {best_compression} -J{jobs}: {took:.2f}s")
    best = min(seconds, key=lambda k: median(seconds[k]))
    return {"seconds": seconds, "sizes": sizes, "best": best}


def measure_profile(
    bench: Bench, profile: Profile, repeat: int, *, barman: bool, load_seconds: float | None
) -> dict[str, Any]:
    started = now()
    backups, full_id = phases.measure_backups(
        bench, repeat, kinds=("full", "diff", "incr"), barman=False
    )
    result: dict[str, Any] = {
        "profile": {"rate": profile.rate, "rtt_ms": profile.rtt_ms, "burst": profile.burst},
        "backups": backups.values,
        "backup_extra": backups.extra,
    }
    if barman:
        result["barman"] = measure_barman(bench, repeat, os.cpu_count() or 1)
    settings: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name, options in PGBACKREST_SETTINGS.items():
            bench.wait_archived()
            took = phases.backup_direct(bench, "full", *options)
            settings.setdefault(name, []).append(round(took, 3))
            log(f"pgBackRest alone, full, {name}: {took:.2f}s")
    result["pgbackrest_settings"] = settings
    result["restores"] = phases.measure_restores(bench, repeat, full_id).values
    if load_seconds:
        log(f"{profile.name}: loss window under full-speed pgbench for {load_seconds:g}s")
        result["loss_window"] = phases.measure_loss_window(bench, load_seconds, None)
    result["seconds"] = round(now() - started, 1)
    return result


def run(
    profiles: list[Profile],
    *,
    size: int,
    repeat: int,
    barman: bool,
    load_seconds: float,
    keep: bool,
) -> dict[str, Any]:
    """The profiles phase with its own cluster on machines; stops it afterwards."""
    results: dict[str, Any] = {"profiles": {}, "size_target": size}
    bench = Bench(name=NAME, machines=True)
    log(f"profiles: PGBACKUPS_HOME={bench.home}")
    link = Link(bench)
    try:
        bench.up()
        with on_unit(bench):
            data = phases.generate_data(bench, size)
            results["data"] = data
            log(f"profiles: database {data['database_bytes'] / 1e6:.0f} MB")
            link.behind_relay(True)
            for profile in profiles:
                log(f"profile {profile.name}: {profile.describe()}")
                link.apply(profile)
                try:
                    results["profiles"][profile.name] = measure_profile(
                        bench,
                        profile,
                        repeat,
                        barman=barman,
                        load_seconds=load_seconds if profile.name == "region" else None,
                    )
                finally:
                    link.remove()
    except (BenchError, OSError, KeyError, ValueError, PgbackupsError) as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"profiles failed: {results['error']}")
    finally:
        try:
            link.remove()
            if link.moved:  # S3 back where the units reach it: down stops it cleanly
                link.behind_relay(False)
        except (BenchError, OSError, PgbackupsError) as exc:
            log(f"profiles: the link could not be put back: {exc}")
        if keep:
            log(f"--keep: {NAME} left up; PGBACKUPS_HOME={bench.home}")
        else:
            bench.down()
    return results
