#!/usr/bin/env python3
"""Renders the rows the benchmarks appended (JSON lines, tests/src/bench.rs) as one Markdown table.

    bench-table.py <results.jsonl> <date> <machine>
"""
import json
import sys


def number(value, unit):
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return f"{text} {unit}"


def target(row):
    kind, value, unit = row["target"]["kind"], row["target"].get("value"), row["unit"]
    return {
        "max_ratio": f"≤ {value}x",
        "max_figure": f"≤ {value} {unit}",
        "min_figure": f"≥ {value} {unit}",
    }.get(kind, "-")


def main():
    path, date, machine = sys.argv[1:4]
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        sys.exit("bench-table.py: no results (did every bench run?)")
    lines = [
        f"Figures of `scripts/bench.sh` on {date} ({machine}, release build).",
        "",
        "| benchmark | figure | floor | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "-" if row.get("ratio") is None else f"{row['ratio']:.2f}x"
        verdict = {True: "pass", False: "**FAIL**"}.get(row.get("pass"), "-")
        lines.append(
            f"| {row['benchmark']} | {number(row['figure'], row['unit'])} "
            f"| {number(row.get('floor'), row['unit'])} | {ratio} | {target(row)} | {verdict} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
