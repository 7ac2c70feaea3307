"""Evaluation speed, side by side: segcook vs MIST 2.3.0's evaluator, MONAI and DeepMind surface-distance.

Per case: Dice + HD95 + NSD (1 mm) for WT/TC/ET on synthetic BraTS-like 240 x 240 x 155 label maps
(nested blobs; the prediction is shifted by up to 2 voxels and carries a few dust specks).
Run:  PYTHONPATH=. python benchmarks/evaluate.py [--cases 4] [--mist-python /work/peers/mist/bin/python]
MIST runs in its own venv (a subprocess reading the same .npy / .nii.gz files).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
from scipy import ndimage as ndi

CLASSES = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
SHAPE, SP = (240, 240, 155), (1.0, 1.0, 1.0)

def make_case(seed):
    rng = np.random.default_rng(seed)
    X, Y, Z = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    noise = ndi.zoom(rng.standard_normal((12, 12, 8)), [s / n for s, n in zip(SHAPE, (12, 12, 8))], order=1)[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    c, r = rng.uniform((90, 90, 60), (150, 150, 95)), rng.uniform(22, 35, 3)
    d = np.sqrt(((X - c[0]) / r[0])**2 + ((Y - c[1]) / r[1])**2 + ((Z - c[2]) / r[2])**2) + 0.15 * noise
    g = np.zeros(SHAPE, np.uint8); g[d < 1] = 2; g[d < 0.6] = 3; g[d < 0.45] = 1
    p = np.roll(g, tuple(rng.integers(-2, 3, 3)), (0, 1, 2))
    for _ in range(3):
        q = rng.integers(20, 130, 3); p[q[0]:q[0]+3, q[1]:q[1]+3, q[2]:q[2]+2] = rng.integers(1, 4)
    return g, p

def t_min(fn, reps):
    best, out = np.inf, None
    for _ in range(reps):
        t = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t)
    return best, out

def run_segcook(g, p):
    from segcook.metrics import case_metrics
    r = case_metrics(g, p, CLASSES, SP, ["dice", "haus95", "surf_dice"], 1.0)
    return {f"{c}_{m}": r[f"{c}_{m}"] for c in CLASSES for m in ("dice", "haus95", "surf_dice")}

def run_deepmind(g, p):
    if not hasattr(np, "Inf"): np.Inf = np.inf
    import surface_distance as sd
    out = {}
    for c, l in CLASSES.items():
        G, P = np.isin(g, l), np.isin(p, l)
        s = sd.compute_surface_distances(G, P, SP)        # once per class, read three metrics
        out.update({f"{c}_dice": sd.compute_dice_coefficient(G, P), f"{c}_haus95": sd.compute_robust_hausdorff(s, 95),
                    f"{c}_surf_dice": sd.compute_surface_dice_at_tolerance(s, 1.0)})
    return out

def run_monai(g, p):
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
    out = {}
    for c, l in CLASSES.items():
        G = torch.from_numpy(np.isin(g, l))[None, None].float(); P = torch.from_numpy(np.isin(p, l))[None, None].float()
        out[f"{c}_dice"] = compute_dice(P, G, include_background=True).item()
        out[f"{c}_haus95"] = compute_hausdorff_distance(P, G, include_background=True, percentile=95, spacing=SP).item()
        out[f"{c}_surf_dice"] = compute_surface_dice(P, G, class_thresholds=[1.0], include_background=True, spacing=SP).item()
    return out

MIST_SNIPPET = r'''
import sys, json, time, numpy as np, pandas as pd
from mist.evaluation.evaluator import Evaluator
cases, reps = json.loads(sys.argv[1]), int(sys.argv[2])
cfg = {c: {"labels": l, "metrics": {"dice": {}, "haus95": {}, "surf_dice": {"tolerance": 1.0}}} for c, l in {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}.items()}
df = pd.DataFrame([{"id": c["id"], "mask": c["gt_nii"], "prediction": c["pr_nii"]} for c in cases])
ev = Evaluator(df, cfg, "/tmp/_mist_bench.csv")
res = []
for c in cases:
    g, p = np.load(c["gt"]), np.load(c["pr"])
    best = 1e9
    for _ in range(reps):
        t = time.perf_counter(); r, err = ev._evaluate_single_patient(c["id"], g, p, (1.0, 1.0, 1.0)); best = min(best, time.perf_counter() - t)
    t = time.perf_counter(); r2, err2 = ev._evaluate_patient_pipeline(c["id"]); e2e = time.perf_counter() - t
    res.append({"id": c["id"], "time": best, "e2e": e2e, "values": {k: float(v) for k, v in r.items() if k != "id"}})
print("MISTJSON" + json.dumps(res))
'''

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--cases", type=int, default=4); ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--mist-python", default="/work/peers/mist/bin/python"); ap.add_argument("--skip-monai", action="store_true")
    a = ap.parse_args()
    from segcook.core import from_xyz, write_image
    from segcook.evaluate import evaluate_case
    d = Path(tempfile.mkdtemp(prefix="segcook_bench_"))
    cases = []
    for i in range(a.cases):
        g, p = make_case(i)
        np.save(d / f"gt{i}.npy", g); np.save(d / f"pr{i}.npy", p)
        write_image(from_xyz(g, spacing=SP), d / f"gt{i}.nii.gz"); write_image(from_xyz(p, spacing=SP), d / f"pr{i}.nii.gz")
        cases.append({"id": f"case{i}", "gt": str(d / f"gt{i}.npy"), "pr": str(d / f"pr{i}.npy"), "gt_nii": str(d / f"gt{i}.nii.gz"), "pr_nii": str(d / f"pr{i}.nii.gz")})
    load0 = os.getloadavg()[0]
    times = {k: [] for k in ("segcook", "DeepMind surface-distance", "MONAI", "MIST 2.3.0")}
    e2e = {"segcook": [], "MIST 2.3.0": []}
    vals = {k: [] for k in times}
    run_segcook(*make_case(99))  # warm up imports and lookup tables
    for c in cases:
        g, p = np.load(c["gt"]), np.load(c["pr"])
        for name, fn in (("segcook", run_segcook), ("DeepMind surface-distance", run_deepmind)) + ((("MONAI", run_monai),) if not a.skip_monai else ()):
            t, v = t_min(lambda: fn(g, p), 1 if name == "MONAI" else a.reps); times[name].append(t); vals[name].append(v)
        t, _ = t_min(lambda: evaluate_case(c["id"], c["gt_nii"], c["pr_nii"], CLASSES, ["dice", "haus95", "surf_dice"]), 1); e2e["segcook"].append(t)
    mist_err = None
    if Path(a.mist_python).exists():
        r = subprocess.run([a.mist_python, "-c", MIST_SNIPPET, json.dumps(cases), str(a.reps)], capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith("MISTJSON")]
        if line:
            for m in json.loads(line[0][8:]):
                times["MIST 2.3.0"].append(m["time"]); e2e["MIST 2.3.0"].append(m["e2e"]); vals["MIST 2.3.0"].append(m["values"])
        else: mist_err = (r.stderr or r.stdout)[-800:]
    else: mist_err = f"{a.mist_python} not found"
    ref = vals["segcook"]
    def maxdiff(name):
        if not vals[name]: return "n/a"
        rel = [abs(v[k] - r[k]) / max(abs(r[k]), 1e-12) for v, r in zip(vals[name], ref) for k in r]
        return f"{max(rel):.1e}"
    fastest = min((np.mean(v), k) for k, v in times.items() if v and k != "segcook")
    print(f"\n{a.cases} cases of 240x240x155 (1 mm), classes WT/TC/ET, metrics Dice + HD95 + NSD@1mm; "
          f"compute time per case from arrays in memory (best of {a.reps} runs; MONAI 1 run; MIST in its own venv right after); "
          f"1-min load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
    print("| evaluator | s / case | time / segcook | max rel. difference to segcook (all values) |")
    print("|---|---|---|---|")
    for k, v in times.items():
        if not v: print(f"| {k} | not run | | |"); continue
        print(f"| {k} | {np.mean(v):.3f} | {np.mean(v) / np.mean(times['segcook']):.1f}x | {maxdiff(k) if k != 'segcook' else '-'} |")
    print(f"\nsegcook is {fastest[0] / np.mean(times['segcook']):.1f}x faster than the fastest other evaluator ({fastest[1]}).")
    if e2e["MIST 2.3.0"]:
        print(f"\nEnd to end per case (read both .nii.gz + compute): segcook {np.mean(e2e['segcook']):.3f} s, MIST 2.3.0 {np.mean(e2e['MIST 2.3.0']):.3f} s "
              f"({np.mean(e2e['MIST 2.3.0']) / np.mean(e2e['segcook']):.1f}x)")
    else: print(f"\nEnd to end per case (read + compute): segcook {np.mean(e2e['segcook']):.3f} s")
    if mist_err: print(f"\nMIST not run: {mist_err}")
    print("\nMONAI's HD95 and NSD use the voxel-border definition (its default), so its values differ by design.")

if __name__ == "__main__": main()
