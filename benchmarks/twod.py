"""Training speed of the 2d configuration vs 3d on one phantom (CPU): steps/s, patches/s and voxels/s of `segcook train`.

Run: OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/twod.py [--kind ct] [--cases 6] [--size 64 64 24] [--spacing 1 1 3]
                                                          [--steps 12] [--loader auto] [--threads 1]
One phantom dataset is analysed twice (`--config 3d` and `--config 2d`: each plan's own patch and batch size, default
network) and preprocessed; each experiment trains fold 0 for one epoch of 2 steps and again of `--steps` steps, and the
rate is (steps - 2) / (difference of the two epochs' seconds), which cancels validation, building and first-batch costs.
Prints a markdown table.
"""
import argparse, csv, os, tempfile, time
from pathlib import Path


def epoch_seconds(exp:Path, steps:int, loader:str) -> float:
    from segcook.train import train
    train(exp, folds=[0], epochs=1, steps_per_epoch=steps, loader=loader, overwrite=True)
    return float(list(csv.DictReader(open(exp/"models"/"fold_0"/"log.csv")))[-1]["seconds"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kind", default="ct"); p.add_argument("--cases", type=int, default=6)
    p.add_argument("--size", type=int, nargs=3, default=[64, 64, 24]); p.add_argument("--spacing", type=float, nargs=3, default=[1, 1, 3])
    p.add_argument("--steps", type=int, default=12); p.add_argument("--loader", default="auto"); p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    import torch; torch.set_num_threads(a.threads)
    os.environ.setdefault("SEGCOOK_QUIET", "1")
    from segcook.data import make_phantom
    from segcook.analysis import analyze
    from segcook.preprocess import preprocess
    root = Path(tempfile.mkdtemp(prefix="twod-speed-"))
    dj = make_phantom(root/"data", cases=a.cases, kind=a.kind, size=tuple(a.size), spacing=tuple(a.spacing), seed=0)
    rows = []
    for config in ("3d", "2d"):
        exp = root/config
        plan = analyze(dj, exp, nfolds=2, workers=1, config=config)
        preprocess(exp, workers=1)
        t2, tn = epoch_seconds(exp, 2, a.loader), epoch_seconds(exp, a.steps, a.loader)
        sps = (a.steps - 2) / max(tn - t2, 1e-9)
        ps, bs = plan.spatial.patch_size, plan.train.batch_size
        vox = ps[0] * ps[1] * ps[2]
        rows.append((config, ps, bs, sps, sps * bs, sps * bs * vox))
    print(f"\n{a.kind} phantom, {a.cases} cases {a.size} at {a.spacing} mm, loader {a.loader}, {a.threads} torch thread(s)\n")
    print("| config | patch | batch | steps/s | patches/s | voxels/s |\n|---|---|---|---|---|---|")
    for c, ps, bs, sps, pps, vps in rows: print(f"| {c} | {ps} | {bs} | {sps:.2f} | {pps:.1f} | {vps / 1e3:.1f} k |")


if __name__ == "__main__":
    main()
