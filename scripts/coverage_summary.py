"""Summarises cargo-tarpaulin's JSON report into bench/results/coverage.json.

Lines are grouped by crate (the directory under services/, libs/, tools/, or
bench and tests), and for each service also by layer (src/domain, src/app,
src/adapters, the rest), against the goal of 80 % of the lines of every
service's domain/ and app/.

    python3 scripts/coverage_summary.py REPORT.json OUT.json \
        [--seconds N] [--tests-status N] [--tool TEXT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections import defaultdict

GOAL = 80.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def relative(path: str | list[str]) -> str:
    """The file's path from the repository's root."""
    if isinstance(path, list):
        path = os.path.join(*path)
    return os.path.relpath(path, ROOT)


def crate_of(rel: str) -> str | None:
    """`services/files/src/x.rs` -> `services/files`; None outside the workspace."""
    parts = rel.split(os.sep)
    if parts[0] in ("services", "libs", "tools") and len(parts) > 2:
        return "/".join(parts[:2])
    if parts[0] in ("bench", "tests"):
        return parts[0]
    return None


def layer_of(rel: str) -> str:
    """A service file's layer: domain, app, adapters or other."""
    parts = rel.split(os.sep)
    if len(parts) > 3 and parts[2] == "src" and parts[3] in ("domain", "app", "adapters"):
        return parts[3]
    return "other"


class Tally:
    """Covered and coverable lines."""

    def __init__(self) -> None:
        self.covered = 0
        self.coverable = 0

    def add(self, covered: int, coverable: int) -> None:
        self.covered += covered
        self.coverable += coverable

    def json(self) -> dict:
        percent = 100.0 * self.covered / self.coverable if self.coverable else None
        return {
            "covered": self.covered,
            "coverable": self.coverable,
            "percent": None if percent is None else round(percent, 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("report")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--tests-status", type=int, default=0)
    parser.add_argument("--tool", default="cargo-tarpaulin")
    args = parser.parse_args()

    with open(args.report, encoding="utf-8") as f:
        report = json.load(f)

    total = Tally()
    crates: dict[str, Tally] = defaultdict(Tally)
    layers: dict[str, dict[str, Tally]] = defaultdict(lambda: defaultdict(Tally))
    gaps = []
    for file in report["files"]:
        rel = relative(file["path"])
        crate = crate_of(rel)
        if crate is None:
            continue
        covered, coverable = int(file["covered"]), int(file["coverable"])
        total.add(covered, coverable)
        crates[crate].add(covered, coverable)
        if crate.startswith("services/"):
            layer = layer_of(rel)
            layers[crate][layer].add(covered, coverable)
            if layer in ("domain", "app"):
                layers[crate]["domain+app"].add(covered, coverable)
                gaps.append({"file": rel, "uncovered": coverable - covered, "coverable": coverable})

    services = {}
    below_goal = []
    for crate in sorted(layers):
        entry = {layer: tally.json() for layer, tally in sorted(layers[crate].items())}
        services[crate.split("/")[1]] = entry
        percent = entry.get("domain+app", {}).get("percent")
        if percent is not None and percent < GOAL:
            below_goal.append({"service": crate.split("/")[1], "domain+app percent": percent})

    summary = {
        "suite": "coverage",
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": args.tool,
        "duration_seconds": args.seconds,
        "tests_exit_status": args.tests_status,
        "skipped": [
            "tests/saga_crash.rs: kills uninstrumented service binaries, adds no coverage",
        ],
        "note": (
            "rustc's coverage instrumentation drops the body of a function under "
            "#[tracing::instrument] (rust-lang/rust#110486, #131119), so the services and "
            "libraries write it as #[cfg_attr(not(tarpaulin), tracing::instrument(..))]: "
            "under cargo-tarpaulin (--cfg tarpaulin) those spans are not made and the bodies "
            "are counted"
        ),
        "goal_percent_domain_and_app": GOAL,
        "total": total.json(),
        "crates": {crate: crates[crate].json() for crate in sorted(crates)},
        "services": services,
        "services_below_goal": below_goal,
        "largest_gaps_in_domain_and_app": sorted(gaps, key=lambda g: -g["uncovered"])[:15],
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write("\n")

    print(f"total: {total.json()['percent']} % of {total.coverable} lines")
    for name, entry in services.items():
        da = entry.get("domain+app", {})
        print(f"  {name:8} domain+app {da.get('percent')} % of {da.get('coverable')} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
