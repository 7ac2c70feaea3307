"""Test-set Dice of one trained region (sigmoid) experiment under other region thresholds, without retraining.

    PYTHONPATH=. .venv/bin/python benchmarks/ablation_thresholds.py --exp E --data dataset.json --probs DIR

DIR holds `<id>_probs.npz` of the test cases (`segcook predict --exp E --input dataset.json --out DIR --probs npz`).
For each threshold t in --grid, every region is thresholded at t (nested, largest region first: segcook's
`regions_to_labels`); also the plan's own thresholds. Dice of WT/TC/ET (BraTS: labels {1,2,3}, {1,3}, {3}) per case,
printed as the mean over the test cases. Used in benchmarks/RESULTS.md section 17 to separate calibration from learning.
"""
import argparse, json
from pathlib import Path
import numpy as np, SimpleITK as sitk
from segcook.core import load_plan
from segcook.inference import regions_to_labels

CLASSES = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}


def dice(a:np.ndarray, b:np.ndarray) -> float:
    "Dice of two boolean masks (1 when both are empty)."
    s = int(a.sum() + b.sum())
    return 1.0 if s == 0 else 2 * int((a & b).sum()) / s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True); p.add_argument("--data", required=True); p.add_argument("--probs", required=True)
    p.add_argument("--grid", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6])
    a = p.parse_args()
    plan, dj = load_plan(Path(a.exp)/"config.json"), Path(a.data)
    root = dj.parent/json.loads(dj.read_text())["test-data"]
    gts = {c.name: sitk.GetArrayFromImage(sitk.ReadImage(str(next(c.glob("*_seg.nii.gz"))))) for c in sorted(root.iterdir())}
    probs = {i: np.load(Path(a.probs)/f"{i}_probs.npz")["probs"] for i in gts}
    regions = plan.labels.regions
    arms = {"plan " + json.dumps(plan.labels.region_thresholds): plan.labels.region_thresholds}
    arms.update({f"all {t}": {r: t for r in regions} for t in a.grid})
    print("| thresholds | WT | TC | ET |\n|---|---|---|---|")
    for name, thr in arms.items():
        d = {k: [] for k in CLASSES}
        for i, gt in gts.items():
            lbl = regions_to_labels(probs[i], regions, thr)
            if lbl.shape != gt.shape: lbl = np.transpose(lbl, (2, 1, 0))   # npz in (x, y, z); SimpleITK arrays are (z, y, x)
            for k, ls in CLASSES.items(): d[k].append(dice(np.isin(lbl, ls), np.isin(gt, ls)))
        print(f"| {name} | " + " | ".join(f"{np.mean(d[k]):.3f}" for k in CLASSES) + " |")


if __name__ == "__main__": main()
