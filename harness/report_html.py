"""``--report DIR``: a static HTML page and JSON for the run, with SVG pictures drawn here.

One row per cell (case x backend x device x dtype), failures and crashes first: status,
worst error, SQNR, compile time, counters seen. Each numeric failure gets a heatmap of where
its error sits and a histogram of the error in units of the quantization step (the case's
``quant_step``; without one, the output dtype's spacing at the largest |expected|, and the
page says which), and beside it a histogram of the relative error |a - e| / |e| by decade:
an error of thousands of steps may be a constant 1e-3 relative error. The kernel benchmark
table (benchmarks/woq_<gpu>.json of the GPU kind the cells ran on, e.g. woq_h200.json) is
drawn as achieved bandwidth per shape against the measured copy bandwidth, only when the
run asked for it (``--report-benchmarks``) or ran cells on a GPU. No JavaScript, no external files: one
page that opens anywhere.

Cells report from wherever they ran (xdist workers included) through a user property;
the controller gathers them and writes the page at the end of the session.
"""

from __future__ import annotations

import datetime
import html
import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from .core.dtypes import DTYPES
from .core.sample import sample_for_golden
from .core.tolerance import float_errors, is_inexact, sqnr_db

DETAIL_PROPERTY = "quantcheck_detail"
HEAT_ROWS, HEAT_COLS = 32, 48
HIST_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, math.inf)
REL_EDGES = (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, math.inf)  # relative error, by decade
#: Outcomes in the order the page lists them: what needs a look first.
OUTCOME_ORDER = ("crashed", "error", "failed", "xpassed", "xfailed", "passed", "skipped")
MAX_COUNTERS = 30
STATUS_COLORS = {
    "passed": "#1a7f37", "failed": "#cf222e", "error": "#cf222e", "skipped": "#8c959f",
    "xfailed": "#9a6700", "xpassed": "#bc4c00", "crashed": "#82071e",
}
HEAT_STOPS = ((255, 255, 255), (254, 224, 144), (253, 141, 60), (215, 48, 39), (103, 0, 13))
PATH_COLORS = ("#0969da", "#8250df", "#bf8700", "#1a7f37", "#cf222e", "#57606a")


# ------------------------------------------------------------------------- cell details


def _finite_or_none(value: Optional[float]) -> Optional[float | str]:
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def step_for(expected: torch.Tensor, quant_step: Optional[float], cell_dtype: Optional[str] = None) -> tuple[float, str]:
    """(step, how it was chosen): the declared quantization step, else the spacing at max |expected|
    of the output's dtype, or of the cell's dtype where that is coarser: a float32 output of a
    bfloat16 cell carries bfloat16's precision, and float32 steps would count each of its
    rounding errors as ~65 000 steps."""
    if quant_step:
        return float(quant_step), f"quantization step {quant_step:g} (tolerances.quant_step)"
    magnitude = float(expected.detach().abs().float().nan_to_num(0, 0, 0).max()) if expected.numel() else 0.0
    eps = torch.finfo(expected.dtype).eps if is_inexact(expected) else 1.0  # a complex dtype's finfo is its parts'
    unit_dtype, why = expected.dtype, ""
    computed_in = DTYPES.get(cell_dtype or "")
    if is_inexact(expected) and computed_in is not None and computed_in.is_floating_point and torch.finfo(computed_in).eps > eps:
        eps, unit_dtype, why = torch.finfo(computed_in).eps, computed_in, f"the cell's dtype; the output is {expected.dtype}; "
    step = eps * magnitude or eps
    return step, f"{unit_dtype} spacing at max |expected| ({step:.3g}; {why}no quant_step declared)"


def error_picture(
    label: str, name: str, expected: torch.Tensor, actual: torch.Tensor, quant_step: Optional[float], cell_dtype: Optional[str] = None,
) -> dict[str, Any]:
    """Where the error of ``actual`` sits: a max-pooled grid and a histogram, in steps (:func:`step_for`)."""
    abs_err, rel_err = float_errors(expected, actual)
    step, unit = step_for(expected, quant_step, cell_dtype)
    steps = (abs_err / step).nan_to_num(nan=math.inf)
    grid = steps.reshape(-1, steps.shape[-1]) if steps.dim() >= 2 else steps.reshape(1, -1)
    rows, cols = grid.shape
    pooled_rows, pooled_cols = min(rows, HEAT_ROWS), min(cols, HEAT_COLS)
    heat = [[0.0] * pooled_cols for _ in range(pooled_rows)]
    if grid.numel():
        pooled = torch.nn.functional.adaptive_max_pool2d(grid[None, None].clamp(max=1e30).float(), (pooled_rows, pooled_cols))[0, 0]
        heat = [[round(float(v), 3) for v in row] for row in pooled]
    flat = steps.reshape(-1)
    edges = histogram_edges(float(flat[flat.isfinite()].max()) if flat.isfinite().any() else 0.0)
    counts = [int(((flat >= lo) & (flat < hi)).sum()) for lo, hi in zip(edges[:-1], edges[1:])]
    counts[-1] += int((flat == math.inf).sum())
    rel = rel_err.reshape(-1).nan_to_num(nan=math.inf, posinf=math.inf)
    rel_counts = [int(((rel >= lo) & (rel < hi)).sum()) for lo, hi in zip(REL_EDGES[:-1], REL_EDGES[1:])]
    rel_counts[-1] += int((rel == math.inf).sum())
    return {
        "label": label, "output": name, "shape": list(expected.shape), "unit": unit, "step": step,
        "grid_shape": [rows, cols], "heat": heat, "hist_edges": [e if math.isfinite(e) else "inf" for e in edges],
        "hist_counts": counts, "max_steps": _finite_or_none(float(flat.max()) if flat.numel() else 0.0),
        "rel_hist_edges": [e if math.isfinite(e) else "inf" for e in REL_EDGES], "rel_hist_counts": rel_counts,
        "max_rel": _finite_or_none(float(rel.max()) if rel.numel() else 0.0),
        "median_rel": _finite_or_none(float(rel.median()) if rel.numel() else 0.0),
    }


def histogram_edges(largest: float) -> tuple[float, ...]:
    """Bins in steps: fine around one step; by decades when errors reach hundreds of steps."""
    if largest <= HIST_EDGES[-2]:
        return HIST_EDGES
    top = min(math.ceil(math.log10(largest)), 308)  # garbage values reach 1e38 and beyond
    stride = max(1, math.ceil(top / 8))  # at most ~10 bins
    return (0.0, 0.5, 1.0, *(10.0 ** k for k in range(stride, top + stride, stride) if k <= 308), math.inf)


def worst_output(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> Optional[str]:
    """The floating output with the largest max abs error (shapes and dtypes equal)."""
    best, best_err = None, -1.0
    for name, e in expected.items():
        a = actual.get(name)
        if a is None or not is_inexact(e) or a.shape != e.shape or a.dtype != e.dtype or not e.numel():
            continue
        err = float(float_errors(e, a)[0].max())
        if err > best_err:
            best, best_err = name, err
    return best


def min_sqnr(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> Optional[float]:
    values = [
        sqnr_db(e, actual[n]) for n, e in expected.items()
        if n in actual and is_inexact(e) and e.shape == actual[n].shape and e.numel()
    ]
    return min(values) if values else None


def cell_detail(row: dict[str, Any], run: Any, tolerance: Any, failed: bool, message: str,
                golden: Optional[dict[str, torch.Tensor]] = None) -> dict[str, Any]:
    """The JSON record of one cell. ``run`` is its CellRun (None when it raised or was skipped)."""
    detail = dict(row)
    detail.update(sqnr_db=None, compile_s=None, counters={}, message=message, picture=None)
    if run is None:
        return detail
    detail["sqnr_db"] = _finite_or_none(min_sqnr(run.eager, run.compiled))
    detail["compile_s"] = round(run.seconds.get("compiled", 0.0), 3)
    counters = {f"{g}.{n}": v for g, values in sorted(run.counters.items()) if g not in ("graph_break",) for n, v in sorted(values.items())}
    detail["counters"] = dict(list(counters.items())[:MAX_COUNTERS])
    if failed:
        pairs = [(f"compiled ({row['backend']}) vs eager", run.eager, run.compiled)]
        if golden is not None:
            pairs += [("compiled vs golden", golden, _sampled_like(run.compiled, golden)), ("eager vs golden", golden, _sampled_like(run.eager, golden))]
        for label, expected, actual in pairs:
            name = worst_output(expected, actual)
            if name is not None and float(float_errors(expected[name], actual[name])[0].max()) > 0:
                detail["picture"] = error_picture(label, name, expected[name], actual[name], tolerance.quant_step, row.get("dtype"))
                break
    return detail


def _sampled_like(outputs: dict[str, torch.Tensor], golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Outputs cut to the golden's sample where the golden stores one (1-D, fewer elements)."""
    out = {}
    for name, tensor in outputs.items():
        g = golden.get(name)
        if g is not None and g.numel() < tensor.numel():
            out[name] = sample_for_golden({name: tensor}, g.numel())[name]
        else:
            out[name] = tensor
    return {n: t.to(golden[n].device) if n in golden else t for n, t in out.items()}


# ------------------------------------------------------------------------- SVG


def _svg_open(width: float, height: float, label: str) -> str:
    """The opening tag; the viewBox lets a narrow window scale the picture down whole instead of cutting it."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" viewBox="0 0 {width:g} {height:g}" '
        f'role="img" aria-label="{html.escape(label)}">'
    )


def _color(value: float, top: float) -> str:
    """White at 0, dark red at ``top`` and above, on a log scale (errors span decades)."""
    if not math.isfinite(value):
        return "rgb(0,0,0)"
    x = 0.0 if value <= 0 else min(1.0, math.log1p(value) / math.log1p(max(top, 1e-12)))
    pos = x * (len(HEAT_STOPS) - 1)
    i = min(int(pos), len(HEAT_STOPS) - 2)
    f = pos - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(HEAT_STOPS[i], HEAT_STOPS[i + 1]))
    return f"rgb({r},{g},{b})"


def svg_heatmap(picture: dict[str, Any]) -> str:
    heat = picture["heat"]
    rows, cols = len(heat), len(heat[0]) if heat else 0
    cell = max(4, min(12, 480 // max(cols, 1)))
    legend_h = 5 * 16  # five swatches; a one-row grid is shorter than its legend
    width, height = max(cols * cell + 150, 280), max(rows * cell, legend_h) + 40
    finite = [v for r in heat for v in r if math.isfinite(v)]
    top = max(finite, default=1.0) or 1.0
    parts = [_svg_open(width, height, "error heatmap")]
    for i, row in enumerate(heat):
        for j, v in enumerate(row):
            parts.append(f'<rect x="{j * cell}" y="{i * cell}" width="{cell}" height="{cell}" fill="{_color(v, top)}"><title>{v:g} steps</title></rect>')
    rr, cc = picture["grid_shape"]
    parts.append(f'<rect x="0" y="0" width="{cols * cell}" height="{rows * cell}" fill="none" stroke="#57606a"/>')
    parts.append(f'<text x="0" y="{max(rows * cell, legend_h) + 16}" font-size="11">{rr} x {cc} elements, max-pooled to {rows} x {cols}</text>')
    legend_x = cols * cell + 16
    for k in range(5):
        v = math.expm1(math.log1p(top) * k / 4)  # the colour scale's own (log) spacing
        parts.append(f'<rect x="{legend_x}" y="{k * 16}" width="14" height="14" fill="{_color(v, top)}" stroke="#57606a"/>')
        parts.append(f'<text x="{legend_x + 20}" y="{k * 16 + 11}" font-size="11">{v:.3g} steps</text>')
    parts.append("</svg>")
    return "".join(parts)


def _edge(value: Any) -> str:
    if isinstance(value, str):
        return value
    if 0 < value < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-")
    return f"{value:g}" if value < 1e5 else f"{value:.0e}".replace("e+", "e")


def svg_histogram(picture: dict[str, Any], relative: bool = False) -> str:
    """Element counts per error bin (log scale): in steps, or (``relative``) |a - e| / |e| by decade."""
    if relative:
        counts, edges, color = picture["rel_hist_counts"], picture["rel_hist_edges"], "#8250df"
        caption = "|error| / |expected| by decade; counts, log scale"
    else:
        counts, edges, color = picture["hist_counts"], picture["hist_edges"], "#0969da"
        caption = "|error| in steps; element counts, log scale"
    bar, gap, plot_h, top_margin = 38, 6, 120, 18  # the margin holds the tallest bar's count label
    width = max(len(counts) * (bar + gap) + 60, math.ceil(6.6 * len(caption)) + 50)
    height = top_margin + plot_h + 50
    base = top_margin + plot_h
    top = max(counts) or 1
    label = "relative error histogram" if relative else "error histogram"
    parts = [_svg_open(width, height, label)]
    for i, n in enumerate(counts):
        h = 0 if n == 0 else max(2.0, plot_h * math.log1p(n) / math.log1p(top))
        x = 40 + i * (bar + gap)
        parts.append(f'<rect x="{x}" y="{base - h:.1f}" width="{bar}" height="{h:.1f}" fill="{color}"><title>{n} elements</title></rect>')
        parts.append(f'<text x="{x + bar / 2}" y="{base - h - 4:.1f}" font-size="10" text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x + bar / 2}" y="{base + 14}" font-size="10" text-anchor="middle">&lt;{_edge(edges[i + 1])}</text>')
    parts.append(f'<line x1="36" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#57606a"/>')
    parts.append(f'<text x="40" y="{base + 34}" font-size="11">{caption}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_bandwidth_chart(title: str, rows: list[dict[str, Any]], paths: list[str], copy_gbps: float) -> str:
    """Grouped bars: GB/s per path for each shape, with the copy bandwidth as a dashed line."""
    group_w, plot_h, left = max(11 * len(paths), 40) + 14, 220, 56
    width, height = left + len(rows) * group_w + 20, plot_h + 110
    top = max([copy_gbps] + [r["paths"].get(p, {}).get("GBps", 0) or 0 for r in rows for p in paths]) * 1.08
    y = lambda v: 10 + plot_h - plot_h * v / top  # noqa: E731
    bar = (group_w - 14) / max(len(paths), 1)
    parts = [_svg_open(width, height, title)]
    for tick in range(0, int(top) + 1, max(250, int(top / 6) // 250 * 250 or 250)):
        parts.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{width - 10}" y2="{y(tick):.1f}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick}</text>')
    for g, row in enumerate(rows):
        x0 = left + g * group_w + 7
        for k, p in enumerate(paths):
            v = row["paths"].get(p, {}).get("GBps")
            if not v:
                continue
            parts.append(
                f'<rect x="{x0 + k * bar:.1f}" y="{y(v):.1f}" width="{bar - 1:.1f}" height="{y(0) - y(v):.1f}" fill="{PATH_COLORS[k % len(PATH_COLORS)]}">'
                f'<title>{html.escape(p)}: {v:.0f} GB/s ({100 * v / copy_gbps:.0f}% of copy)</title></rect>'
            )
        label = f'M{row["M"]} {row["K"]}x{row["N"]}'
        cx = x0 + (group_w - 14) / 2
        parts.append(f'<text x="{cx:.1f}" y="{plot_h + 22}" font-size="9" text-anchor="end" transform="rotate(-45 {cx:.1f} {plot_h + 22})">{label}</text>')
    parts.append(f'<line x1="{left}" y1="{y(copy_gbps):.1f}" x2="{width - 10}" y2="{y(copy_gbps):.1f}" stroke="#cf222e" stroke-dasharray="6 4"/>')
    parts.append(f'<text x="{width - 12}" y="{y(copy_gbps) - 4:.1f}" font-size="11" text-anchor="end" fill="#cf222e">copy {copy_gbps:.0f} GB/s</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="11">GB/s by shape (M, K x N); bytes moved / time</text>')
    for k, p in enumerate(paths):
        parts.append(f'<rect x="{left + k * 110}" y="{height - 34}" width="10" height="10" fill="{PATH_COLORS[k % len(PATH_COLORS)]}"/>')
        parts.append(f'<text x="{left + k * 110 + 14}" y="{height - 25}" font-size="11">{html.escape(p)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------- the page


def load_benchmarks(path: Optional[Path]) -> Optional[dict[str, Any]]:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or "rows" not in data or "copy_GBps" not in data:
        return None
    return data


def _fmt(value: Any, spec: str = ".2e") -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return format(value, spec)


def _cells_table(cells: list[dict[str, Any]]) -> str:
    head = "<tr><th>case</th><th>backend</th><th>device</th><th>dtype</th><th>status</th><th>worst abs err</th><th>SQNR dB</th><th>compile s</th><th>counters seen</th></tr>"
    body = []
    for c in cells:
        color = STATUS_COLORS.get(c["outcome"], "#57606a")
        counters = ", ".join(f"{k}={v}" for k, v in c.get("counters", {}).items() if not k.startswith("stats."))
        anchor = f'<a href="#{_anchor(c)}">{html.escape(c["outcome"])}</a>' if c.get("picture") or c.get("message") else html.escape(c["outcome"])
        body.append(
            f'<tr><td class="case">{html.escape(c["suite"])}::{html.escape(c["case"])}</td><td>{html.escape(c["backend"])}</td>'
            f'<td>{html.escape(c["device"])}</td><td>{html.escape(c["dtype"])}</td>'
            f'<td class="status" style="color:{color}">{anchor}</td><td>{_fmt(c.get("max_abs"))}</td>'
            f'<td>{_fmt(c.get("sqnr_db"), ".1f")}</td><td>{_fmt(c.get("compile_s"), ".2f")}</td>'
            f'<td class="counters">{html.escape(counters)}</td></tr>'
        )
    return f"<div class='wide'><table>{head}{''.join(body)}</table></div>"


def _anchor(cell: dict[str, Any]) -> str:
    return "cell-" + "".join(ch if ch.isalnum() else "-" for ch in f'{cell["suite"]}-{cell["case"]}-{cell["backend"]}-{cell["device"]}-{cell["dtype"]}')


def _failures(cells: list[dict[str, Any]]) -> str:
    parts = []
    for c in cells:
        if c["outcome"] not in ("failed", "error", "xfailed", "crashed"):
            continue
        title = f'{c["suite"]}::{c["case"]} [{c["backend"]}-{c["device"]}-{c["dtype"]}]'
        parts.append(f'<section id="{_anchor(c)}"><h3>{html.escape(title)}</h3>')
        picture = c.get("picture")
        if picture:
            parts.append(
                f'<p>{html.escape(picture["label"])}, output <code>{html.escape(picture["output"])}</code> '
                f'{html.escape(str(tuple(picture["shape"])))}: error in units of the {html.escape(picture["unit"])}; '
                f'max {_fmt(picture["max_steps"], ".3g")} steps; relative error max {_fmt(picture.get("max_rel"), ".3g")}, '
                f'median {_fmt(picture.get("median_rel"), ".3g")}.</p>'
                f'<div class="pictures">{svg_heatmap(picture)}<div class="histograms">{svg_histogram(picture)}'
                f'{svg_histogram(picture, relative=True) if "rel_hist_counts" in picture else ""}</div></div>'
            )
        elif c.get("crash"):
            parts.append(f'<p>Crashed: {html.escape(c["crash"]["cause"])}. The stack it died in is in the message below.</p>')
        else:
            parts.append("<p>No numeric picture: the cell raised, or its failure is not a numeric mismatch.</p>")
        message = "\n".join(c.get("message", "").splitlines()[:60])
        parts.append(f"<details><summary>failure message</summary><pre>{html.escape(message)}</pre></details></section>")
    return "".join(parts) or "<p>No failures.</p>"


def _bench_section(bench: Optional[dict[str, Any]], source: str) -> str:
    if bench is None:
        return f"<p>No kernel benchmark results in <code>{html.escape(source)}</code>.</p>"
    rows = bench["rows"]
    order = ["ours", "compiled", "iq", "eager", "int8pack"]
    paths = [p for p in order if any(p in r["paths"] for r in rows)]
    paths += sorted({p for r in rows for p in r["paths"]} - set(paths))
    parts = [
        f'<p>{html.escape(str(bench.get("device", "")))}, torch {html.escape(str(bench.get("torch", "")))}, '
        f'{html.escape(str(bench.get("dtype", "")))} activations; measured copy bandwidth '
        f'{bench["copy_GBps"]:.0f} GB/s (dashed). Source: <code>{html.escape(source)}</code>.</p>'
    ]
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        scheme_rows = [r for r in rows if r["scheme"] == scheme]
        parts.append(f"<h3>{html.escape(scheme)}</h3>")
        parts.append(svg_bandwidth_chart(f"{scheme} bandwidth", scheme_rows, paths, bench["copy_GBps"]))
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa}td.status{font-weight:600}td.counters{font-size:11px;color:#57606a;max-width:420px}
.pictures{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}.histograms{display:flex;flex-direction:column;gap:8px}
svg{max-width:100%;height:auto}.wide{overflow-x:auto}td.case,td.counters{overflow-wrap:anywhere;min-width:9em}
pre{background:#f6f8fa;padding:8px;font-size:12px;overflow:auto}
.summary span{margin-right:16px;font-weight:600}
"""


def render_html(cells: list[dict[str, Any]], bench: Optional[dict[str, Any]], bench_source: str, meta: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for c in cells:
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    summary = "".join(
        f'<span style="color:{STATUS_COLORS.get(k, "#57606a")}">{n} {html.escape(k)}</span>' for k, n in sorted(counts.items())
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>quantcheck report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>quantcheck report</h1><p>{html.escape(meta['when'])} · torch {html.escape(meta['torch'])} · "
        f"{len(cells)} cells</p><p class='summary'>{summary}</p>"
        f"<h2>Cells</h2>{_cells_table(cells)}"
        f"<h2>Numeric failures</h2>{_failures(cells)}"
        + (f"<h2>Kernel bandwidth</h2>{_bench_section(bench, bench_source)}" if bench_source else "")
        + "</body></html>\n"
    )


def _outcome_rank(outcome: str) -> int:
    return OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)


def write_report(directory: Path, cells: Iterable[dict[str, Any]], bench_path: Optional[Path], rootdir: Path) -> Path:
    """Write ``index.html`` and ``report.json`` into ``directory``; returns the page's path.

    Cells are listed failures and crashes first, then in suite order. ``bench_path`` None:
    no benchmark section (nobody asked for one and no cell ran on a GPU)."""
    ordered = sorted(cells, key=lambda c: (
        _outcome_rank(c["outcome"]), c["suite"], c.get("line", 0), c["case"], c["dtype"], c["device"], c["backend"],
    ))
    bench = load_benchmarks(bench_path)
    try:
        source = str(bench_path.relative_to(rootdir)) if bench_path else ""
    except ValueError:
        source = str(bench_path)
    meta = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__}
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "index.html"
    page.write_text(render_html(ordered, bench, source, meta), encoding="utf-8")
    (directory / "report.json").write_text(
        json.dumps({"meta": meta, "cells": ordered, "benchmarks": bench, "benchmarks_source": source}, indent=1) + "\n",
        encoding="utf-8",
    )
    return page
