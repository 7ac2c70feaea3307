"""Training-loader throughput (patches/s): segcook's DALI loader vs MONAI RandCropByPosNegLabeld vs MIST 2.3.0.

Run: PYTHONPATH=. python benchmarks/loader.py [--cases 6] [--size 128 128 128] [--patch 64 64 64] [--batch 2]
                                              [--batches 20] [--workers 2] [--oversampling 0.6] [--mist]
All loaders read the same phantom BraTS arrays (4 channels, z-scored) from disk, one after the other (never
concurrently), each with `--workers` CPU threads/processes, and draw `--batches` batches after 2 warm-up
batches. segcook and MONAI apply nnU-Net's augmentation set (flips, rotation+scaling, noise, blur,
brightness, contrast, low resolution, gamma); MIST applies its own set (flips, zoom, noise, blur, brightness,
contrast: no rotation, gamma or low resolution). segcook is also timed with augmentation off. With `--mist`,
MIST's CPU loader (mist.data_loading.generic_loader; its DALI loader needs a GPU) runs in its own venv
(/work/peers/mist or $MIST_PY) on MIST's (X, Y, Z, C) copies of the arrays; without that venv it is skipped
with a message. Prints markdown table rows.
"""
import argparse, json, os, subprocess, sys, tempfile, textwrap, time
from pathlib import Path
import numpy as np

MIST_PY = Path(os.environ.get("MIST_PY", "/work/peers/mist/bin/python"))


def make_arrays(root:Path, a) -> tuple[list[Path], list[tuple[str, str]]]:
    "Phantom cases as segcook arrays (C,X,Y,Z) and MIST arrays (X,Y,Z,C); returns both lists."
    from segcook.data import make_phantom, load_dataset
    from segcook.core import to_xyz, read_image
    ds = load_dataset(make_phantom(root/"raw", cases=a.cases, size=tuple(a.size), seed=0, workers=a.workers))
    dirs, mist = [], []
    for c in ds.cases():
        im = np.stack([to_xyz(read_image(p)) for p in c.images.values()]).astype(np.float32)
        im = (im - im.mean(axis=(1, 2, 3), keepdims=True)) / im.std(axis=(1, 2, 3), keepdims=True)
        lb = to_xyz(read_image(c.label)).astype(np.uint8)[None]
        d = root/"pre"/c.id; d.mkdir(parents=True)
        np.save(d/"image.npy", im); np.save(d/"label.npy", lb); (d/"meta.json").write_text("{}")
        dirs.append(d)
        m = root/"mist"; m.mkdir(exist_ok=True)
        np.save(m/f"{c.id}_image.npy", np.ascontiguousarray(im.transpose(1, 2, 3, 0)))
        np.save(m/f"{c.id}_label.npy", np.ascontiguousarray(lb.transpose(1, 2, 3, 0)))
        mist.append((str(m/f"{c.id}_image.npy"), str(m/f"{c.id}_label.npy")))
    return dirs, mist


def rate(next_batch, a) -> float:
    "Patches per second over `a.batches` batches after 2 warm-up batches."
    for _ in range(2): next_batch()
    t = time.perf_counter()
    for _ in range(a.batches): next_batch()
    return a.batches * a.batch / (time.perf_counter() - t)


def segcook_rate(dirs, a, aug) -> float:
    from segcook.core import Plan, override
    from segcook.loader import make_train_loader
    plan = override(Plan(), **{"spatial.patch_size": list(a.patch), "labels.labels": [0, 1, 2, 3], "train.oversampling": a.oversampling})
    it = iter(make_train_loader(dirs, plan, a.batch, seed=0, steps=None, aug=aug, num_threads=a.workers))
    return rate(lambda: next(it), a)


def monai_rate(dirs, a) -> float:
    import torch, monai.transforms as T
    from monai.data import Dataset, DataLoader
    torch.set_num_threads(1)
    k, p = ["image", "label"], a.patch
    tf = T.Compose([
        T.Lambdad(k, lambda f: np.load(f, mmap_mode="r")),
        T.SpatialPadd(k, p),
        T.RandCropByPosNegLabeld(k, "label", p, pos=a.oversampling, neg=1 - a.oversampling, num_samples=1),
        T.RandAffined(k, p, prob=0.36, rotate_range=[np.pi/6]*3, scale_range=[0.3]*3, mode=("bilinear", "nearest"), padding_mode="zeros"),
        *[T.RandFlipd(k, 0.5, spatial_axis=i) for i in range(3)],
        T.RandGaussianNoised("image", 0.1, std=0.3), T.RandGaussianSmoothd("image", (0.5, 1), (0.5, 1), (0.5, 1), prob=0.2),
        T.RandScaleIntensityd("image", 0.25, prob=0.15), T.RandAdjustContrastd("image", 0.3, (0.7, 1.5)),
        T.RandSimulateLowResolutiond("image", prob=0.25, zoom_range=(0.5, 1.0)),
    ])
    ds = Dataset([{"image": str(d/"image.npy"), "label": str(d/"label.npy")} for d in dirs] * 1000, tf)
    dl = DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers, persistent_workers=True)
    it = iter(dl)
    return rate(lambda: next(it), a)


MIST_SNIPPET = textwrap.dedent("""
import json, time, torch
torch.set_num_threads(1)
from mist.data_loading.generic_loader import get_training_dataset
pairs = {pairs}
it = get_training_dataset([p[0] for p in pairs], [p[1] for p in pairs], None, {bs}, {ps}, [1, 2, 3], {ov}, 0, {workers}, 0, 1)
for _ in range(2): it.next()
t = time.perf_counter()
for _ in range({nb}): it.next()
print(json.dumps({{"rate": {nb} * {bs} / (time.perf_counter() - t)}}))
""")


def mist_rate(pairs, a) -> float | None:
    if not MIST_PY.exists():
        print(f"MIST skipped: no MIST 2.3.0 venv at {MIST_PY} (set MIST_PY)", file=sys.stderr); return None
    code = MIST_SNIPPET.format(pairs=pairs, bs=a.batch, ps=tuple(a.patch), ov=a.oversampling, workers=a.workers, nb=a.batches)
    r = subprocess.run([str(MIST_PY), "-c", code], capture_output=True, text=True)
    if r.returncode:
        print("MIST failed:", r.stderr[-2000:], file=sys.stderr); return None
    return json.loads(r.stdout.strip().splitlines()[-1])["rate"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--size", type=int, nargs=3, default=[128, 128, 128])
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--oversampling", type=float, default=0.6)
    p.add_argument("--mist", action="store_true", help="also time MIST 2.3.0's CPU loader (needs its venv)")
    a = p.parse_args(argv)
    os.environ.setdefault("SEGCOOK_QUIET", "1")
    from segcook.loader import Augment
    with tempfile.TemporaryDirectory() as tmp:
        dirs, pairs = make_arrays(Path(tmp), a)
        rows = [("segcook DALI, full augmentation", segcook_rate(dirs, a, Augment())),
                ("segcook DALI, no augmentation", segcook_rate(dirs, a, Augment.off())),
                ("MONAI RandCropByPosNegLabeld + nnU-Net-like augmentation", monai_rate(dirs, a))]
        if a.mist: rows.append(("MIST 2.3.0 generic (CPU) loader, its augmentation", mist_rate(pairs, a)))
    ref = rows[0][1]
    setup = f"{a.cases} cases {'x'.join(map(str, a.size))}, 4 ch, patch {'x'.join(map(str, a.patch))}, batch {a.batch}, {a.workers} workers, CPU"
    print(f"\n| loader | patches/s | segcook full aug / this | setup |\n|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {'skipped' if r is None else f'{r:.2f}'} | {'' if r is None else f'{ref / r:.2f}x'} | {setup} |")


if __name__ == "__main__": main()
