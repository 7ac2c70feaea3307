"""Training steps/s with the boundary loss: distance maps computed by the loss on the CPU every step (before) vs
cut, flipped and warped with the patch by the loader from preprocessing's dtm.npy (after; issue 16).

Run: OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/dtm_loader.py [--cases 4] [--size 96 96 64] [--patch 64 64 64]
                                        [--batch 2] [--steps 10] [--reps 3] [--base 4] [--loss boundary]
Phantom BraTS cases (4 labels) are z-scored and written as preprocessed arrays with their distance maps
(`segcook.preprocess.distance_maps`, the file preprocessing writes). Each repetition times `--steps` training steps
(after 2 warm-up steps) of a U-Net (`--base` first width, deep supervision as the plan's default) on the DALI CPU
loader with the plan's augmentation, once with `dtm=False` (the loss recomputes) and once with `dtm=True`, in turn
(A B A B ...), so that a drift of the machine's speed hits both. Prints every repetition and the medians.
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch


def make_cases(root:Path, a, plan):
    "Phantom cases as preprocessed folders: image.npy, label.npy, dtm.npy, meta.json."
    from segcook.data import make_phantom, load_dataset
    from segcook.core import to_xyz, read_image, Channel
    from segcook.preprocess import distance_maps
    ds = load_dataset(make_phantom(root/"raw", cases=a.cases, size=tuple(a.size), seed=0))
    plan.channels = [Channel(n, m) for n, m in ds.channels]
    dirs = []
    for c in ds.cases():
        im = np.stack([to_xyz(read_image(p)) for p in c.images.values()]).astype(np.float32)
        im = (im - im.mean(axis=(1, 2, 3), keepdims=True)) / im.std(axis=(1, 2, 3), keepdims=True)
        lb = to_xyz(read_image(c.label)).astype(np.uint8)
        d = root/"pre"/c.id
        d.mkdir(parents=True)
        np.save(d/"image.npy", im)
        np.save(d/"label.npy", lb[None])
        np.save(d/"dtm.npy", distance_maps(lb, plan, plan.spatial.target_spacing))
        (d/"meta.json").write_text("{}")
        dirs.append(d)
    return dirs


def steps_per_s(dirs, plan, a, dtm:bool) -> float:
    "Training steps per second (after 2 warm-up steps) with maps from the loader (`dtm`) or recomputed by the loss."
    from segcook.nets import build_net
    from segcook.losses import build_loss
    from segcook.loader import make_train_loader
    torch.manual_seed(0)
    net, loss_fn = build_net(plan), build_loss(plan)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    dl = make_train_loader(dirs, plan, a.batch, seed=0, steps=a.steps + 2, dtm=dtm, num_threads=1)
    t0 = None
    for k, b in enumerate(dl):
        if k == 2: t0 = time.perf_counter()
        out = net(b["image"])
        loss = loss_fn(out, b["label"].long(), b["dtm"]) if dtm else loss_fn(out, b["label"].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return a.steps / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--size", type=int, nargs=3, default=[96, 96, 64])
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--base", type=int, default=4)
    p.add_argument("--loss", default="boundary")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from segcook.core import Plan, override
    plan = override(Plan(), **{"labels.labels": [0, 1, 2, 3], "spatial.patch_size": a.patch, "spatial.target_spacing": [1., 1., 1.],
                               "train.loss": a.loss, "train.arch_kwargs": {"base": a.base}, "preprocess.distance_maps": True})
    with tempfile.TemporaryDirectory() as tmp:
        dirs = make_cases(Path(tmp), a, plan)
        runs = {False: [], True: []}
        for r in range(a.reps):
            for dtm in (False, True):
                runs[dtm].append(steps_per_s(dirs, plan, a, dtm))
                print(f"rep {r + 1}: {'loader maps  ' if dtm else 'loss computes'} {runs[dtm][-1]:.3f} steps/s", flush=True)
    before, after = statistics.median(runs[False]), statistics.median(runs[True])
    print(f"load average {os.getloadavg()}")
    print(f"| {a.loss} | {a.patch} x {a.batch}, base {a.base} | {' / '.join(f'{v:.3f}' for v in runs[False])} | "
          f"{' / '.join(f'{v:.3f}' for v in runs[True])} | {before:.3f} -> {after:.3f} ({after / before:.2f}x) |")


if __name__ == "__main__": main()
