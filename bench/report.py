"""Reporting: the terminal table, geometric-mean speedups, the JSON file and the PNG chart."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.providers import BASELINE, PROVIDERS
from sgtriton.files import atomic_write

SCHEMA = "sgtriton-bench/1"


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Geometric-mean speedup vs the baseline per group and provider (plain and CUDA-graph timing)."""
    plain: dict[tuple[str, str], list[float]] = defaultdict(list)
    graph: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row["provider"] == BASELINE or row["status"] != "ok":
            continue
        for group in (row["group"], "ops" if row["group"] != "generator" else None):
            if group is None:
                continue
            if row.get("speedup"):
                plain[group, row["provider"]].append(row["speedup"])
            if row.get("speedup_cudagraph"):
                graph[group, row["provider"]].append(row["speedup_cudagraph"])
    summary: dict[str, dict[str, Any]] = defaultdict(dict)
    for (group, provider), values in sorted(plain.items()):
        summary[group][provider] = {"geomean_speedup": geomean(values), "cases": len(values),
                                    "geomean_speedup_cudagraph": geomean(graph.get((group, provider), []))}
    return dict(summary)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(rows: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> str:
    """The results as a fixed-width table, then the geometric means."""
    graphs = any(r.get("cudagraph_median_ms") is not None for r in rows)
    roof = any(r.get("roofline_fraction") is not None for r in rows)
    rates = any(r.get("tflops_per_s") is not None for r in rows)
    head = f"{'case':<54} {'provider':<12} {'median ms':>10} {'IQR ms':>8} {'speedup':>8}"
    if graphs:
        head += f" {'graph ms':>9} {'g.speedup':>9}"
    head += f" {'cold ms':>9}"
    if rates:
        head += f" {'TFLOP/s':>8}"
    if roof:
        head += f" {'roofline':>8}"
    head += "  note"
    lines = [head, "-" * len(head)]
    last_case = None
    for r in rows:
        case = r["case"] if r["case"] != last_case else ""
        last_case = r["case"]
        line = f"{case:<54.54} {r['provider']:<12}"
        if r["status"] != "ok":
            lines.append(f"{line} {r['status']}: {r.get('reason', '')[:100]}")
            continue
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        line += f" {_ms(r['median_ms']):>10} {_ms(r['iqr_ms']):>8} {speed:>8}"
        if graphs:
            gspeed = f"{r['speedup_cudagraph']:.2f}x" if r.get("speedup_cudagraph") else "-"
            line += f" {_ms(r.get('cudagraph_median_ms')):>9} {gspeed:>9}"
        line += f" {_ms(r.get('cold_ms')):>9}"
        if rates:
            tflops = r.get("tflops_per_s")
            line += f" {f'{tflops:.3g}' if tflops is not None else '-':>8}"
        if roof:
            frac = r.get("roofline_fraction")
            line += f" {f'{100 * frac:.1f}%' if frac is not None else '-':>8}"
        notes = []
        if r["group"] == "generator":
            notes.append(f"{r['per_image_ms']:.1f} ms/img, {r['images_per_s']:.2f} img/s")
        if r.get("accuracy_ok") is False:
            notes.append(f"MISMATCH rel err {r['relative_error']:.1e}")
        if r.get("cudagraph_error"):
            notes.append(f"graph: {r['cudagraph_error'][:60]}")
        lines.append(f"{line}  {'; '.join(notes)}")
    lines.append("")
    lines.append("geometric-mean speedup vs reference eager (cases):")
    for group, providers in summary.items():
        parts = []
        for provider, s in providers.items():
            text = f"{provider} {s['geomean_speedup']:.2f}x ({s['cases']})"
            if s.get("geomean_speedup_cudagraph"):
                text += f", graphs {s['geomean_speedup_cudagraph']:.2f}x"
            parts.append(text)
        lines.append(f"  {group:<10} " + "; ".join(parts))
    return "\n".join(lines)


def write_json(path: Path, environment: dict[str, Any], settings: dict[str, Any], rows: list[dict[str, Any]],
               summary: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, "environment": environment, "settings": settings, "summary": summary, "results": rows}
    atomic_write(path, json.dumps(data, indent=1, default=str) + "\n")  # a killed run leaves the last whole file


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` rows with every ``(case, provider)`` that ``new`` measured replaced, in ``old``'s order."""
    fresh = {(r["case"], r["provider"]): r for r in new}
    merged = [fresh.pop((r["case"], r["provider"]), r) for r in old]
    return merged + [r for r in new if (r["case"], r["provider"]) in fresh]


PROVIDER_COLOURS = {"compile": (66, 133, 244), "triton": (234, 67, 53), "triton-graph": (251, 140, 0),
                    "nvlabs": (120, 120, 120)}


def draw_chart(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Horizontal bars of each provider's speedup vs the baseline, log2 axis, drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    bars = [r for r in rows if r["provider"] != BASELINE and r["status"] == "ok" and r.get("speedup")]
    if not bars:
        return
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        font = ImageFont.load_default()
    lo = min(min(math.log2(r["speedup"]) for r in bars), -1.0)
    hi = max(max(math.log2(r["speedup"]) for r in bars), 1.0)
    lo, hi = math.floor(lo), math.ceil(hi)
    label_w, plot_w, bar_h, top = 430, 520, 16, 70
    height = top + bar_h * len(bars) + 40
    img = Image.new("RGB", (label_w + plot_w + 110, height), "white")  # room for the last bar's label
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(title.splitlines()[:3]):
        draw.text((10, 8 + 16 * i), line, fill="black", font=font)

    def x_of(log2_speedup: float) -> float:
        return label_w + (log2_speedup - lo) / (hi - lo) * plot_w

    for tick in range(lo, hi + 1):
        x = x_of(tick)
        draw.line([(x, top - 6), (x, height - 30)], fill=(200, 200, 200) if tick else "black")
        text = f"{2.0 ** tick:g}x"
        draw.text((x - 8, height - 26), text, fill="black", font=font)
    last_case = None
    for i, r in enumerate(bars):
        y = top + i * bar_h
        if r["case"] != last_case:
            draw.text((10, y), r["case"][:62], fill="black", font=font)
            last_case = r["case"]
        colour = PROVIDER_COLOURS.get(r["provider"], (52, 168, 83))
        x0, x1 = sorted((x_of(0), x_of(math.log2(r["speedup"]))))
        draw.rectangle([x0, y + 2, max(x1, x0 + 1), y + bar_h - 3], fill=colour)
        draw.text((max(x1, x_of(0)) + 4, y), f"{r['provider']} {r['speedup']:.2f}x", fill="black", font=font)
    legend_x = label_w
    shown = {r["provider"] for r in bars}
    for provider, colour in PROVIDER_COLOURS.items():
        if provider not in shown:
            continue
        draw.rectangle([legend_x, top - 20, legend_x + 10, top - 10], fill=colour)
        draw.text((legend_x + 14, top - 23), provider, fill="black", font=font)
        legend_x += 90
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def markdown_table(data: dict[str, Any]) -> str:
    """A results file as the Markdown table ``bench/README.md`` shows, with its provenance line."""
    env = data["environment"]
    rows = data["results"]
    providers = [p for p in PROVIDERS
                 if any(r["provider"] == p and r["status"] == "ok" for r in rows)]
    head = "| case | " + " | ".join(
        "reference eager ms (IQR)" if p == BASELINE else f"{p} ms (speedup)" for p in providers) + " | compile cold s |"
    lines = [head, "|" + " --- |" * (len(providers) + 2)]
    by_case: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_case[r["case"]][r["provider"]] = r
    for case, found in by_case.items():
        cells = []
        for p in providers:
            r = found.get(p)
            if r is None or r["status"] != "ok":
                cells.append("-")
            elif p == BASELINE:
                cells.append(f"{_ms(r['median_ms'])} ({_ms(r['iqr_ms'])})")
            else:
                cells.append(f"{_ms(r['median_ms'])} ({r['speedup']:.2f}x)")
        compiled = found.get("compile")
        cold = f"{compiled['cold_ms'] / 1e3:.1f}" if compiled and compiled["status"] == "ok" else "-"
        lines.append(f"| `{case}` | " + " | ".join(cells) + f" | {cold} |")
    lines.append("")
    for group, provs in data["summary"].items():
        text = "; ".join(f"{p} {s['geomean_speedup']:.2f}x over {s['cases']}" for p, s in provs.items())
        lines.append(f"- geometric mean, `{group}`: {text}")
    dirty = ", uncommitted changes" if env.get("git_dirty") else ""
    load = ", ".join(f"{v:.1f}" for v in env.get("load_average") or [])
    lines.append("")
    lines.append(f"Device: {env['device_name']} ({env['cpu_cores']} cores, {env['torch_threads']} torch threads"
                 f"{', CC ' + env['compute_capability'] if env.get('compute_capability') else ''}); "
                 f"torch {env['torch']}, triton {env['triton']}; commit `{str(env['git_commit'])[:10]}`{dirty}; "
                 f"{env['timestamp']}; load average at start {load}.")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(markdown_table(json.loads(Path(name).read_text())))
