"""The network profiles' summary: ratios per profile, the targets, an ASCII chart."""

from __future__ import annotations

from typing import Any

from benchmarks.stats import MB, fmt_ratio, fmt_seconds, median, ratio, render_table

KINDS = (("full", "full"), ("diff", "differential"), ("incr", "incremental"))
# Issue 16: pgbackups' full backup at least this many times faster than barman-cloud's
# best at the profile; its overhead over pgBackRest alone at most this ratio.
SPEEDUP_TARGETS = {"region": 2.0, "wan": 3.0}
OVERHEAD_TARGET = 1.05
# The archive queue "keeps up" when at most this many segments ever waited (.ready).
QUEUE_BOUND = 4


def _med(samples: dict[str, list[float]], key: str) -> float | None:
    values = samples.get(key)
    return median(values) if values else None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per profile: seconds (medians), ratios, sizes; then the targets (pure)."""
    data = results.get("data") or {}
    db_mb = round(data.get("database_bytes", 0) / MB, 1)
    out: dict[str, Any] = {"database_mb": db_mb, "profiles": {}, "targets": []}
    for name, p in (results.get("profiles") or {}).items():
        b, r = p["backups"], p["restores"]
        row: dict[str, Any] = {"link": f"{p['profile']['rate']}, {p['profile']['rtt_ms']:g} ms"}
        for kind, _label in KINDS:
            ours, alone = _med(b, f"{kind}:pgbackups"), _med(b, f"{kind}:direct")
            row[f"{kind}_s"] = _r(ours)
            row[f"{kind}_direct_s"] = _r(alone)
            row[f"{kind}_overhead"] = _r(ratio(ours, alone))
        ours_r, alone_r = _med(r, "restore:pgbackups"), _med(r, "restore:direct")
        row["restore_s"], row["restore_direct_s"] = _r(ours_r), _r(alone_r)
        row["restore_overhead"] = _r(ratio(ours_r, alone_r))
        extra = p.get("backup_extra") or {}
        sizes = extra.get("full_repo_size") or []
        row["repo_mb_pgbackrest"] = round(median(sizes) / MB, 1) if sizes else None
        barman = p.get("barman")
        if barman:
            best = barman["best"]
            best_s = median(barman["seconds"][best])
            row["barman_best"] = best
            row["barman_best_s"] = round(best_s, 3)
            row["barman_settings_s"] = {
                k: round(median(v), 3) for k, v in barman["seconds"].items()
            }
            row["repo_mb_barman"] = round(barman["sizes"][best] / MB, 1)
            # How many times faster pgbackups' full backup is than barman-cloud's best.
            row["speedup_vs_barman"] = _r(ratio(best_s, row["full_s"]))
            row["speedup_direct_vs_barman"] = _r(ratio(best_s, row["full_direct_s"]))
        tried = p.get("pgbackrest_settings") or {}
        if tried and row["full_direct_s"]:
            row["pgbackrest_settings"] = {
                k: _r(ratio(median(v), row["full_direct_s"])) for k, v in tried.items()
            }
        loss = p.get("loss_window")
        if loss:
            ages = loss["ages"]
            row["loss_window"] = {
                "tps": loss["tps"],
                "wal_mb_per_s": round(loss["wal_bytes_per_second"] / MB, 2),
                "max_s": round(max(ages), 2) if ages else None,
                "median_s": round(median(ages), 2) if ages else None,
                "max_ready_segments": max(loss["ready"]) if loss["ready"] else 0,
            }
        if db_mb and row["full_s"]:
            row["full_mb_per_s"] = {
                "pgbackups": round(db_mb / row["full_s"], 1),
                "pgBackRest alone": round(db_mb / row["full_direct_s"], 1)
                if row["full_direct_s"]
                else None,
            }
            if barman:
                row["full_mb_per_s"]["barman-cloud (best)"] = round(db_mb / row["barman_best_s"], 1)
        out["profiles"][name] = row
    out["targets"] = targets(out["profiles"])
    return out


def targets(profiles: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name, want in SPEEDUP_TARGETS.items():
        row = profiles.get(name)
        if row is None or row.get("speedup_vs_barman") is None:
            continue
        got = row["speedup_vs_barman"]
        why = (
            ""
            if got >= want
            else f"pgBackRest alone is {row['speedup_direct_vs_barman']}x barman-cloud's "
            f"best ({row['barman_best']}); see docs/performance.md"
        )
        found.append(
            {
                "target": f"{name}: full backup >= {want:g}x faster than barman-cloud's best",
                "measured": f"{got:.2f}x",
                "met": got >= want,
                "why": why,
            }
        )
    for name, row in profiles.items():
        got = row.get("full_overhead")
        if got is None:
            continue
        found.append(
            {
                "target": f"{name}: full backup overhead over pgBackRest <= {OVERHEAD_TARGET}x",
                "measured": f"{got:.2f}x",
                "met": got <= OVERHEAD_TARGET,
                "why": ""
                if got <= OVERHEAD_TARGET
                else f"{(row['full_s'] - row['full_direct_s']):.2f} s of fixed cost on a "
                f"{row['full_direct_s']:.1f} s backup",
            }
        )
        loss = row.get("loss_window")
        if loss:
            ok = loss["max_ready_segments"] <= QUEUE_BOUND
            found.append(
                {
                    "target": f"{name}: archiving keeps up with full-speed pgbench "
                    f"(<= {QUEUE_BOUND} segments waiting)",
                    "measured": f"{loss['max_ready_segments']} waiting at most, "
                    f"{loss['tps']} tps, {loss['wal_mb_per_s']} MB/s WAL, newest archived "
                    f"WAL at most {loss['max_s']} s old",
                    "met": ok,
                    "why": "" if ok else "the queue grew: archive-push is slower than WAL",
                }
            )
    return found


def chart(summary: dict[str, Any], width: int = 40) -> str:
    """Full-backup throughput by tool per profile, as bars of text."""
    rows = [
        (name, tool, mbps)
        for name, row in summary["profiles"].items()
        for tool, mbps in (row.get("full_mb_per_s") or {}).items()
        if mbps
    ]
    if not rows:
        return ""
    top = max(mbps for _, _, mbps in rows)
    lines = [f"Full backup throughput ({summary['database_mb']} MB database ÷ wall time):"]
    last = ""
    for name, tool, mbps in rows:
        head = name if name != last else ""
        last = name
        bar = "#" * max(1, round(width * mbps / top))
        lines.append(f"{head:<7} {tool:<20} {bar} {mbps:.1f} MB/s")
    return "\n".join(lines)


def render_text(summary: dict[str, Any]) -> str:
    out = [
        f"\nNetwork profiles (S3 behind an emulated link; {summary['database_mb']} MB database; "
        "ratio = pgbackups / pgBackRest alone; speed vs barman best = barman-cloud's best "
        "time / pgbackups' full backup time, above 1 is pgbackups faster):"
    ]
    headers = ["profile", "link", "full", "differential", "incremental", "restore"]
    headers += ["barman best", "speed vs barman best", "repo MB pgBackRest / barman"]
    rows = []
    for name, row in summary["profiles"].items():
        rows.append(
            [
                name,
                row["link"],
                *(fmt_ratio(row[f"{k}_overhead"]) for k, _ in (*KINDS, ("restore", ""))),
                f"{row.get('barman_best', 'n/a')} {fmt_seconds(row.get('barman_best_s'))}",
                fmt_ratio(row.get("speedup_vs_barman")),
                f"{row['repo_mb_pgbackrest']} / {row.get('repo_mb_barman', 'n/a')}",
            ]
        )
    out.append(render_table(headers, rows))
    settings = {
        n: r["barman_settings_s"]
        for n, r in summary["profiles"].items()
        if "barman_settings_s" in r
    }
    if settings:
        out.append("\nbarman-cloud full backup by setting (seconds; the best is the baseline):")
        keys = sorted({k for s in settings.values() for k in s})
        out.append(
            render_table(
                ["profile", *keys],
                [[n, *(fmt_seconds(s.get(k)) for k in keys)] for n, s in settings.items()],
            )
        )
    tried = {n: r["pgbackrest_settings"] for n, r in summary["profiles"].items()
             if "pgbackrest_settings" in r}  # fmt: skip
    if tried:
        out.append("\npgBackRest alone, full backup, one setting changed (ratio to the defaults):")
        keys = sorted({k for s in tried.values() for k in s})
        out.append(
            render_table(
                ["profile", *keys],
                [[n, *(fmt_ratio(s.get(k)) for k in keys)] for n, s in tried.items()],
            )
        )
    text = chart(summary)
    if text:
        out.append("\n" + text)
    if summary["targets"]:
        out.append("\nTargets (issue 16, network profiles):")
        out.append(
            render_table(
                ["target", "measured", "result", "why"],
                [
                    [t["target"], t["measured"], "met" if t["met"] else "MISSED", t["why"]]
                    for t in summary["targets"]
                ],
            )
        )
    return "\n".join(out)
