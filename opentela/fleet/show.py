"""``opentela-node fleet status``: the head's ``/v1/fleet`` as a table (pure formatting)."""

from __future__ import annotations

from typing import Any


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


def format_status(data: dict[str, Any]) -> str:
    rows = [("MODEL", "STATE", "DESIRED", "READY", "STARTING", "HELD", "MIN-MAX", "JOBS", "NOTE")]
    for m in data.get("models", []):
        jobs = " ".join(
            f"{j['id']}:{j['state'].lower()}{'*' if j.get('ready') else ''}" for j in m["jobs"]
        )
        rows.append(
            (
                m["id"],
                m["state"],
                _n(m.get("desired")),
                _n(m.get("ready")),
                _n(m.get("starting")),
                _n(m.get("held")),
                f"{m['min_replicas']}-{m['max_replicas']}",
                jobs or "-",
                m.get("note") or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
             for r in rows]  # fmt: skip
    lim = data.get("limits", {})
    cap = lim.get("max_gpu_hours_per_day")
    lines.append("")
    lines.append(
        f"jobs {lim.get('jobs', 0)}/{lim.get('max_jobs', '?')}   GPU-hours today "
        f"{lim.get('gpu_hours_today', 0):.2f}/{cap if cap is not None else 'no cap'}   "
        "(* = its replica has been ready)"
    )
    events = data.get("events", [])[-5:]
    if events:
        lines.append("recent:")
        lines.extend(f"  {e['event']:<15} {e.get('model') or '':<28} {e['detail']}" for e in events)
    return "\n".join(line.rstrip() for line in lines)
