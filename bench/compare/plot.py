"""Results JSON -> PNG chart. Runs in the bench's own matplotlib venv (not the project venv):

    <cache>/plot/bin/python bench/compare/plot.py results/latest.json docs/benchmarks.png
"""

from __future__ import annotations

import json
import pathlib
import sys

import matplotlib as mpl
import matplotlib.ticker

mpl.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"kubeline-local-warm": "#1b9e77", "kubeline-local": "#66c2a5", "prefect": "#7570b3",
          "airflow": "#d95f02"}


def main() -> None:
    source, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    data = json.loads(source.read_text())
    titles = data["workloads"]
    measured = [r for r in data["results"] if "summary" in r]
    names = [w for w in titles if any(r["workload"] == w for r in measured)]
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = sorted((r for r in measured if r["workload"] == name), key=lambda r: r["summary"]["wall"]["median"])
        labels = [r["label"] for r in rows]
        medians = [r["summary"]["wall"]["median"] for r in rows]
        p95 = [r["summary"]["wall"]["p95"] - m for r, m in zip(rows, medians, strict=True)]
        bars = ax.barh(labels, medians, xerr=[[0] * len(rows), p95], capsize=3,
                       color=[COLORS.get(r["engine"], "#999999") for r in rows])
        for bar, value in zip(bars, medians, strict=True):
            ax.text(bar.get_width() * 1.08, bar.get_y() + bar.get_height() / 2, f"{value:.2f} s", va="center",
                    fontsize=8)
        ax.set_xscale("log")
        ax.set_title(titles[name], fontsize=9)
        ax.set_xlabel("run wall time, median (s, log); whisker: p95")
        ax.invert_yaxis()
        ax.set_xlim(left=min(medians) / 2, right=max(medians) * 6)
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    fig.suptitle(f"Same machine, same run: {data['machine']['summary']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(target, dpi=120)


if __name__ == "__main__":
    main()
