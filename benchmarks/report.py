"""From raw samples to the summary (medians and ratios), the table and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.stats import (
    MB,
    fmt_ratio,
    fmt_seconds,
    median,
    percentile,
    ratio,
    render_table,
    throughput,
)

LEGEND = {
    "pgbackups": "pgbackups run",
    "direct": "pgBackRest alone",
    "barman": "barman-cloud-backup",
}


def _med(samples: dict[str, list[float]], key: str) -> float | None:
    values = samples.get(key)
    return median(values) if values else None


def _row(
    section: str, label: str, value: float | None, base: float | None, baseline: str
) -> dict[str, Any]:
    return {
        "section": section,
        "measure": label,
        "baseline": baseline,
        "value_s": None if value is None else round(value, 3),
        "baseline_s": None if base is None else round(base, 3),
        "ratio": None if ratio(value, base) is None else round(ratio(value, base) or 0, 3),
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios and throughput from the raw results (pure)."""
    rows: list[dict[str, Any]] = []
    sizes = results.get("sizes") or []
    if sizes:
        top = sizes[-1]
        b, r = top["backups"], top["restores"]
        mb = round(top["data"]["database_bytes"] / MB)
        for kind, name in (("full", "full"), ("diff", "differential"), ("incr", "incremental")):
            if f"{kind}:pgbackups" in b:
                rows.append(
                    _row(
                        "overhead",
                        f"pgbackups create-backup {name} ({mb} MB db)",
                        _med(b, f"{kind}:pgbackups"),
                        _med(b, f"{kind}:direct"),
                        f"pgbackrest backup --type={kind}",
                    )
                )
        rows.append(
            _row(
                "overhead",
                f"pgbackups restore --wait, until writable ({mb} MB db)",
                _med(r, "restore:pgbackups"),
                _med(r, "restore:direct"),
                "pgbackrest restore + postgres, until writable",
            )
        )
        if "full:barman" in b:
            rows.append(
                _row(
                    "vs barman-cloud",
                    f"pgbackups create-backup full ({mb} MB db)",
                    _med(b, "full:pgbackups"),
                    _med(b, "full:barman"),
                    "barman-cloud-backup (no compression)",
                )
            )
            rows.append(
                _row(
                    "vs barman-cloud",
                    f"pgbackrest backup full ({mb} MB db)",
                    _med(b, "full:direct"),
                    _med(b, "full:barman"),
                    "barman-cloud-backup (no compression)",
                )
            )
        cluster = results.get("cluster_restore")
        if cluster:
            n = cluster["units"]
            rows.append(
                _row(
                    "overhead",
                    f"{CLUSTER_RESTORE_MEASURE}{n} units, until every replica streams ({mb} MB db)",
                    _med(cluster["values"], "cluster-restore:pgbackups"),
                    _med(cluster["values"], "cluster-restore:direct"),
                    f"{n} bare restores side by side, until all writable",
                )
            )
    listing = results.get("list_backups")
    if listing:
        n = listing["backups"]
        rows.append(
            _row(
                "list-backups",
                f"pgbackups list-backups, {n} backups",
                _med(listing["many"], "list:pgbackups"),
                _med(listing["many"], "list:info"),
                f"pgbackrest info --output=json, {n} backups",
            )
        )
        rows.append(
            _row(
                "list-backups",
                f"pgbackups list-backups, {n} backups",
                _med(listing["many"], "list:pgbackups"),
                _med(listing["few"], "list:pgbackups"),
                f"the same with {listing['real_backups']} backups",
            )
        )
        rows.append(
            _row(
                "list-backups",
                f"pgbackups list-backups, {n} backups",
                _med(listing["many"], "list:pgbackups"),
                _med(listing["many"], "list:floor"),
                "pgbackrest info + repo-ls of the archive (its floor)",
            )
        )
    fixed = results.get("fixed_cost")
    if fixed:
        rows.append(
            _row(
                "fixed cost",
                "pgbackups create-backup incremental (tiny db)",
                _med(fixed, "fixed:pgbackups"),
                _med(fixed, "fixed:direct"),
                "pgbackrest backup --type=incr",
            )
        )
    cli = results.get("cli")
    if cli:
        for name, label in (("help", "pgbackups --help"), ("status", "pgbackups status --json")):
            rows.append(
                _row(
                    "command start",
                    label,
                    _med(cli, f"cli:{name}"),
                    _med(cli, "cli:python"),
                    "python -c pass",
                )
            )
    matrix = results.get("settings_matrix")
    if matrix:
        v = matrix["values"]
        p = matrix["cpus"]
        pairs = [
            ("gz p=1", "zst p=1"),
            ("lz4 p=1", "zst p=1"),
            (f"gz p={p}", f"zst p={p}"),
            (f"lz4 p={p}", f"zst p={p}"),
            (f"none p={p}", f"zst p={p}"),
            ("zst p=1", f"zst p={p}"),
            (f"zst p={p} no bundle", f"zst p={p}"),
        ]
        for measured, base in pairs:
            rows.append(
                _row(
                    "settings (pgbackrest backup full)",
                    measured,
                    _med(v, f"backup:{measured}"),
                    _med(v, f"backup:{base}"),
                    base,
                )
            )
        rows.append(
            _row(
                "settings (pgbackrest restore, files only)",
                "restore process-max=1",
                _med(v, "restore:p=1"),
                _med(v, f"restore:p={p}"),
                f"restore process-max={p}",
            )
        )
    repo_sizes: dict[str, float] = {}
    if matrix:
        for key, values in matrix["extra"].items():
            if key.startswith("repo_size:"):
                repo_sizes[key.split(":", 1)[1]] = round(median(values) / MB, 1)
    scaling = []
    for entry in sizes:
        b, r = entry["backups"], entry["restores"]
        size = median(entry["backup_extra"]["full_size"])
        point: dict[str, Any] = {"database_mb": round(size / MB, 1)}
        for key in ("full:pgbackups", "full:direct", "full:barman"):
            if key in b:
                point[f"backup {key.split(':')[1]} MB/s"] = _tp(size, _med(b, key))
        for key in ("restore:pgbackups", "restore:direct"):
            if key in r:
                point[f"restore {key.split(':')[1]} MB/s"] = _tp(size, _med(r, key))
        repo = entry["backup_extra"].get("full_repo_size")
        if repo:
            point["pgbackrest repo MB"] = round(median(repo) / MB, 1)
        barman_repo = entry["backup_extra"].get("barman_repo_size")
        if barman_repo:
            point["barman repo MB"] = round(median(barman_repo) / MB, 1)
        scaling.append(point)
    loss: dict[str, Any] = {}
    for name, run in (results.get("loss_window") or {}).items():
        ages = run["ages"]
        loss[name] = {
            "samples": len(ages),
            "median_s": round(median(ages), 2) if ages else None,
            "p95_s": round(percentile(ages, 0.95), 2) if ages else None,
            "max_s": round(max(ages), 2) if ages else None,
            "max_ready_segments": max(run["ready"]) if run["ready"] else 0,
            "tps": run["tps"],
            "wal_mb_per_s": round(run["wal_bytes_per_second"] / MB, 2),
            "archive_timeout": run["archive_timeout"],
            "seconds": run["seconds"],
            "rate_limit_tps": run["rate_limit_tps"],
        }
    return {
        "ratios": rows,
        "targets": targets(results),
        "ratio_targets": ratio_targets(rows),
        "repo_sizes_mb": repo_sizes,
        "scaling": scaling,
        "loss_window": loss,
    }


# Issue 16's targets that do not need a network profile: (what, limit in seconds).
TARGETS = {
    "fixed": ("fixed cost per create-backup (median difference)", 0.3),
    "help": ("pgbackups --help", 0.2),
    "status": ("pgbackups status --json, running cluster", 0.5),
    "list": ("list-backups, a month of backups", 1.0),
}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: the measured seconds, the limit, met or not (pure)."""
    measured: dict[str, float | None] = {}
    fixed = results.get("fixed_cost")
    if fixed:
        ours, direct = _med(fixed, "fixed:pgbackups"), _med(fixed, "fixed:direct")
        measured["fixed"] = None if ours is None or direct is None else ours - direct
    cli = results.get("cli") or {}
    measured["help"] = _med(cli, "cli:help") if cli else None
    measured["status"] = _med(cli, "cli:status") if cli else None
    listing = results.get("list_backups")
    measured["list"] = _med(listing["many"], "list:pgbackups") if listing else None
    out = []
    for key, (what, limit) in TARGETS.items():
        value = measured.get(key)
        if value is None:
            continue
        label = what
        if key == "list" and listing:
            label += f" ({listing['backups']} backups, {listing.get('wal_segments', 0)} WAL)"
        out.append(
            {"target": label, "seconds": round(value, 3), "limit_s": limit, "met": value < limit}
        )
    return out


# Issue 14's restore target, a ratio against the bare restore(s) of the same run. The
# cluster figure has no target of its own in the issue: the one-unit restore's is shown.
RESTORE_RATIO_TARGET = 1.5
# The N-unit restore's row (its measure begins so): issue 14 asks for the figure, and
# sets its 1.5x on the one-unit restore only.
CLUSTER_RESTORE_MEASURE = "pgbackups restore --wait of "


def ratio_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The restore rows' ratios: the one-unit restore against issue 14's 1.5x; the
    N-unit figure is one the issue asks to report, with no target (limit and met None)
    (pure)."""
    out = []
    for row in rows:
        if row["section"] != "overhead" or "restore" not in row["measure"]:
            continue
        if row["ratio"] is None:
            continue
        cluster = row["measure"].startswith(CLUSTER_RESTORE_MEASURE)
        out.append(
            {
                "target": row["measure"],
                "ratio": row["ratio"],
                "limit": None if cluster else RESTORE_RATIO_TARGET,
                "met": None if cluster else row["ratio"] <= RESTORE_RATIO_TARGET,
            }
        )
    return out


def _tp(size: float, seconds: float | None) -> float | None:
    if seconds is None:
        return None
    value = throughput(size, seconds)
    return None if value is None else round(value, 1)


def render_text(summary: dict[str, Any], repeat: int) -> str:
    out = [f"Speed ratios: median of {repeat} run(s); ratio = measure / baseline (< 1 is faster)"]
    out.append(
        render_table(
            ["section", "measure", "baseline", "measure", "baseline", "ratio"],
            [
                [
                    r["section"],
                    r["measure"],
                    r["baseline"],
                    fmt_seconds(r["value_s"]),
                    fmt_seconds(r["baseline_s"]),
                    fmt_ratio(r["ratio"]),
                ]
                for r in summary["ratios"]
            ],
        )
    )
    if summary.get("targets"):
        out.append("\nTargets (issue 16, absolute seconds on this machine):")
        out.append(
            render_table(
                ["target", "measured", "limit", "result"],
                [
                    [
                        t["target"],
                        fmt_seconds(t["seconds"]),
                        fmt_seconds(t["limit_s"]),
                        "met" if t["met"] else "MISSED",
                    ]
                    for t in summary["targets"]
                ],
            )
        )
    if summary.get("ratio_targets"):
        out.append("\nRestore targets (issue 14, ratio against the bare restores of this run):")
        out.append(
            render_table(
                ["restore", "ratio", "target", "result"],
                [
                    [
                        t["target"],
                        fmt_ratio(t["ratio"]),
                        "none" if t["limit"] is None else f"<= {fmt_ratio(t['limit'])}",
                        "reported" if t["met"] is None else "met" if t["met"] else "MISSED",
                    ]
                    for t in summary["ratio_targets"]
                ],
            )
        )
    if summary["repo_sizes_mb"]:
        out.append("\nRepository size of one full backup (MB):")
        out.append(
            render_table(
                ["settings", "repo MB"],
                [[k, f"{v:.1f}"] for k, v in summary["repo_sizes_mb"].items()],
            )
        )
    if summary["scaling"]:
        keys: list[str] = []
        for point in summary["scaling"]:
            keys += [k for k in point if k not in keys]
        out.append("\nThroughput by database size (MB/s = database size / wall time):")
        out.append(
            render_table(
                keys,
                [
                    ["n/a" if p.get(k) is None else str(p.get(k)) for k in keys]
                    for p in summary["scaling"]
                ],
            )
        )
    if summary["loss_window"]:
        out.append("\nLoss window: now() - pg_stat_archiver.last_archived_time at random moments:")
        out.append(
            render_table(
                ["load", "tps", "WAL MB/s", "samples", "median", "p95", "max", "max .ready",
                 "archive_timeout"],
                [
                    [
                        name,
                        str(v["tps"]),
                        str(v["wal_mb_per_s"]),
                        str(v["samples"]),
                        fmt_seconds(v["median_s"]),
                        fmt_seconds(v["p95_s"]),
                        fmt_seconds(v["max_s"]),
                        str(v["max_ready_segments"]),
                        v["archive_timeout"],
                    ]
                    for name, v in summary["loss_window"].items()
                ],
            )
        )  # fmt: skip
    return "\n".join(out)


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    """Backup and restore throughput by database size (PNG). None without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: the 'bench' extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    points = summary["scaling"]
    if not points:
        return None
    sizes = [p["database_mb"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, prefix, title in ((left, "backup", "Full backup"), (right, "restore", "Restore")):
        keys = sorted({k for p in points for k in p if k.startswith(prefix)})
        for key in keys:
            values = [p.get(key) for p in points]
            xs = [s for s, v in zip(sizes, values, strict=True) if v is not None]
            ys = [v for v in values if v is not None]
            who = key.replace(f"{prefix} ", "").replace(" MB/s", "")
            axis.plot(xs, ys, marker="o", label=LEGEND.get(who, who))
        axis.set_title(f"{title} throughput")
        axis.set_xlabel("database size (MB)")
        axis.set_ylabel("MB/s")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
