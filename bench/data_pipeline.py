"""torchvision side of bench/data_pipeline: PIL decode + RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor
+ Normalize(0.5, 0.5) on one thread over a folder of JPEGs, as torchvision's ImageFolder loads them. Prints one
JSON line with the median images/s of the whole pipeline and of the decode alone.
Needs torchvision and Pillow, which scripts/setup.sh installs into the venv (torchvision 0.26.0 is the release
built against torch 2.11.0).
"""
import argparse
import json
import os
import sys
import time

import torch

try:
    from PIL import Image
    from torchvision import transforms as T
except ImportError as e:
    sys.exit(f"bench/data_pipeline.py needs torchvision and Pillow ({e}); install them with:\n"
             "  bash scripts/setup.sh (it installs both into the venv)")


def load(path):
    # torchvision.datasets.folder.pil_loader
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--interpolation", default="bilinear", choices=["bilinear", "bicubic"])
    args = p.parse_args()
    torch.set_num_threads(1)
    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[args.interpolation]
    tf = T.Compose([T.RandomResizedCrop(224, interpolation=interp), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.5] * 3, [0.5] * 3)])
    files = sorted(os.path.join(args.folder, f) for f in os.listdir(args.folder)
                   if f.lower().endswith((".jpg", ".jpeg")))
    if not files:
        sys.exit(f"no JPEG files in {args.folder}")
    rates, decode_rates = [], []
    for _ in range(args.epochs):
        t = time.perf_counter()
        for f in files:
            tf(load(f))
        rates.append(len(files) / (time.perf_counter() - t))
        t = time.perf_counter()
        for f in files:
            load(f)
        decode_rates.append(len(files) / (time.perf_counter() - t))
    rates.sort()
    decode_rates.sort()
    print(json.dumps({"img_per_s": rates[len(rates) // 2], "decode_img_per_s": decode_rates[len(decode_rates) // 2],
                      "torchvision": __import__("torchvision").__version__, "pillow": Image.__version__}))


if __name__ == "__main__":
    main()
