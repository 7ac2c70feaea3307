"""Analysis + preprocessing, side by side: segcook vs MIST 2.3.0 (wall time per stage, and where the outputs differ).

Each tool runs its own command line on the same dataset.json, one after the other (never concurrently), with the same
number of workers, from a fresh output folder each repetition:
  MIST:    mist_analyze --data DJ --results R --nfolds K --num-workers-analyze W ; mist_preprocess --results R --numpy N --num-workers-preprocess W
  segcook: segcook analyze --data DJ --exp E --nfolds K --workers W             ; segcook preprocess --exp E --workers W
Timings are wall-clock seconds of each command (interpreter start + imports included, as a user sees them).
Timings go to <work>/<name>/timings.json (appended), so MIST's half and segcook's half can be run at different times;
every run ends with the report of what is there (plan differences, per-case shapes, crop boxes, intensities, labels).

Run:  PYTHONPATH=. python benchmarks/preprocess.py --data DATASET.json --name brats20 [--tools mist segcook] [--reps 1]
      PYTHONPATH=. python benchmarks/preprocess.py --name brats20 --report      (report only)
      PYTHONPATH=. python benchmarks/preprocess.py --real-ct DIR                (write a MIST/segcook dataset of the real
                                                                                 pyradiomics CTs under DIR, then use --data)
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MIST_BIN = Path(os.environ.get("MIST_BIN", "/work/peers/mist/bin"))
SEGCOOK = [sys.executable, "-m", "segcook.cli"] if not (Path(sys.executable).parent/"segcook").exists() else [str(Path(sys.executable).parent/"segcook")]
SHARED = ROOT.parent/"shared"/"data"/"pyradiomics"


def real_dataset(out:Path, names:list[str], modality:str) -> Path:
    "Copy real pyradiomics scans (<name>_image.nrrd / <name>_label.nrrd) into out/train/<name>/ and write out/dataset.json."
    for n in names:
        d = out/"train"/n; d.mkdir(parents=True, exist_ok=True)
        for kind in ("image", "label"):
            src = SHARED/f"{n}_{kind}.nrrd"
            if not src.exists(): sys.exit(f"{src} not found: the real scans live in ../shared/data (see its README)")
            if not (d/src.name).exists(): shutil.copyfile(src, d/src.name)
    ch = "ct" if modality == "ct" else "mr"
    dj = {"task": f"pyradiomics_{modality}", "modality": modality, "train-data": "train", "mask": ["_label."],
          "images": {ch: ["_image."]}, "labels": [0, 1], "final_classes": {"lesion": [1]}}
    (out/"dataset.json").write_text(json.dumps(dj, indent=2))
    return out/"dataset.json"


def timed(cmd:list[str], log:Path, env=None) -> float:
    "Run `cmd`, output to `log`; wall seconds (exits with the log's tail on failure)."
    t = time.perf_counter()
    with open(log, "w") as f: r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0: sys.exit(f"FAILED ({r.returncode}): {' '.join(cmd)}\n" + log.read_text()[-3000:])
    return dt


def run_mist(dj:Path, w:Path, nfolds:int, workers:int) -> dict:
    "mist_analyze then mist_preprocess into fresh folders under w/mist; seconds per stage."
    res, npy = w/"mist"/"results", w/"mist"/"numpy"
    shutil.rmtree(w/"mist", ignore_errors=True); res.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{MIST_BIN}:{os.environ['PATH']}", "COLUMNS": "120"}
    a = timed([str(MIST_BIN/"mist_analyze"), "--data", str(dj), "--results", str(res), "--nfolds", str(nfolds),
               "--num-workers-analyze", str(workers), "--overwrite"], w/"mist_analyze.log", env)
    p = timed([str(MIST_BIN/"mist_preprocess"), "--results", str(res), "--numpy", str(npy),
               "--num-workers-preprocess", str(workers), "--overwrite"], w/"mist_preprocess.log", env)
    return {"analyze": a, "preprocess": p}


def run_segcook(dj:Path, w:Path, nfolds:int, workers:int) -> dict:
    "segcook analyze then segcook preprocess into a fresh w/segcook; seconds per stage."
    exp = w/"segcook"
    shutil.rmtree(exp, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    a = timed([*SEGCOOK, "analyze", "--data", str(dj), "--exp", str(exp), "--nfolds", str(nfolds), "--workers", str(workers)],
              w/"segcook_analyze.log", env)
    p = timed([*SEGCOOK, "preprocess", "--exp", str(exp), "--workers", str(workers)], w/"segcook_preprocess.log", env)
    failed = json.loads((exp/"preprocessed"/"failed.json").read_text())
    if failed: print(f"segcook preprocess: {len(failed)} case(s) failed: {failed}", file=sys.stderr)
    return {"analyze": a, "preprocess": p}


# ---------------------------------------------------------------- comparison of outputs
def _mist_plan(w:Path) -> dict:
    c = json.loads((w/"mist"/"results"/"config.json").read_text())
    ct = c["preprocessing"].get("ct_normalization") or {}
    return {"target spacing (mm)": [round(s, 4) for s in c["spatial_config"]["target_spacing"]],
            "crop to foreground": c["preprocessing"]["crop_to_foreground"],
            "median resampled size": [round(s, 1) for s in c["preprocessing"]["median_resampled_image_size"]],
            "patch size": c["spatial_config"]["patch_size"],
            "nonzero normalisation": c["preprocessing"]["normalize_with_nonzero_mask"],
            "CT window": [ct.get("window_min"), ct.get("window_max")] if c["dataset_info"]["modality"] == "ct" else None,
            "CT mean / std": [ct.get("z_score_mean"), ct.get("z_score_std")] if c["dataset_info"]["modality"] == "ct" else None}


def _segcook_plan(w:Path) -> dict:
    c = json.loads((w/"segcook"/"config.json").read_text())
    s, chans = c["spatial"], c["channels"]
    ct = [ch for ch in chans if ch["norm"] == "ct"]
    nz = sorted({ch["use_nonzero"] for ch in chans})
    return {"target spacing (mm)": [round(v, 4) for v in s["target_spacing"]],
            "crop to foreground": s["crop_to_foreground"],
            "median resampled size": [round(v, 1) for v in s["median_size"]],
            "patch size": s["patch_size"],
            "nonzero normalisation": nz[0] if len(nz) == 1 else {ch["name"]: ch["use_nonzero"] for ch in chans},
            "CT window": ct[0]["window"] if ct else None,
            "CT mean / std": [ct[0]["mean"], ct[0]["std"]] if ct else None}


def _fmt(v):
    if isinstance(v, float): return f"{v:.4g}"
    if isinstance(v, list): return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _mist_bboxes(w:Path) -> dict:
    import csv
    with open(w/"mist"/"results"/"fg_bboxes.csv") as f:
        return {r["id"]: ([int(r[f"{a}_start"]) for a in "xyz"], [int(r[f"{a}_end"]) + 1 for a in "xyz"]) for r in csv.DictReader(f)}


def _hu(z:np.ndarray, mean_std, window) -> np.ndarray:
    "Normalised CT back to HU with the tool's own statistics, clipped to `window`."
    return np.clip(np.asarray(z, np.float64) * mean_std[1] + mean_std[0], *window)


def compare_cases(w:Path, pm:dict, ps:dict) -> list[dict]:
    "Per case: shapes, crop boxes, and (same grid) intensity and label differences."
    mist_crop, sc_crop = pm["crop to foreground"], ps["crop to foreground"]
    rows = []
    boxes = _mist_bboxes(w) if (w/"mist"/"results"/"fg_bboxes.csv").exists() else {}
    for d in sorted((w/"segcook"/"preprocessed").iterdir()):
        if not (d/"meta.json").exists(): continue
        cid, meta = d.name, json.loads((d/"meta.json").read_text())
        mi, ml = w/"mist"/"numpy"/"images"/f"{cid}.npy", w/"mist"/"numpy"/"labels"/f"{cid}.npy"
        if not mi.exists(): continue
        a = np.load(d/"image.npy", mmap_mode="r")                  # (C, X, Y, Z)
        b = np.moveaxis(np.load(mi, mmap_mode="r"), -1, 0)        # MIST: (X, Y, Z, C)
        r = {"id": cid, "segcook shape": list(a.shape[1:]), "MIST shape": list(b.shape[1:])}
        if cid in boxes and mist_crop and sc_crop:
            r["segcook crop"] = [meta["crop"]["start"], meta["crop"]["stop"]]; r["MIST crop"] = [boxes[cid][0], boxes[cid][1]]
        if a.shape == b.shape:
            diff = [np.abs(np.asarray(a[c], np.float64) - np.asarray(b[c], np.float64)) for c in range(a.shape[0])]
            r["max |diff| image"] = max(float(x.max()) for x in diff)
            r["mean |diff| image"] = float(np.mean([x.mean() for x in diff]))
            if pm["CT mean / std"] and ps["CT mean / std"]:   # resampling alone: undo each tool's normalisation
                win = [max(pm["CT window"][0], ps["CT window"][0]), min(pm["CT window"][1], ps["CT window"][1])]
                dh = [np.abs(_hu(a[c], ps["CT mean / std"], win) - _hu(b[c], pm["CT mean / std"], win)) for c in range(a.shape[0])]
                r["max |diff| HU"] = max(float(x.max()) for x in dh)
                r["p99.9 |diff| HU"] = max(float(np.percentile(x, 99.9)) for x in dh)
                r["interior max |diff| HU"] = max(float(x[2:-2, 2:-2, 1:-1].max()) for x in dh)   # away from the grid's edge
            r["corr"] = min(float(np.corrcoef(np.asarray(a[c]).ravel(), np.asarray(b[c]).ravel())[0, 1]) for c in range(a.shape[0]))
            la, lb = np.load(d/"label.npy")[0], np.load(ml)[..., 0]
            r["label voxels differing"] = float(np.mean(la != lb))
        rows.append(r)
    return rows


def report(w:Path, name:str):
    tf = w/"timings.json"
    tim = json.loads(tf.read_text()) if tf.exists() else {}
    print(f"\n## {name}\n")
    info = json.loads((w/"info.json").read_text()) if (w/"info.json").exists() else {}
    if info: print(f"dataset: {info.get('data')}; {info.get('cases')} case(s); workers {info.get('workers')}; nfolds {info.get('nfolds')}\n")
    print("| stage | MIST 2.3.0 (s), median | segcook (s), median | MIST / segcook, median of per-run ratios | per-run ratios | runs |\n|---|---|---|---|---|---|")
    val = lambda r, s: r["analyze"] + r["preprocess"] if s == "total" else r[s]
    for s in ("analyze", "preprocess", "total"):
        m = [val(r, s) for r in tim.get("mist", [])]; g = [val(r, s) for r in tim.get("segcook", [])]
        ratios = [x / y for x, y in zip(m, g)]
        print(f"| {s} | {_fmt(statistics.median(m)) if m else 'not run'} | {_fmt(statistics.median(g)) if g else 'not run'} | "
              f"{f'{statistics.median(ratios):.2f}' if ratios else 'n/a'} | {', '.join(f'{x:.2f}' for x in ratios)} | {len(m)}, {len(g)} |")
    if tim:
        print("\nall runs, analyze + preprocess (s), in order: " + "; ".join(f"{t}: " + ", ".join(f"{r['analyze']:.1f}+{r['preprocess']:.1f} ({r.get('when', '?')}, load {r.get('load', '?')})" for r in tim[t]) for t in tim))
    have_m, have_s = (w/"mist"/"results"/"config.json").exists(), (w/"segcook"/"config.json").exists()
    if not (have_m and have_s): print("\n(outputs of both tools are needed to compare them)"); return
    pm, ps = _mist_plan(w), _segcook_plan(w)
    print("\n| plan | MIST 2.3.0 | segcook | same |\n|---|---|---|---|")
    for k in pm:
        if not isinstance(pm[k], list) or ps[k] is None: same = pm[k] == ps[k]
        elif k == "median resampled size": same = bool(np.all(np.abs(np.subtract(pm[k], ps[k], dtype=float)) < 1))  # MIST stores int()
        else: same = bool(np.allclose(np.asarray(pm[k], float), np.asarray(ps[k], float), rtol=1e-3))
        print(f"| {k} | {_fmt(pm[k])} | {_fmt(ps[k])} | {'yes' if same else 'NO'}{' (MIST truncates to int)' if same and k == 'median resampled size' and pm[k] != ps[k] else ''} |")
    rows = compare_cases(w, pm, ps)
    if not rows: return
    print("\n| case | shape MIST | shape segcook | crop box MIST [start, stop) | crop box segcook | max abs diff image | mean abs diff | min corr | label voxels differing | abs diff HU, own stats undone: max / max inside (2-voxel border off) / 99.9th pct |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        hu = f"{r['max |diff| HU']:.3g} / {r['interior max |diff| HU']:.3g} / {r['p99.9 |diff| HU']:.3g}" if "max |diff| HU" in r else "-"
        print(f"| {r['id']} | {r['MIST shape']} | {r['segcook shape']} | {r.get('MIST crop', '-')} | {r.get('segcook crop', '-')} | "
              + (f"{r['max |diff| image']:.3g} | {r['mean |diff| image']:.3g} | {r['corr']:.5f} | {r['label voxels differing']:.2e} | {hu} |" if "corr" in r else "different grids | | | | |"))
    (w/"compare.json").write_text(json.dumps({"mist_plan": pm, "segcook_plan": ps, "cases": rows}, indent=1, default=str))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset.json (MIST-compatible; segcook reads the same file)")
    ap.add_argument("--name", default="bench", help="sub-folder of --work for this dataset")
    ap.add_argument("--work", default=str(ROOT/"benchmarks"/"_work"/"preprocess"))
    ap.add_argument("--tools", nargs="+", default=["mist", "segcook"], choices=["mist", "segcook"])
    ap.add_argument("--reps", type=int, default=1); ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nfolds", type=int, default=5)
    ap.add_argument("--report", action="store_true", help="only print the report of earlier runs")
    ap.add_argument("--real", metavar="DIR", help="write a dataset of real pyradiomics scans to DIR and exit")
    ap.add_argument("--real-names", nargs="+", default=["lung1", "lung2"]); ap.add_argument("--real-modality", default="ct")
    a = ap.parse_args()
    if a.real: print(real_dataset(Path(a.real), a.real_names, a.real_modality)); return
    w = Path(a.work)/a.name; w.mkdir(parents=True, exist_ok=True)
    if not a.report:
        if not a.data: ap.error("--data is needed to run (or --report)")
        dj = Path(a.data).resolve()
        ncases = len([p for p in (dj.parent/json.loads(dj.read_text())["train-data"]).iterdir() if p.is_dir()])
        (w/"info.json").write_text(json.dumps({"data": str(dj), "cases": ncases, "workers": a.workers, "nfolds": a.nfolds}))
        tf = w/"timings.json"
        for _ in range(a.reps):
            for t in a.tools:
                if t == "mist" and not (MIST_BIN/"mist_analyze").exists(): print(f"MIST not installed at {MIST_BIN}; skipped"); continue
                load = os.getloadavg()[0]
                r = (run_mist if t == "mist" else run_segcook)(dj, w, a.nfolds, a.workers) | {"load": round(load, 1), "when": time.strftime("%H:%M:%S")}
                tim = json.loads(tf.read_text()) if tf.exists() else {}
                tim.setdefault(t, []).append(r); tf.write_text(json.dumps(tim, indent=1))
                print(f"{t}: analyze {r['analyze']:.1f} s, preprocess {r['preprocess']:.1f} s (1-min load before: {load:.1f})", flush=True)
    report(w, a.name)


if __name__ == "__main__": main()
