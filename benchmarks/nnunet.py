"""Analysis + preprocessing side by side with nnU-Net v2 (2.8.1): fingerprint + planning + preprocessing
(`nnUNetv2_plan_and_preprocess -c 3d_fullres -np W`) vs `segcook analyze` + `segcook preprocess --workers W`,
on the same cases, interleaved repetitions, wall and CPU seconds (children included), from fresh output folders.

Set-up of the peer venv (not committed; the local CPU torch is kept):
    python3 -m venv /work/peers/nnunet
    /work/peers/nnunet/bin/pip install torch==2.13.0
    echo "torch==2.13.0" > /work/peers/constraints.txt
    PIP_CONSTRAINT=/work/peers/constraints.txt /work/peers/nnunet/bin/pip install nnunetv2==2.8.1

Run:
    .venv/bin/segcook phantom --out /work/peers/data/ph8 --cases 8 --size 240 240 155
    PYTHONPATH=. .venv/bin/python benchmarks/nnunet.py --data /work/peers/data/ph8/dataset.json --reps 3 --workers 2

The nnU-Net raw dataset (Dataset501_<task>) is written once from the segcook dataset: each channel becomes
`<case>_000<c>.nii.gz` (a hard link to the same file when possible; other formats, such as the real NRRD scans, are
converted to NIfTI once, untimed), the dataset's labels as nnU-Net labels. The real scans of benchmarks/preprocess.py:
    PYTHONPATH=. .venv/bin/python benchmarks/nnunet.py --data /work/peers/data/ct_real/dataset.json --work /work/peers/bench_nnunet_ct --nfolds 2
"""
import argparse, json, os, resource, shutil, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NNUNET_BIN = Path(os.environ.get("NNUNET_BIN", "/work/peers/nnunet/bin"))
SEGCOOK = os.environ.get("SEGCOOK_BIN", str(Path(sys.executable).parent/"segcook"))   # the segcook command


def to_nnunet_raw(dj:Path, raw:Path, did:int=501) -> Path:
    "Write nnU-Net v2's raw layout (imagesTr/, labelsTr/, dataset.json) for the training cases of a segcook dataset."
    sys.path.insert(0, str(ROOT))
    from segcook.data import load_dataset
    ds = load_dataset(dj)
    out = raw/f"Dataset{did:03d}_{ds.task or 'seg'}"
    if (out/"dataset.json").exists(): return out
    (out/"imagesTr").mkdir(parents=True, exist_ok=True); (out/"labelsTr").mkdir(exist_ok=True)
    def link(a, b):
        if not str(a).endswith(".nii.gz"):                                # e.g. the real NRRD scans: nnU-Net reads NIfTI here
            import SimpleITK as sitk
            return sitk.WriteImage(sitk.ReadImage(str(a)), str(b), True)
        try: os.link(a, b)
        except OSError: shutil.copyfile(a, b)
    cases = ds.cases()
    for c in cases:
        for i, (name, p) in enumerate(c.images.items()): link(p, out/"imagesTr"/f"{c.id}_{i:04d}.nii.gz")
        link(c.label, out/"labelsTr"/f"{c.id}.nii.gz")
    names = {str(i): ("MRI" if m == "mr" else "CT" if m == "ct" else n) for i, (n, m) in enumerate(ds.channels)}
    labels = {"background": 0, **{f"label_{l}": l for l in ds.labels if l}}
    (out/"dataset.json").write_text(json.dumps({"channel_names": names, "labels": labels, "numTraining": len(cases),
                                                "file_ending": ".nii.gz"}, indent=2))
    return out


def timed(cmd, env, log):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "a") as f: r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0: sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}; see {log}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def run_nnunet(raw_ds:Path, work:Path, workers:int, log:Path):
    base = work/"nnunet"
    shutil.rmtree(base, ignore_errors=True)
    env = {**os.environ, "nnUNet_raw": str(raw_ds.parent), "nnUNet_preprocessed": str(base/"preprocessed"),
           "nnUNet_results": str(base/"results"), "OMP_NUM_THREADS": "1"}
    did = raw_ds.name[7:10]
    return timed([str(NNUNET_BIN/"nnUNetv2_plan_and_preprocess"), "-d", did, "-c", "3d_fullres", "-np", str(workers),
                  "-npfp", str(workers)], env, log)


def run_segcook(dj:Path, work:Path, workers:int, log:Path, nfolds:int=5):
    exp = work/"segcook"
    shutil.rmtree(exp, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    w1, c1 = timed([SEGCOOK, "analyze", "--data", str(dj), "--exp", str(exp), "--workers", str(workers), "--nfolds", str(nfolds)], env, log)
    w2, c2 = timed([SEGCOOK, "preprocess", "--exp", str(exp), "--workers", str(workers)], env, log)
    return w1 + w2, c1 + c2


def plans(raw_ds:Path, work:Path) -> dict:
    "What each tool planned: target spacing, patch size, normalisation."
    nn = json.loads(next((work/"nnunet"/"preprocessed").glob("*/nnUNetPlans.json")).read_text())
    c = nn["configurations"]["3d_fullres"]
    sc = json.loads((work/"segcook"/"config.json").read_text())
    return {"nnunet": {"spacing": c["spacing"], "patch": c["patch_size"], "batch": c["batch_size"],
                       "normalization": c["normalization_schemes"], "axis order": "z, y, x"},
            "segcook": {"spacing": sc["spatial"]["target_spacing"], "patch": sc["spatial"]["patch_size"],
                        "batch": sc["train"]["batch_size"], "normalization": [ch.get("norm") for ch in sc.get("channels", [])] or sc.get("preprocess"),
                        "axis order": "x, y, z"}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="segcook/MIST dataset.json")
    ap.add_argument("--work", default="/work/peers/bench_nnunet")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nfolds", type=int, default=5, help="segcook's folds (2 for a 2-case dataset; nnU-Net plans without them)")
    a = ap.parse_args()
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    raw_ds = to_nnunet_raw(Path(a.data), work/"raw")
    log = work/"log.txt"
    t = {"nnU-Net v2": [], "segcook": []}
    for i in range(a.reps):
        order = ["nnU-Net v2", "segcook"] if i % 2 == 0 else ["segcook", "nnU-Net v2"]   # interleaved, alternating first
        for tool in order:
            t[tool].append(run_nnunet(raw_ds, work, a.workers, log) if tool == "nnU-Net v2" else run_segcook(Path(a.data), work, a.workers, log, a.nfolds))
        print(f"rep {i}: " + ", ".join(f"{k} {v[-1][0]:.1f} s wall / {v[-1][1]:.1f} s cpu" for k, v in t.items()),
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print(json.dumps(plans(raw_ds, work), indent=1))
    print("| tool | median wall s | all wall s | median cpu s | all cpu s |\n|---|---|---|---|---|")
    for k, v in t.items():
        print(f"| {k} | {statistics.median(x[0] for x in v):.1f} | {', '.join(f'{x[0]:.1f}' for x in v)} | "
              f"{statistics.median(x[1] for x in v):.1f} | {', '.join(f'{x[1]:.1f}' for x in v)} |")
    r = [n[0] / s[0] for n, s in zip(t["nnU-Net v2"], t["segcook"])]
    print(f"nnU-Net / segcook wall, per repetition: {', '.join(f'{x:.2f}' for x in r)}; median {statistics.median(r):.2f}x")


if __name__ == "__main__": main()
