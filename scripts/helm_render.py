"""``helm template`` and ``helm lint`` without the helm binary: Helm's own Go engine (v4), from
PyPI's ``helm-python-sdk`` (a ctypes binding of libhelm_c, which wraps Helm's Go SDK). Neither
Debian nor PyPI nor npm ships the ``helm`` binary itself; this renders exactly as it would.

    python scripts/helm_render.py CHART [--set heads.replicas=3] [-f values.yaml]
        [--name opentela] [--namespace opentela] [--lint]

Prints the rendered manifests as one YAML stream (``# Source:`` comments, as ``helm
template`` does), or with ``--lint`` the lint findings, exiting 1 on an error. Exits 3 when
the engine is not installed (``pip install helm-python-sdk``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

NO_ENGINE = 3


def _set(values: dict[str, Any], assignment: str) -> None:
    """``a.b.c=VALUE``, VALUE parsed as YAML (``3``, ``true``, ``"x"``, ``[1, 2]``)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set wants KEY=VALUE, not {assignment!r}")
    *parents, leaf = key.split(".")
    node = values
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(raw) if raw else ""


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    """Deep merge, as helm merges several ``-f`` files: maps merge, anything else replaces."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("chart", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-f", "--values", action="append", default=[], type=Path)
    ap.add_argument("--name", default="opentela")
    ap.add_argument("--namespace", default="opentela")
    ap.add_argument("--lint", action="store_true")
    args = ap.parse_args(argv)
    try:
        import helm_python as helm
    except ImportError as exc:
        print(f"helm engine not installed (pip install helm-python-sdk): {exc}", file=sys.stderr)
        return NO_ENGINE
    values: dict[str, Any] = {}
    for f in args.values:
        _merge(values, yaml.safe_load(f.read_text()) or {})
    for s in args.set:
        _set(values, s)
    if args.lint:
        report = helm.lint(str(args.chart), values, strict=True, namespace=args.namespace)
        for m in report.get("messages", []):
            print(f"[{m.get('severity')}] {m.get('path')}: {m.get('error')}")
        errors = report.get("errors") or [
            m for m in report.get("messages", []) if m.get("severity", 0) >= 2
        ]
        return 1 if errors else 0
    try:
        with helm.Chart.load(str(args.chart)) as chart:
            manifests = chart.render(
                values, name=args.name, namespace=args.namespace, is_install=True
            )
    except helm.HelmError as exc:
        print(f"render failed: {exc}", file=sys.stderr)
        return 1
    out = []
    for path in sorted(manifests):
        text = manifests[path].strip()
        if (
            path.endswith(".yaml")
            and text
            and any(not ln.startswith("#") for ln in text.splitlines())
        ):
            out.append(f"---\n# Source: {path}\n{text}\n")
    sys.stdout.write("".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
