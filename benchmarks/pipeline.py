"""The whole phantom pipeline on the CPU, side by side: segcook's stages vs `mist_run_all` (MIST 2.3.0).

    PYTHONPATH=. .venv/bin/python benchmarks/pipeline.py [--cases 8] [--test-cases 2] [--size 48 48 40]
        [--patch 32 32 32] [--nfolds 2] [--epochs 3] [--steps 10] [--workers 2]

Same data: one phantom BraTS dataset (`segcook phantom`, --cases training + --test-cases held-out test cases, 4 MR
channels, labels 1-3, `test-data` in dataset.json). Same budget: --nfolds folds, every fold trained for --epochs x
--steps steps of batch 2 at patch --patch, on the CPU, OMP_NUM_THREADS=1 (torch takes one intra-op thread from it in
both tools). Each tool runs with its own defaults otherwise (network, loss, optimiser, LR schedule, augmentation,
validation, test-time flips), one tool after the other, never concurrently:

  segcook (its CLI, one command per stage, each timed as a user sees it, interpreter start included):
    segcook analyze --data DJ --exp E --nfolds K ; (config.json: spatial.patch_size = P)
    segcook preprocess --exp E ; segcook train --exp E --epochs N --steps-per-epoch S
    segcook predict --exp E --oof ; segcook evaluate --exp E --name oof           (what mist_run_all also does)
    segcook predict --exp E --input DJ --out E/predictions/test                   (the fold ensemble on the test cases)
  MIST: `mist_run_all --data DJ --results R --numpy NP --nfolds K --patch-size P --epochs N --warmup-epochs 0
        --batch-size-per-gpu 2 --overwrite`, run through mist.cli.run_all_entrypoint.run_all_entry in MIST's venv with
        two additions: (1) before its preprocess stage, config.json's training.min_steps_per_epoch is set to S and
        training.hardware.num_cpu_workers to --workers (MIST has no CLI flag for either; its defaults are 250 steps and 8
        loader workers); (2) its stage functions are wrapped with timers (analyze_entry, preprocess_entry,
        Patch3DTrainer.fit, test_on_fold = out-of-fold inference, run_finalize = OOF evaluation + ensembled test-set
        inference). --warmup-epochs 0 because MIST refuses warmup_epochs (default 20) >= epochs. Nothing in MIST needed
        CUDA: on the CPU it picks its generic loader, fp32, and falls back to the CPU for inference with a warning.
Scoring (outside both timings): `segcook evaluate --paths CSV --classes classes.json ({"WT":[1,2,3],"TC":[1,3],"ET":[3]})
--metrics dice` on each tool's test-set predictions against the same ground truth.

Measured 2026-11-22 16:03-16:10 UTC on the shared 2-core machine, defaults (8 + 2 cases 4x48x48x40, patch 32^3, 2 folds x 3
epochs x 10 steps, batch 2, MIST loader workers 2), 1-min load average at start/end: segcook 0.9/3.1, MIST 3.1/2.1:

| stage | segcook (s) | MIST 2.3.0 (s) |
|---|---|---|
| analyze | 2.1 | 0.2 |
| preprocess | 0.9 | 0.3 |
| train (2 folds) | 101.4 | 121.2 |
| out-of-fold inference | 60.8 | 49.7 |
| OOF evaluation + test-set inference | 32.9 (evaluate 1.9 + test 31.0) | 25.9 |
| interpreter start, imports, glue | (inside each stage) | 5.3 |
| total (wall) | 198.1 | 202.6 |

Test-set Dice (segcook evaluate on both tools' predictions), mean of 2 cases, WT / TC / ET:
segcook 0.565 / 0.396 / 0.325 (case 000: 0.289 / 0.121 / 0.093; case 001: 0.842 / 0.672 / 0.557);
MIST    0.836 / 0.827 / 0.818 (case 000: 0.704 / 0.669 / 0.705; case 001: 0.967 / 0.985 / 0.931).
segcook's stage times include a fresh interpreter and imports per command (about 2 s each); MIST's are measured inside
one process. At this tiny budget (60 steps per fold) the defaults decide the Dice: MIST trains with AdamW 1e-3, cosine,
deep supervision; segcook's plan default is Adam 3e-4, constant LR, no deep supervision. One run; 2 test cases.
"""
import argparse, csv, json, os, shutil, subprocess, sys, textwrap, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIST_BIN = Path(os.environ.get("MIST_BIN", "/work/peers/mist/bin"))
SEGCOOK = Path(sys.executable).parent/"segcook"
CLASSES = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}

MIST_RUN = textwrap.dedent("""
import json, sys, time
from pathlib import Path
import mist.cli.run_all_entrypoint as RA, mist.cli.train_entrypoint as TE
from mist.training.trainers.patch_3d_trainer import Patch3DTrainer
times = {{}}
def timer(name, fn):
    def w(*a, **k):
        t = time.perf_counter()
        try: return fn(*a, **k)
        finally: times[name] = times.get(name, 0.0) + time.perf_counter() - t
    return w
_pre = RA.preprocess_entry
def pre(argv):
    p = Path({results!r})/"config.json"; c = json.loads(p.read_text())
    c["training"]["min_steps_per_epoch"] = {steps}; c["training"]["hardware"]["num_cpu_workers"] = {workers}
    p.write_text(json.dumps(c, indent=2))
    return _pre(argv)
RA.analyze_entry = timer("analyze", RA.analyze_entry); RA.preprocess_entry = timer("preprocess", pre)
Patch3DTrainer.fit = timer("train", Patch3DTrainer.fit)
TE.test_on_fold = timer("oof_predict", TE.test_on_fold); TE.run_finalize = timer("oof_evaluate+test_predict", TE.run_finalize)
RA.run_all_entry({argv!r})
print("TIMES " + json.dumps(times))
""")


def env1():
    "One OpenMP thread for everyone, MIST's bin on PATH, a wide console for MIST's rich output."
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": f"{MIST_BIN}:{os.environ['PATH']}",
            "COLUMNS": "120", "PYTHONPATH": str(ROOT)}


def timed(cmd, log:Path) -> tuple[float, str]:
    "Run `cmd` with output to `log`; wall seconds and the output (exits with the log's tail on failure)."
    t = time.perf_counter()
    with open(log, "w") as f: r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env1())
    dt = time.perf_counter() - t
    if r.returncode: sys.exit(f"FAILED ({r.returncode}): {' '.join(map(str, cmd))}\n" + log.read_text()[-4000:])
    return dt, log.read_text()


def run_segcook(w:Path, dj:Path, a) -> dict:
    "Every segcook stage through its CLI into a fresh experiment; wall seconds per stage."
    e = w/("segcook_mistlike" if a.match_mist else "segcook"); shutil.rmtree(e, ignore_errors=True); s = {}
    s["analyze"], _ = timed([SEGCOOK, "analyze", "--data", dj, "--exp", e, "--nfolds", a.nfolds, "--workers", 1], w/"sc_analyze.log")
    c = json.loads((e/"config.json").read_text()); c["spatial"]["patch_size"] = list(a.patch); c["train"]["batch_size"] = 2
    if a.match_mist:   # MIST 2.3.0's training defaults, to separate the tool from its defaults
        c["train"].update(optimizer="adamw", lr=1e-3, scheduler="cosine", deep_supervision=2, arch_kwargs={"residual": True})
    (e/"config.json").write_text(json.dumps(c, indent=2))
    s["preprocess"], _ = timed([SEGCOOK, "preprocess", "--exp", e, "--workers", 1], w/"sc_preprocess.log")
    s["train"], _ = timed([SEGCOOK, "train", "--exp", e, "--epochs", a.epochs, "--steps-per-epoch", a.steps], w/"sc_train.log")
    s["oof_predict"], _ = timed([SEGCOOK, "predict", "--exp", e, "--oof", "--device", "cpu"], w/"sc_oof.log")
    s["oof_evaluate"], _ = timed([SEGCOOK, "evaluate", "--exp", e, "--name", "oof", "--workers", 1], w/"sc_oof_eval.log")
    s["test_predict"], _ = timed([SEGCOOK, "predict", "--exp", e, "--input", dj, "--out", e/"predictions/test", "--device", "cpu"], w/"sc_test.log")
    return {"stages": s, "total": sum(s.values()), "test_dir": e/"predictions/test"}


def run_mist(w:Path, dj:Path, a) -> dict:
    "mist_run_all (with the two config knobs set and stage timers) into fresh folders; wall seconds per stage and in all."
    m = w/"mist"; shutil.rmtree(m, ignore_errors=True); m.mkdir()
    argv = ["--data", str(dj), "--results", str(m/"results"), "--numpy", str(m/"numpy"), "--nfolds", str(a.nfolds),
            "--patch-size", *map(str, a.patch), "--epochs", str(a.epochs), "--warmup-epochs", "0",
            "--batch-size-per-gpu", "2", "--overwrite"]
    code = MIST_RUN.format(results=str(m/"results"), steps=a.steps, workers=a.workers, argv=argv)
    total, out = timed([MIST_BIN/"python", "-c", code], w/"mist_run_all.log")
    s = json.loads([l for l in out.splitlines() if l.startswith("TIMES ")][-1][6:])
    return {"stages": s, "total": total, "test_dir": m/"results/predictions/test"}


def score(w:Path, name:str, pred_dir:Path, dj:Path) -> dict:
    "segcook evaluate (Dice WT/TC/ET) of `pred_dir` against the test cases' ground truth; per case and mean."
    d = json.loads(dj.read_text()); root = dj.parent/d["test-data"]
    rows = [{"id": c.name, "mask": str(next(c.glob("*_seg.nii.gz"))), "prediction": str(pred_dir/f"{c.name}.nii.gz")} for c in sorted(root.iterdir())]
    for r in rows:
        if not Path(r["prediction"]).exists(): sys.exit(f"{name}: no prediction {r['prediction']}")
    paths = w/f"{name}_test_paths.csv"
    with open(paths, "w", newline="") as f: wr = csv.DictWriter(f, ["id", "mask", "prediction"]); wr.writeheader(); wr.writerows(rows)
    out, cls = w/f"{name}_test_results.csv", w/"classes.json"
    cls.write_text(json.dumps(CLASSES))
    timed([SEGCOOK, "evaluate", "--paths", paths, "--classes", cls, "--metrics", "dice", "--out", out, "--workers", 1], w/f"{name}_score.log")
    res = {r["id"]: r for r in csv.DictReader(open(out))}
    def col(r, k): return float(next(v for c, v in r.items() if c.lower() in (f"{k}_dice".lower(), f"dice_{k}".lower(), f"{k}".lower())))
    ids = [r["id"] for r in rows]
    per = {i: {k: col(res[i], k) for k in CLASSES} for i in ids}
    return {"per_case": per, "mean": {k: sum(per[i][k] for i in ids) / len(ids) for k in CLASSES}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT/"benchmarks/_work/pipeline"))
    p.add_argument("--cases", type=int, default=8); p.add_argument("--test-cases", type=int, default=2)
    p.add_argument("--size", type=int, nargs=3, default=[48, 48, 40]); p.add_argument("--patch", type=int, nargs=3, default=[32, 32, 32])
    p.add_argument("--nfolds", type=int, default=2); p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=10); p.add_argument("--workers", type=int, default=2, help="MIST loader workers")
    p.add_argument("--tools", nargs="+", default=["segcook", "mist"])
    p.add_argument("--match-mist", action="store_true", help="segcook trains with MIST 2.3.0's defaults (AdamW 1e-3, cosine, residual, 2 DS heads); stored as 'segcook_mistlike'")
    a = p.parse_args()
    w = Path(a.work); w.mkdir(parents=True, exist_ok=True)
    dj = w/"data/dataset.json"
    if not dj.exists():
        timed([SEGCOOK, "phantom", "--out", w/"data", "--cases", a.cases, "--test-cases", a.test_cases, "--size", *a.size, "--workers", 1], w/"phantom.log")
    res = json.loads((w/"result.json").read_text()) if (w/"result.json").exists() else {}
    for tool in a.tools:
        load = os.getloadavg()[0]; t0 = time.strftime("%H:%M:%S", time.gmtime())
        r = (run_segcook if tool == "segcook" else run_mist)(w, dj, a)
        r["dice"] = score(w, tool, r.pop("test_dir"), dj)
        res[tool + ("_mistlike" if tool == "segcook" and a.match_mist else "")] = {**r, "load_start": load, "load_end": os.getloadavg()[0], "start_utc": t0, "settings": vars(a)}
        print(f"{tool}: total {r['total']:.0f} s, test Dice {r['dice']['mean']} (load {load:.1f})", file=sys.stderr, flush=True)
        (w/"result.json").write_text(json.dumps(res, indent=1, default=str))
    if not {"segcook", "mist"} <= set(res): return
    sc, mi = res["segcook"], res["mist"]
    print(f"\nPhantom BraTS, {a.cases} training + {a.test_cases} test cases 4x{'x'.join(map(str, a.size))}; {a.nfolds} folds x "
          f"{a.epochs} epochs x {a.steps} steps, batch 2, patch {'x'.join(map(str, a.patch))}, CPU, OMP_NUM_THREADS=1, "
          f"{os.cpu_count()} cores; 1-min load average at start/end: segcook {sc['load_start']:.1f}/{sc['load_end']:.1f}, "
          f"MIST {mi['load_start']:.1f}/{mi['load_end']:.1f}\n")
    print("| stage | segcook (s) | MIST 2.3.0 (s) |\n|---|---|---|")
    for k, sk in [("analyze", "analyze"), ("preprocess", "preprocess"), ("train", "train"), ("out-of-fold inference", "oof_predict")]:
        print(f"| {k} | {sc['stages'][sk]:.1f} | {mi['stages'].get(sk, float('nan')):.1f} |")
    print(f"| OOF evaluation + test-set inference | {sc['stages']['oof_evaluate'] + sc['stages']['test_predict']:.1f} "
          f"(evaluate {sc['stages']['oof_evaluate']:.1f} + test {sc['stages']['test_predict']:.1f}) | {mi['stages'].get('oof_evaluate+test_predict', float('nan')):.1f} |")
    print(f"| interpreter start, imports, glue (MIST: one process; segcook's are inside each stage) | - | {mi['total'] - sum(mi['stages'].values()):.1f} |")
    print(f"| **total (wall)** | **{sc['total']:.1f}** | **{mi['total']:.1f}** |")
    print("\nTest-set Dice (segcook evaluate on both tools' predictions):\n\n| tool | case | WT | TC | ET |\n|---|---|---|---|---|")
    for name, r in (("segcook", sc), ("MIST 2.3.0", mi)):
        for i, d in r["dice"]["per_case"].items(): print(f"| {name} | {i} | {d['WT']:.3f} | {d['TC']:.3f} | {d['ET']:.3f} |")
        m = r["dice"]["mean"]; print(f"| {name} | **mean** | **{m['WT']:.3f}** | **{m['TC']:.3f}** | **{m['ET']:.3f}** |")


if __name__ == "__main__": main()
