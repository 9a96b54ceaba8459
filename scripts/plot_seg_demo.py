"""The README's segmentation picture: validation scenes as image | ground truth | NEPA | random init.

usage: plot_seg_demo.py <scenes dir> <NEPA predictions dir> <random-init predictions dir> <out.png>
The prediction folders hold nepa_seg --predict outputs (<name>_labels.png, paletted); the ground truth is the
scene's annotation reduced as training sees it (0 -> ignore, shown black; k -> k - 1) in the same palette.
"""
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

SCALE = 4


def main():
    scenes, nepa, random_init, out = sys.argv[1:5]
    names = sorted(f[: -len("_labels.png")] for f in os.listdir(nepa) if f.endswith("_labels.png"))
    if not names:
        sys.exit(f"plot_seg_demo.py: no *_labels.png in {nepa}")
    rows = []
    for name in names:
        pred_nepa = Image.open(os.path.join(nepa, name + "_labels.png"))
        palette = pred_nepa.getpalette()
        ann = np.array(Image.open(os.path.join(scenes, "annotations", "validation", name + ".png")))
        truth = Image.fromarray(np.where(ann == 0, 255, ann.astype(np.int64) - 1).astype(np.uint8), "P")
        truth.putpalette(palette)
        image = Image.open(os.path.join(scenes, "images", "validation", name + ".jpg")).convert("RGB")
        panels = [image, truth.convert("RGB"), pred_nepa.convert("RGB"),
                  Image.open(os.path.join(random_init, name + "_labels.png")).convert("RGB")]
        rows.append([p.resize((p.width * SCALE, p.height * SCALE), Image.NEAREST) for p in panels])
    classes = [l.strip() for l in open(os.path.join(scenes, "classes.txt")) if l.strip()]
    w, h, gap, head = rows[0][0].width, rows[0][0].height, 6, 18
    per_line, line_h = 4, 16
    legend_h = line_h * ((len(classes) + per_line - 1) // per_line) + 8
    sheet = Image.new("RGB", (4 * w + 3 * gap, head + len(rows) * (h + gap) + legend_h), "white")
    draw = ImageDraw.Draw(sheet)
    # The legend: each class's colour, from the prediction's palette; black = ignored in the ground truth.
    top = head + len(rows) * (h + gap) + 4
    for i, name in enumerate(classes):
        x, y = (i % per_line) * ((4 * w + 3 * gap) // per_line) + 4, top + (i // per_line) * line_h
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=tuple(palette[3 * i: 3 * i + 3]))
        draw.text((x + 14, y + 1), name, fill="black")
    for c, title in enumerate(("image", "ground truth", "NEPA backbone", "random init")):
        draw.text((c * (w + gap) + 4, 3), title, fill="black")
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            sheet.paste(panel, (c * (w + gap), head + r * (h + gap)))
    sheet.save(out)
    print(f"{out}: {len(rows)} validation scenes")


if __name__ == "__main__":
    main()
