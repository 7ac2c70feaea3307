"""The whole phantom pipeline on the CPU, side by side: segcook's stages vs `mist_run_all` (MIST 2.3.0), over seeds.

    PYTHONPATH=. .venv/bin/python benchmarks/pipeline.py [--cases 8] [--test-cases 6] [--size 48 48 40]
        [--patch 32 32 32] [--nfolds 2] [--epochs 5] [--steps 10] [--workers 2] [--seeds 0 1 ...] [--skip-mist]
        [--arm NAME] [--segcook-set KEY=VALUE ...] [--segcook-analyze FLAGS] [--segcook-train FLAGS]
        [--segcook-predict FLAGS] [--ckpt best|last] [--no-oof] [--work DIR] [--data dataset.json] [--summary]

MIST's venv (the script runs `$MIST_BIN/python`, default /work/peers/mist/bin), built with the local CPU torch:

    python3 -m venv /work/peers/mist && /work/peers/mist/bin/pip install torch==2.13.0
    PIP_CONSTRAINT=/work/peers/constraints.txt /work/peers/mist/bin/pip install mist-medical==2.3.0   # pins torch==2.13.0
    /work/peers/mist/bin/pip check

Same data: one phantom BraTS dataset (`segcook phantom`, --cases training + --test-cases held-out test cases, 4 MR
channels, labels 1-3, `test-data` in dataset.json), made once under --work (or given with --data). Same budget:
--nfolds folds, every fold trained for --epochs x --steps steps of batch 2 at patch --patch, on the CPU,
OMP_NUM_THREADS=1 (torch takes one intra-op thread from it in both tools). Each tool runs with its own defaults
otherwise (network, loss, optimiser, LR schedule, augmentation, validation, test-time flips), one after the other:

  segcook (its CLI, one command per stage, each timed as a user sees it, interpreter start included):
    segcook analyze --data DJ --exp E --nfolds K [--segcook-analyze]; config.json: spatial.patch_size = P,
        train.seed = SEED, then every --segcook-set KEY=VALUE (dotted key, JSON value: `labels.regions=null`)
    segcook preprocess --exp E ; segcook train --exp E --epochs N --steps-per-epoch S [--segcook-train]
    (--ckpt last: every fold's last.pt is copied over best.pt, so predict uses the last epoch's weights)
    segcook predict --exp E --oof ; segcook evaluate --exp E --name oof      (what mist_run_all also does; --no-oof skips)
    segcook predict --exp E --input DJ --out E/predictions/test [--segcook-predict]   (the fold ensemble on the test cases)
  MIST: `mist_run_all --data DJ --results R --numpy NP --nfolds K --patch-size P --epochs N --warmup-epochs 0
        --batch-size-per-gpu 2 --overwrite`, run through mist.cli.run_all_entrypoint.run_all_entry in MIST's venv with
        two additions: (1) before its preprocess stage, config.json's training.min_steps_per_epoch is set to S,
        training.seed to SEED and training.hardware.num_cpu_workers to --workers (MIST has no CLI flag for these;
        its defaults are 250 steps, seed 42 and 8 loader workers); (2) its stage functions are wrapped with timers
        (analyze_entry, preprocess_entry, Patch3DTrainer.fit, test_on_fold = out-of-fold inference, run_finalize =
        OOF evaluation + ensembled test-set inference). --warmup-epochs 0 because MIST refuses warmup_epochs
        (default 20) >= epochs. Nothing in MIST needed CUDA: on the CPU it picks its generic loader, fp32, and falls
        back to the CPU for inference with a warning.
Seeds: --seeds runs both tools once per seed (segcook: train.seed, the weights and patch draws, the folds stay
analyze's; MIST: training.seed). Every run is stored as WORK/results/<arm>_s<seed>.json, so arms and seeds can run
in separate processes (two at a time on this machine) and be added later; the printed table covers every stored run.
Scoring (outside both timings): `segcook evaluate --paths CSV --classes classes.json ({"WT":[1,2,3],"TC":[1,3],"ET":[3]})
--metrics dice` on each tool's test-set predictions against the same ground truth; per run the mean over the test
cases, then per arm the mean and sample SD of those over seeds.

Measurements: benchmarks/RESULTS.md section 7 (2 test cases, one run, 2026-11-22) and section 17 (issue 18:
6 test cases, seeds, the ablation of segcook's defaults toward MIST's; 17c: the defaults after the change).
Since 17c, `segcook analyze` gives data with regions MIST's recipe (softmax over labels, squared-denominator Dice
with background + CE, 2 deep-supervision heads upsampled, AdamW 1e-3 cosine, residual blocks). The arm
`--segcook-analyze "--region-recipe sigmoid"` is the plan before it (one sigmoid head per region, Adam 3e-4, no
deep supervision), and `--match-mist` only matters on top of that.
"""
import argparse, csv, json, os, shlex, shutil, subprocess, sys, textwrap, time
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
    c["training"]["min_steps_per_epoch"] = {steps}; c["training"]["seed"] = {seed}; c["training"]["hardware"]["num_cpu_workers"] = {workers}
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


def set_key(c:dict, kv:str):
    "Apply one `--segcook-set` override `a.b.c=VALUE` (VALUE parsed as JSON, else kept as a string) to config dict `c`."
    k, _, v = kv.partition("=")
    try: v = json.loads(v)
    except json.JSONDecodeError: pass
    *path, last = k.split(".")
    for p in path: c = c.setdefault(p, {})
    c[last] = v


def run_segcook(w:Path, dj:Path, a, seed:int) -> dict:
    "Every segcook stage through its CLI into a fresh experiment; wall seconds per stage."
    e = w/f"{a.arm}_s{seed}"; s = {}; lg = lambda n: w/f"{a.arm}_s{seed}_{n}.log"
    src = w/f"{a.reuse or a.arm}_s{seed}"
    if a.reuse is not None and src != e and (src/"models").exists() and not e.exists():   # another arm's training, predicted otherwise
        shutil.copytree(src, e, ignore=shutil.ignore_patterns("predictions"))
    if a.reuse is not None and (e/"models").exists():   # trained before: predict and score again (e.g. without TTA); train = epoch times in log.csv
        s["train"] = sum(float(r["seconds"]) for f in (e/"models").glob("fold_*/log.csv") for r in csv.DictReader(open(f)))
        shutil.rmtree(e/"predictions/test", ignore_errors=True)
        return _predict(e, dj, a, s, lg)
    shutil.rmtree(e, ignore_errors=True)
    s["analyze"], _ = timed([SEGCOOK, "analyze", "--data", dj, "--exp", e, "--nfolds", a.nfolds, "--workers", 1, *shlex.split(a.segcook_analyze)], lg("analyze"))
    c = json.loads((e/"config.json").read_text()); c["spatial"]["patch_size"] = list(a.patch); c["train"]["batch_size"] = 2
    c["train"]["seed"] = seed          # weights and patch draws; the folds stay those of analyze's seed
    if a.match_mist:   # MIST 2.3.0's training defaults, to separate the tool from its defaults
        c["train"].update(optimizer="adamw", lr=1e-3, scheduler="cosine", deep_supervision=2, arch_kwargs={"residual": True})
    for kv in a.segcook_set: set_key(c, kv)
    (e/"config.json").write_text(json.dumps(c, indent=2))
    s["preprocess"], _ = timed([SEGCOOK, "preprocess", "--exp", e, "--workers", 1], lg("preprocess"))
    s["train"], _ = timed([SEGCOOK, "train", "--exp", e, "--epochs", a.epochs, "--steps-per-epoch", a.steps, *shlex.split(a.segcook_train)], lg("train"))
    return _predict(e, dj, a, s, lg)


def _predict(e:Path, dj:Path, a, s:dict, lg) -> dict:
    "The checkpoint choice, out-of-fold prediction and evaluation (unless --no-oof) and the test-set prediction of trained experiment `e`."
    if a.ckpt == "last":   # predict reads best.pt: put the last epoch's weights there (the arm 'no checkpoint choice')
        for d in (e/"models").glob("fold_*"): shutil.copyfile(d/"last.pt", d/"best.pt")
    if not a.no_oof:
        s["oof_predict"], _ = timed([SEGCOOK, "predict", "--exp", e, "--oof", "--device", "cpu"], lg("oof"))
        s["oof_evaluate"], _ = timed([SEGCOOK, "evaluate", "--exp", e, "--name", "oof", "--workers", 1], lg("oof_eval"))
    s["test_predict"], _ = timed([SEGCOOK, "predict", "--exp", e, "--input", dj, "--out", e/"predictions/test", "--device", "cpu", *shlex.split(a.segcook_predict)], lg("test"))
    return {"stages": s, "total": sum(s.values()), "test_dir": e/"predictions/test"}


def run_mist(w:Path, dj:Path, a, seed:int) -> dict:
    "mist_run_all (with the two config knobs set and stage timers) into fresh folders; wall seconds per stage and in all."
    m = w/f"mist_s{seed}"; shutil.rmtree(m, ignore_errors=True); m.mkdir()
    argv = ["--data", str(dj), "--results", str(m/"results"), "--numpy", str(m/"numpy"), "--nfolds", str(a.nfolds),
            "--patch-size", *map(str, a.patch), "--epochs", str(a.epochs), "--warmup-epochs", "0",
            "--batch-size-per-gpu", "2", "--overwrite"]
    code = MIST_RUN.format(results=str(m/"results"), steps=a.steps, workers=a.workers, seed=seed, argv=argv)
    total, out = timed([MIST_BIN/"python", "-c", code], w/f"mist_s{seed}_run_all.log")
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


def mean_sd(xs:list[float]) -> tuple[float, float]:
    "Mean and sample SD (0 for one value)."
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0


def summary(w:Path) -> dict:
    "Every stored run under `w/results/` grouped by arm: seeds, test cases, Dice mean and SD over seeds per region, time."
    runs = {}
    for f in sorted((w/"results").glob("*.json")):
        r = json.loads(f.read_text()); runs.setdefault(r["arm"], []).append(r)
    out = {}
    for arm, rs in runs.items():
        out[arm] = {"seeds": [r["seed"] for r in rs], "n_cases": len(rs[0]["dice"]["per_case"]),
                    "budget": f"{rs[0]['settings']['nfolds']}x{rs[0]['settings']['epochs']}x{rs[0]['settings']['steps']}",
                    "dice": {k: mean_sd([r["dice"]["mean"][k] for r in rs]) for k in CLASSES},
                    "total": mean_sd([r["total"] for r in rs]), "train": mean_sd([r["stages"]["train"] for r in rs]),
                    "load": [round(x, 1) for r in rs for x in (r["load_start"], r["load_end"])]}
    return out


def print_summary(w:Path):
    "The table of every arm stored under `w`: WT/TC/ET test Dice mean ± SD over seeds, cases, budget, time."
    print("\n| arm | seeds | test cases | budget (folds x epochs x steps) | WT | TC | ET | train (s) | total (s) | load 1-min |\n|---|---|---|---|---|---|---|---|---|---|")
    for arm, s in summary(w).items():
        d = s["dice"]; f = lambda t: f"{t[0]:.3f} ± {t[1]:.3f}"
        print(f"| {arm} | {' '.join(map(str, s['seeds']))} | {s['n_cases']} | {s['budget']} | {f(d['WT'])} | {f(d['TC'])} | {f(d['ET'])} | "
              f"{s['train'][0]:.0f} | {s['total'][0]:.0f} | {min(s['load'])}-{max(s['load'])} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT/"benchmarks/_work/pipeline"))
    p.add_argument("--data", help="an existing phantom dataset.json to use (default: WORK/data, made on first use)")
    p.add_argument("--cases", type=int, default=8); p.add_argument("--test-cases", type=int, default=6)
    p.add_argument("--size", type=int, nargs=3, default=[48, 48, 40]); p.add_argument("--patch", type=int, nargs=3, default=[32, 32, 32])
    p.add_argument("--nfolds", type=int, default=2); p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, default=10); p.add_argument("--workers", type=int, default=2, help="MIST loader workers")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (weights, patch draws); the data and folds stay fixed")
    p.add_argument("--tools", nargs="+", default=["segcook", "mist"])
    p.add_argument("--skip-mist", action="store_true", help="segcook only (same as --tools segcook)")
    p.add_argument("--arm", default="segcook", help="name of this segcook variant in the results (ablation arm)")
    p.add_argument("--segcook-set", action="append", default=[], metavar="KEY=VALUE",
                   help="edit config.json after analyze, e.g. train.loss=dice_ce labels.regions=null (VALUE is JSON; repeatable)")
    p.add_argument("--segcook-train", default="", help="extra `segcook train` flags, one string, e.g. '--sample-probs background=0.33'")
    p.add_argument("--segcook-analyze", default="", help="extra `segcook analyze` flags, e.g. '--val-fraction 0'")
    p.add_argument("--segcook-predict", default="", help="extra `segcook predict` flags for the test set, e.g. '--no-tta'")
    p.add_argument("--ckpt", choices=["best", "last"], default="best", help="segcook predicts with the best-validation (default) or the last checkpoint")
    p.add_argument("--no-oof", action="store_true", help="segcook skips the out-of-fold prediction and evaluation (ablation runs)")
    p.add_argument("--reuse", nargs="?", const="", metavar="ARM", help="segcook: do not train; predict and score the models this arm (or ARM, copied) has under --work")
    p.add_argument("--summary", action="store_true", help="only print the table of the runs stored under --work")
    p.add_argument("--match-mist", action="store_true", help="segcook trains with MIST 2.3.0's defaults (AdamW 1e-3, cosine, residual, 2 DS heads)")
    a = p.parse_args()
    w = Path(a.work); w.mkdir(parents=True, exist_ok=True); (w/"results").mkdir(exist_ok=True)
    if a.summary: return print_summary(w)
    if a.match_mist and a.arm == "segcook": a.arm = "segcook_mistlike"
    tools = [t for t in a.tools if not (a.skip_mist and t == "mist")]
    dj = Path(a.data) if a.data else w/"data/dataset.json"
    if not dj.exists():
        timed([SEGCOOK, "phantom", "--out", dj.parent, "--cases", a.cases, "--test-cases", a.test_cases, "--size", *a.size, "--workers", 1], w/"phantom.log")
    for seed in a.seeds:
        for tool in tools:
            arm = a.arm if tool == "segcook" else "mist"
            load = os.getloadavg()[0]; t0 = time.strftime("%H:%M:%S", time.gmtime())
            r = run_segcook(w, dj, a, seed) if tool == "segcook" else run_mist(w, dj, a, seed)
            r["dice"] = score(w, f"{arm}_s{seed}", r.pop("test_dir"), dj)
            r.update(arm=arm, seed=seed, load_start=load, load_end=os.getloadavg()[0], start_utc=t0, settings=vars(a))
            (w/"results"/f"{arm}_s{seed}.json").write_text(json.dumps(r, indent=1, default=str))
            print(f"{arm} seed {seed}: total {r['total']:.0f} s, test Dice {r['dice']['mean']} (load {load:.1f})", file=sys.stderr, flush=True)
    print(f"\nPhantom BraTS ({dj}); {a.nfolds} folds x {a.epochs} epochs x {a.steps} steps, batch 2, patch "
          f"{'x'.join(map(str, a.patch))}, CPU, OMP_NUM_THREADS=1, {os.cpu_count()} cores; test Dice by `segcook evaluate`, "
          "mean over the test cases, then mean ± SD over seeds:")
    print_summary(w)


if __name__ == "__main__": main()
