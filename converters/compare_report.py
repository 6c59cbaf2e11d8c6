"""``leukedge bench --compare``'s report files, from the dictionary that
:func:`leukedge.converters.compare.run_compare` builds (schema
:data:`leukedge.converters.compare.SCHEMA`): ``compare.json``, ``compare.md`` and
``latency_vs_accuracy.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_markdown(report: dict[str, Any]) -> str:
    """``compare.md``: settings, the engine table, SDK figures and operator profiles."""
    env = report["environment"]
    flags = ", ".join(f for f, on in env["cpu"]["flags"].items() if on) or "unknown"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [
        f"# Engine comparison: `{Path(report['model']['path']).name}`",
        "",
        f"- Date: {env['date']}; command: `{env['command']}`",
        f"- CPU: {env['cpu']['model']} ({env['cpu']['machine']}, {env['cpu']['cores']} cores); "
        f"flags: {flags}",
        "- Load average (1, 5, 15 min) before: "
        + ", ".join(f"{v:.2f}" for v in env["load_average"])
        + "; after: "
        + ", ".join(f"{v:.2f}" for v in report["load_average_after"]),
        f"- Versions: {versions}",
        f"- Validation images: {report['n_val']} (`{report['split_file']}`, split `val`); "
        f"calibration images: {report['n_calibration']} (split `train`)",
        f"- Timing: {report['settings']['runs']} single-image calls after "
        f"{report['settings']['warmup']} untimed; p50/p90 wall clock; CPU = median CPU time "
        "of the process per image (all threads); images/s = back-to-back batch-1 calls",
        "",
        "| engine | precision | file MB | val accuracy | Δ vs Keras (pp) | agreement | "
        "max \\|Δp\\| | threads | p50 ms | p90 ms | CPU ms | images/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["engines"]:
        if row["status"] != "ok":
            lines.append(
                f"| {row['label']} | {row['precision']} | | | | | | | "
                f"{row['status']}: {row['reason'][:90]} | | | | |"
            )
            continue
        acc = row.get("accuracy") or {}
        ref = " (ref.)" if acc.get("reference") else ""
        for threads, t in row["by_threads"].items():
            lines.append(
                f"| {row['label']} | {row['precision']} | {row['size_bytes'] / 1e6:.1f} | "
                f"{_fmt(acc.get('accuracy'), 4)}{ref} | {_fmt(acc.get('delta_pp'))} | "
                f"{_fmt(100 * acc['agreement'] if 'agreement' in acc else None, 1)} % | "
                f"{_fmt(acc.get('max_abs_prob_diff'), 3)} | {threads} | {t['p50_ms']:.2f} | "
                f"{t['p90_ms']:.2f} | {t['cpu_p50_ms']:.2f} | {t['images_per_s']:.0f} | "
                f"{t['peak_rss_mb']:.0f} |"
            )
    sdk = report.get("sdk")
    if sdk and "error" in sdk:
        lines += ["", f"SDK figures failed: {sdk['error'][:300]}"]
    elif sdk:
        a, c, cold = sdk["array_224"], sdk["camera_jpeg"], sdk["cold_start_s"]
        lines += [
            "",
            "## SDK on the int8 model (1 thread, CPU time, paired with a bare invoke)",
            "",
            "| what | bare invoke ms | SDK ms | ratio | peak RSS MB |",
            "|---|---|---|---|---|",
            f"| `classify(array)` 224×224 | {a['bare_cpu_ms']:.2f} | {a['sdk_cpu_ms']:.2f} | "
            f"{a['ratio']:.3f} | {c['peak_rss_mb_array_224']:.0f} |",
            f"| `classify(path)` {c['size']} JPEG ({c['file_mb']:.2f} MB) | "
            f"{c['bare_cpu_ms']:.2f} | {c['sdk_cpu_ms']:.2f} | {c['ratio']:.2f} | "
            f"{c['peak_rss_mb']:.0f} |",
            f"| cold start `leukedge classify one.jpg`, wall (CPU) | | "
            f"{1000 * cold['median']:.0f} ({1000 * cold['cpu_median']:.0f} CPU; min wall "
            f"{1000 * cold['min']:.0f}) | | |",
        ]
    for name, profile in report.get("op_profiles", {}).items():
        if "error" in profile:
            lines += ["", f"## Operators of {name}: not profiled ({profile['error'][:200]})"]
            continue
        lines += [
            "",
            f"## Operators of {name} (each alone, 1 thread, median ms; "
            f"sum {profile['sum_ms_default']:.2f} ms, outside XNNPACK "
            f"{profile['sum_ms_outside_xnnpack']:.2f} ms)",
            "",
            "| operator | dtypes | XNNPACK | count | ms (default) | ms (builtin kernels) |",
            "|---|---|---|---|---|---|",
        ]
        for r in profile["summary"][:12]:
            lines.append(
                f"| {r['op']} | {r['dtypes']} | {'yes' if r['xnnpack'] else '**no**'} | "
                f"{r['count']} | {r['ms_default']:.3f} | {r['ms_builtin']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> bool:
    """``latency_vs_accuracy.png``: validation accuracy against latency at the first thread
    count, one colour per engine: filled marker at the wall-clock p50 with a bar to p90,
    hollow marker at the CPU time per image (what it costs on an idle machine); log-scale
    latency. Returns ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    threads = str(report["settings"]["threads"][0])
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, row in enumerate(report["engines"]):
        if row["status"] != "ok" or "accuracy" not in row or threads not in row["by_threads"]:
            continue
        t, acc = row["by_threads"][threads], row["accuracy"]["accuracy"]
        colour = plt.cm.tab10(i % 10)
        ax.errorbar(
            t["p50_ms"],
            acc,
            xerr=[[0], [t["p90_ms"] - t["p50_ms"]]],
            fmt="o",
            color=colour,
            capsize=3,
            label=row["name"],
        )
        ax.plot(t["cpu_p50_ms"], acc, "o", mfc="none", color=colour)
    ax.set_xscale("log")
    ax.set_xlabel(
        f"ms per image, {threads} thread(s): p50 wall (bar to p90) filled, CPU time hollow"
    )
    ax.set_ylabel(f"validation accuracy (n={report['n_val']})")
    load = ", ".join(f"{v:.1f}" for v in report["environment"]["load_average"])
    ax.set_title(f"{report['environment']['cpu']['model']}; load average {load}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write ``compare.json``, ``compare.md`` and ``latency_vs_accuracy.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("compare.json", json.dumps(report, indent=2)),
        ("compare.md", to_markdown(report)),
    ):
        tmp = out / (name + ".partial")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    plot(report, out / "latency_vs_accuracy.png")
