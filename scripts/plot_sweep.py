"""Plots of a sweep directory, called by `nepa_sweep report DIR` after it wrote results.csv/.md and summary.json.

- curves_<stage>.png for each nepa_pretrain stage: the training loss and pred_std against the step, one line
  per point (mean over its seeds) with a band from the min to the max over the seeds;
- metrics.png: each reported metric per point, mean with +-1 sample std error bars and each seed as a dot.

The paper's figures are not drawn: they are ImageNet numbers on another scale (results.md puts them beside ours).

usage: plot_sweep.py <sweep dir>
"""
import json
import math
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(f"plot_sweep.py: matplotlib is not installed in {sys.executable} (bash scripts/setup.sh installs it)")


def train_records(path):
    """{step: record} of the kind=train lines; on resume the trainer keeps the file consistent, a later line of a
    step replaces an earlier one."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(row, dict) and row.get("kind") == "train" and isinstance(row.get("step"), int):
                out[row["step"]] = row
    return out


def curves(sweep, stage, out_dir):
    keys = ("loss", "pred_std")
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    drawn = False
    for i, point in enumerate(p["name"] for p in sweep["points"]):
        runs = [r for r in sweep["runs"] if r["point"] == point]
        series = []
        for r in runs:
            st = next(s for s in r["stages"] if s["stage"] == stage)
            recs = train_records(os.path.join(st["dir"], "metrics.jsonl"))
            if recs:
                series.append(recs)
        if not series:
            continue
        # The steps every seed has reached: a band over fewer seeds than the mean claims would mislead.
        steps = sorted(set.intersection(*(set(s) for s in series)))
        for ax, key in zip(axes[0], keys):
            rows = [[s[t].get(key) for s in series] for t in steps]
            ok = [(t, v) for t, v in zip(steps, rows) if all(isinstance(x, (int, float)) for x in v)]
            if not ok:
                continue
            xs = [t for t, _ in ok]
            mean = [sum(v) / len(v) for _, v in ok]
            color = f"C{i}"
            ax.plot(xs, mean, color=color, label=f"{point} (n={len(series)})")
            ax.fill_between(xs, [min(v) for _, v in ok], [max(v) for _, v in ok], color=color, alpha=0.2, lw=0)
            drawn = True
    for ax, key in zip(axes[0], keys):
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{stage}: {key} (mean over seeds, band = min..max)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return None
    fig.tight_layout()
    path = os.path.join(out_dir, f"curves_{stage}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metrics_plot(summary, out_dir):
    metrics = summary["metrics"]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4, 1.2 * len(metrics[0]["points"]) + 2) * len(metrics), 4),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        names = [p["point"] for p in m["points"]]
        for x, p in enumerate(m["points"]):
            if p["mean"] is None:
                continue
            err = p["std"] if p["std"] is not None and math.isfinite(p["std"]) else 0.0
            ax.errorbar([x], [p["mean"]], yerr=[err], fmt="o", color=f"C{x}", capsize=6, ms=8)
            ax.scatter([x + 0.12] * len(p["values"]), p["values"], color=f"C{x}", s=12, alpha=0.6)
            ax.annotate(f"n={p['n']}", (x, p["mean"]), textcoords="offset points", xytext=(10, 8), fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right")
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(m["label"], fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{summary['name']}: mean ± sample std over seeds (dots: each seed)", fontsize=11)
    fig.tight_layout()
    path = os.path.join(out_dir, "metrics.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: plot_sweep.py <sweep dir>")
    out_dir = sys.argv[1]
    with open(os.path.join(out_dir, "sweep.json")) as f:
        sweep = json.load(f)
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    written = [curves(sweep, s["name"], out_dir) for s in sweep["stages"] if s["app"] == "nepa_pretrain"]
    written.append(metrics_plot(summary, out_dir))
    for p in written:
        if p:
            print(f"plot_sweep.py: wrote {p}")


if __name__ == "__main__":
    main()
