"""Writes the measured tables of docs/ablations.md from the sweep reports that scripts/run_ablations.sh copies to
docs/ablations/<sweep>/summary.json: for each sweep, between the lines
    <!-- table: <sweep> -->   and   <!-- end table -->
a table with one row per metric and one column per point (mean ± sample std over seeds, n), then the paper's
figures where the sweep file gives them. The prose around the markers (what the numbers say) stays as written.
    python scripts/ablation_tables.py [docs/ablations.md]
"""
import json
import os
import re
import sys


def cell(p):
    if p["n"] == 0:
        return "—"
    if p["n"] == 1:
        return f"{p['mean']:.3g} (n=1)" if abs(p["mean"]) < 1 else f"{p['mean']:.2f} (n=1)"
    if abs(p["mean"]) < 1:  # pred_std and the like: significant digits, so that a collapse does not read as 0
        return f"{p['mean']:.3g} ± {p['std']:.2g} (n={p['n']})"
    return f"{p['mean']:.2f} ± {p['std']:.2f} (n={p['n']})"


def table(summary):
    points = [p["point"] for p in summary["metrics"][0]["points"]]
    lines = ["| metric | " + " | ".join(points) + " |", "|---" * (len(points) + 1) + "|"]
    paper = []
    for m in summary["metrics"]:
        lines.append(f"| {m['label']} | " + " | ".join(cell(p) for p in m["points"]) + " |")
        if any(p["paper"] is not None for p in m["points"]):
            paper.append(f"| paper: {m['label']} (ImageNet-1k, ViT-B) | " +
                         " | ".join("—" if p["paper"] is None else f"{p['paper']:.1f}" for p in m["points"]) + " |")
    return "\n".join(lines + paper)


def main():
    doc = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "docs", "ablations.md")
    text = open(doc).read()
    folder = os.path.join(os.path.dirname(doc), "ablations")

    def fill(match):
        name = match.group(1)
        path = os.path.join(folder, name, "summary.json")
        if not os.path.exists(path):
            body = f"Not measured yet: `bash scripts/run_ablations.sh {name}`."
        else:
            body = table(json.load(open(path)))
        return f"<!-- table: {name} -->\n{body}\n<!-- end table -->"

    new = re.sub(r"<!-- table: (\S+) -->\n.*?<!-- end table -->", fill, text, flags=re.S)
    open(doc, "w").write(new)
    print(f"ablation_tables: {doc} updated")


if __name__ == "__main__":
    main()
