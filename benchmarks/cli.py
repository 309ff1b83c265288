"""``python -m benchmarks [--quick] [--repeat N] [--sizes MB,MB] …`` (``make bench``)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import phases, profile_report, profiles
from benchmarks.env import Bench, BenchError, log
from benchmarks.report import plot, render_text, summarize
from benchmarks.stats import MB, parse_size, parse_sizes
from pgbackups.adapters import pgbackrest
from pgbackups.adapters.processes import run as run_program

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LIGHT_LOAD_TPS = 5


@dataclass(frozen=True)
class Defaults:
    """What a run does when an option is not given (--quick or the full suite)."""

    sizes: str
    repeat: int
    load_seconds: float
    light_load_seconds: float


QUICK = Defaults(sizes="30,60", repeat=1, load_seconds=20.0, light_load_seconds=75.0)
FULL = Defaults(sizes="150,500", repeat=3, load_seconds=60.0, light_load_seconds=150.0)


@dataclass(frozen=True)
class Settings:
    quick: bool
    sizes: list[int]  # bytes, ascending; the largest gets every measurement
    repeat: int
    list_backups: int
    load_seconds: float
    light_load_seconds: float
    barman: bool
    settings_matrix: bool
    keep: bool
    results_dir: Path
    cluster_units: int = 3
    profiles: list[str] = field(default_factory=lambda: [p.name for p in profiles.PROFILES])
    profiles_only: bool = False
    home: Path | None = None
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Measure pgbackups against pgBackRest alone and barman-cloud on a local cluster "
            "named 'bench' in its own PGBACKUPS_HOME. Every speed is a ratio against a "
            "baseline measured in the same run. Runs as root; takes minutes (--quick: <10)."
        ),
    )
    p.add_argument("--quick", action="store_true", help="CI-sized: 30 and 60 MB, 1 repetition")
    p.add_argument("--repeat", type=int, metavar="N", help="repetitions (median); default 3")
    p.add_argument(
        "--size",
        metavar="SIZE",
        help="database size of the main measurements (default 500MB; --quick 60MB)",
    )
    p.add_argument(
        "--sizes",
        metavar="SIZE,SIZE",
        help="database sizes for throughput by size (default 150,500; --quick 30,60)",
    )
    p.add_argument(
        "--list-backups",
        type=int,
        default=3000,
        metavar="N",
        help="backups in the repository for the list-backups timing (default 3000: a "
        "month of nightly fulls and 15-minute incrementals, with a month of WAL)",
    )
    p.add_argument("--load-seconds", type=float, help="pgbench load for the loss window")
    p.add_argument(
        "--light-load-seconds",
        type=float,
        help=f"rate-limited pgbench ({LIGHT_LOAD_TPS} tps), archive_timeout's case; 0 skips",
    )
    p.add_argument("--no-barman", action="store_true", help="skip barman-cloud-backup")
    p.add_argument(
        "--no-settings", action="store_true", help="skip the compression/process-max matrix"
    )
    p.add_argument(
        "--cluster-units",
        type=int,
        default=3,
        metavar="N",
        help="units for the cluster restore (until every replica streams; last, on the "
        "largest size); default 3, 0 skips",
    )
    p.add_argument(
        "--profiles",
        default=",".join(p.name for p in profiles.PROFILES),
        metavar="NAMES",
        help="network profiles to run, comma-separated (default lan,region,wan; '' skips): "
        "S3 behind an emulated link on a second cluster of machines",
    )
    p.add_argument("--profiles-only", action="store_true", help="only the network profiles phase")
    p.add_argument("--keep", action="store_true", help="leave the cluster up (and its home)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where JSON/PNG go")
    p.add_argument("--home", type=Path, help="PGBACKUPS_HOME (default: a new dir under /tmp)")
    return p


def resolve(args: argparse.Namespace) -> Settings:
    """Arguments → settings, quick-mode defaults filled in; raises ValueError."""
    base = QUICK if args.quick else FULL
    sizes = parse_sizes(args.sizes or base.sizes)
    if args.size:
        main = parse_size(args.size)
        sizes = sorted({s for s in sizes if s < main} | {main})
    repeat = args.repeat if args.repeat is not None else base.repeat
    if repeat < 1:
        raise ValueError("--repeat must be at least 1")
    if args.list_backups < 3:
        raise ValueError("--list-backups must be at least 3")
    load = args.load_seconds if args.load_seconds is not None else base.load_seconds
    light = (
        args.light_load_seconds if args.light_load_seconds is not None else base.light_load_seconds
    )
    if args.cluster_units == 1 or args.cluster_units < 0:
        raise ValueError("--cluster-units must be 0 (skip) or at least 2")
    if load < 5 or light < 0:
        raise ValueError("--load-seconds must be >= 5 and --light-load-seconds >= 0")
    chosen = [p.name for p in profiles.by_name(args.profiles)] if args.profiles else []
    if args.profiles_only and not chosen:
        raise ValueError("--profiles-only needs at least one profile")
    return Settings(
        profiles=chosen,
        profiles_only=args.profiles_only,
        quick=args.quick,
        sizes=sizes,
        repeat=repeat,
        list_backups=args.list_backups,
        load_seconds=load,
        light_load_seconds=light,
        barman=not args.no_barman,
        settings_matrix=not args.no_settings,
        keep=args.keep,
        results_dir=args.results_dir,
        cluster_units=args.cluster_units,
        home=args.home,
    )


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return resolve(args)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: error() exits


def preflight(settings: Settings) -> list[str]:
    """What is missing to run (empty when ready)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root: servers run as the postgres user (sudo make bench)")
    for program in ("pgbackrest", "etcd", "patroni"):
        if shutil.which(program) is None:
            problems.append(f"{program} is not installed (make setup)")
    if settings.barman and shutil.which("barman-cloud-backup") is None:
        problems.append("barman-cloud-backup is missing: make bench-setup (or --no-barman)")
    return problems


def machine() -> dict[str, Any]:
    features = pgbackrest.detect_features()
    pg = run_program(["/usr/lib/postgresql/15/bin/postgres", "--version"]).stdout.strip()
    barman = run_program(["barman-cloud-backup", "--version"]).stdout.strip()
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pgbackrest": ".".join(str(x) for x in features.version),
        "block_incremental": features.block_incremental,
        "postgresql": pg,
        "barman_cloud": barman or None,
    }


def rendered_defaults(bench: Bench) -> dict[str, Any]:
    """The options pgbackups rendered for this machine, as the benchmark ran them."""
    wanted = (
        "compress-type",
        "process-max",
        "repo1-bundle",
        "repo1-block",
        "archive-async",
        "archive-push-queue-max",
    )
    found: dict[str, Any] = {}
    section = ""
    for line in bench.config_path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        key, sep, value = line.partition("=")
        if sep and key in wanted:
            name = key if section in ("global",) else f"{section}/{key}"
            found[name] = value
    found["archive_timeout"] = str(bench.sql("show archive_timeout")[0][0])
    return found


def run(settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
        },
        "machine": machine(),
    }
    if not settings.profiles_only:
        run_loopback(settings, results)
    if settings.profiles:
        results["network"] = profiles.run(
            profiles.by_name(",".join(settings.profiles)),
            size=settings.sizes[-1],
            repeat=settings.repeat,
            barman=settings.barman,
            load_seconds=settings.load_seconds,
            keep=settings.keep,
        )
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def run_loopback(settings: Settings, results: dict[str, Any]) -> None:
    """The loopback measurements on the ``bench`` cluster (everything but the profiles)."""
    bench = Bench(settings.home)
    log(f"PGBACKUPS_HOME={bench.home}")
    try:
        bench.up()
        results["defaults"] = rendered_defaults(bench)
        log(f"rendered defaults: {results['defaults']}")
        log(f"list-backups: {settings.list_backups} backups")
        results["list_backups"] = phases.measure_list_backups(
            bench, settings.list_backups, settings.repeat
        )
        # On the tiny database the list-backups phase leaves: the fixed costs alone.
        log("fixed cost per create-backup (tiny incrementals)")
        results["fixed_cost"] = phases.measure_fixed_cost(bench, max(5, settings.repeat)).values
        log("pgbackups --help and status --json")
        results["cli"] = phases.measure_cli(bench, 10).values
        results["sizes"] = []
        for index, size in enumerate(settings.sizes):
            largest = index == len(settings.sizes) - 1
            log(f"generating about {size / MB:.0f} MB")
            data = phases.generate_data(bench, size)
            log(f"database: {data['database_bytes'] / MB:.0f} MB")
            kinds = ("full", "diff", "incr") if largest else ("full",)
            backups, full_id = phases.measure_backups(
                bench, settings.repeat, kinds=kinds, barman=settings.barman
            )
            restores = phases.measure_restores(bench, settings.repeat, full_id)
            results["sizes"].append(
                {
                    "target_bytes": size,
                    "data": data,
                    "backups": backups.values,
                    "backup_extra": backups.extra,
                    "restores": restores.values,
                }
            )
        if settings.settings_matrix:
            matrix = phases.measure_settings(bench, settings.repeat, settings.cpus)
            results["settings_matrix"] = {
                "cpus": settings.cpus,
                "values": matrix.values,
                "extra": matrix.extra,
            }
        results["loss_window"] = {}
        log(f"loss window: pgbench at full speed for {settings.load_seconds:g}s")
        results["loss_window"]["full speed"] = phases.measure_loss_window(
            bench, settings.load_seconds, None
        )
        if settings.light_load_seconds:
            log(
                f"loss window: pgbench at {LIGHT_LOAD_TPS} tps for {settings.light_load_seconds:g}s"
            )
            results["loss_window"][f"{LIGHT_LOAD_TPS} tps"] = phases.measure_loss_window(
                bench, settings.light_load_seconds, LIGHT_LOAD_TPS
            )
        results["archiver"] = bench.archiver()
        if settings.cluster_units and settings.sizes:
            # Last: it adds units, which nothing before expects. On the largest size's data.
            log(f"restore of {settings.cluster_units} units, until every replica streams")
            cluster = phases.measure_cluster_restores(
                bench, settings.cluster_units, settings.repeat
            )
            results["cluster_restore"] = {"values": cluster.values, **cluster.extra}
    except (BenchError, OSError, KeyError, ValueError) as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    finally:
        if settings.keep:
            log(f"--keep: cluster left up; stop it: PGBACKUPS_HOME={bench.home} "
                "pgbackups down --name bench --purge")  # fmt: skip
        else:
            bench.down()


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    problems = preflight(settings)
    if problems:
        for problem in problems:
            print(f"benchmarks: {problem}", file=sys.stderr)
        return 2
    results = run(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    try:
        if not settings.profiles_only:
            results["summary"] = summarize(results)
        if "network" in results:
            results["network_summary"] = profile_report.summarize(results["network"])
    except (KeyError, ValueError, TypeError) as exc:  # a partial run: keep the raw data
        results["summary_error"] = repr(exc)
    json_path = settings.results_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    if "summary" in results:
        print(render_text(results["summary"], settings.repeat))
        png = plot(results["summary"], settings.results_dir / f"{stamp}.png")
        skipped = "skipped (no sizes measured, or no matplotlib: pip install -e '.[bench]')"
        print(f"\nplot: {png or skipped}")
    if "network_summary" in results:
        print(profile_report.render_text(results["network_summary"]))
    print(f"results: {json_path}")
    failed = [results.get("error"), (results.get("network") or {}).get("error")]
    if any(failed):
        print(f"benchmarks: FAILED: {'; '.join(f for f in failed if f)}", file=sys.stderr)
        return 1
    return 0
