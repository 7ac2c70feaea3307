"Tests of segcook.loader: real DALI pipelines on CPU over preprocessed arrays written here."
import json
from pathlib import Path
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from segcook.core import Plan, override, to_xyz, read_image, SegcookError
from segcook.loader import (Augment, make_train_loader, make_val_loader, augment_batch, shard_order, check_case_dir)


def write_case(root:Path, cid:str, img:np.ndarray, lbl:np.ndarray|None) -> Path:
    "A preprocessed case folder as CONTRACTS.md describes it (meta.json last)."
    d = root/cid
    d.mkdir(parents=True)
    np.save(d/"image.npy", img.astype(np.float32))
    if lbl is not None: np.save(d/"label.npy", lbl.astype(np.uint8))
    (d/"meta.json").write_text(json.dumps({"id": cid}))
    return d


def plan_for(ps, labels=(0, 1), oversampling=0.5) -> Plan:
    return override(Plan(), **{"spatial.patch_size": list(ps), "labels.labels": list(labels), "train.oversampling": oversampling})


@pytest.fixture(scope="module")
def phantom_pp(tmp_path_factory):
    "Phantom BraTS cases read with SimpleITK, (x,y,z), z-scored per channel: what preprocessing writes."
    from segcook.data import make_phantom, load_dataset
    tmp = tmp_path_factory.mktemp("pp")
    ds = load_dataset(make_phantom(tmp/"raw", cases=4, size=(40, 40, 32), seed=3))
    dirs = []
    for c in ds.cases():
        im = np.stack([to_xyz(read_image(p)) for p in c.images.values()]).astype(np.float32)
        im = (im - im.mean(axis=(1, 2, 3), keepdims=True)) / im.std(axis=(1, 2, 3), keepdims=True)
        dirs.append(write_case(tmp/"pre", c.id, im, to_xyz(read_image(c.label))[None]))
    return dirs


@pytest.fixture(scope="module")
def id_cases(tmp_path_factory):
    "Six cases whose image is the constant (case index + 1): a patch tells which case it came from."
    tmp = tmp_path_factory.mktemp("ids")
    dirs = []
    for i in range(6):
        lbl = np.zeros((1, 20, 20, 20), np.uint8); lbl[0, 5:10, 5:10, 5:10] = 1
        dirs.append(write_case(tmp, f"case{i}", np.full((1, 20, 20, 20), i + 1, np.float32), lbl))
    return dirs


def batches(dl):
    return [{k: v.clone() for k, v in b.items()} for b in dl]


def test_shapes_dtypes(phantom_pp):
    plan = plan_for((32, 32, 24), labels=(0, 1, 2, 3))
    bs = batches(make_train_loader(phantom_pp, plan, batch_size=2, steps=2))
    assert len(bs) == 2
    for b in bs:
        assert b["image"].shape == (2, 4, 32, 32, 24) and b["image"].dtype == torch.float32
        assert b["label"].shape == (2, 1, 32, 32, 24) and b["label"].dtype == torch.uint8
        assert set(np.unique(b["label"].numpy())) <= {0, 1, 2, 3}
    val = list(make_val_loader(phantom_pp, plan))
    assert [v[0] for v in val] == sorted(d.name for d in phantom_pp)
    for cid, im, lb in val:
        ref = np.load(Path(phantom_pp[0]).parent/cid/"image.npy")
        assert im.shape == (1, *ref.shape) and im.dtype == torch.float32
        assert lb.shape == (1, 1, *ref.shape[1:]) and lb.dtype == torch.uint8
        np.testing.assert_array_equal(im[0].numpy(), ref)


def test_same_seed_same_batches(phantom_pp):
    plan = plan_for((24, 24, 24), labels=(0, 1, 2, 3))
    a = batches(make_train_loader(phantom_pp, plan, 2, seed=1, steps=3))
    b = batches(make_train_loader(phantom_pp, plan, 2, seed=1, steps=3))
    c = batches(make_train_loader(phantom_pp, plan, 2, seed=2, steps=3))
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert not all(torch.equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_set_epoch_reshuffles_and_replays(phantom_pp):
    plan = plan_for((24, 24, 24), labels=(0, 1, 2, 3))
    dl = make_train_loader(phantom_pp, plan, 2, seed=1, steps=2)
    e0, e1 = batches(dl), batches(dl)          # iterating again moves to epoch 1
    assert not torch.equal(e0[0]["image"], e1[0]["image"])
    dl.set_epoch(1)
    again = batches(dl)                         # a resumed run sees the same epoch-1 batches
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(e1, again))


def test_shards_disjoint_within_epoch(id_cases):
    plan = plan_for((8, 8, 8))
    seen = []
    for k in range(2):
        dl = make_train_loader(id_cases, plan, batch_size=1, seed=0, shard_id=k, num_shards=2, steps=3, aug=Augment.off())
        ids = [int(b["image"][0, 0, 4, 4, 4].item()) - 1 for b in dl]
        assert ids == [int(n[4:]) for n in dl.order(0)][:3]
        seen.append(ids)
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(6))
    v = [[c for c, _, _ in make_val_loader(id_cases, plan, shard_id=k, num_shards=2)] for k in range(2)]
    assert set(v[0]).isdisjoint(v[1]) and len(v[0]) + len(v[1]) == 6


def test_padding_small_case(tmp_path):
    lbl = np.zeros((1, 10, 12, 6), np.uint8); lbl[0, 4:6, 4:6, 2:4] = 1
    d = write_case(tmp_path, "small", np.ones((2, 10, 12, 6), np.float32), lbl)
    for p in (0.0, 1.0):
        b = next(iter(make_train_loader([d], plan_for((16, 16, 16), oversampling=p), 1, steps=1, aug=Augment.off())))
        im = b["image"][0].numpy()
        assert im.shape == (2, 16, 16, 16)
        np.testing.assert_array_equal(np.argwhere(im[0] > 0).min(0), [3, 2, 5])   # centred: (16-10)//2, (16-12)//2, (16-6)//2
        assert (im > 0).sum() == 2 * 10 * 12 * 6
        assert b["label"].sum() == 8


def _random_rate(n, p, a, w):
    "Exact chance (1D) that a uniformly placed window [s, s+p) in [0, n) overlaps [a, a+w)."
    s = np.arange(n - p + 1)
    return np.mean((s < a + w) & (s + p > a))


@pytest.fixture(scope="module")
def cube_case(tmp_path_factory):
    lbl = np.zeros((1, 48, 48, 48), np.uint8); lbl[0, 30:34, 30:34, 30:34] = 1
    return write_case(tmp_path_factory.mktemp("cube"), "cube", np.zeros((1, 48, 48, 48), np.float32), lbl)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_foreground_rate(cube_case, p):
    n_batches, bs = 10, 20
    dl = make_train_loader([cube_case], plan_for((16, 16, 16), oversampling=p), bs, seed=3, steps=n_batches, aug=Augment.off())
    has_fg = np.concatenate([(b["label"].flatten(1).amax(1) > 0).numpy() for b in dl])
    r0 = _random_rate(48, 16, 30, 4) ** 3
    want = p + (1 - p) * r0
    tol = 3 * np.sqrt(max(want * (1 - want), 1e-3) / has_fg.size) + 0.01
    assert abs(has_fg.mean() - want) <= tol, (has_fg.mean(), want, tol)
    if p == 1.0: assert has_fg.all()


def test_foreground_classes_balanced(tmp_path):
    "Two classes, one tiny: foreground patches come from each about half of the time."
    lbl = np.zeros((1, 64, 64, 16), np.uint8); lbl[0, 2:30, 2:30, :] = 1; lbl[0, 60:62, 60:62, 7:9] = 2
    d = write_case(tmp_path, "two", np.zeros((1, 64, 64, 16), np.float32), lbl)
    dl = make_train_loader([d], plan_for((16, 16, 16), labels=(0, 1, 2), oversampling=1.0), 20, steps=5, aug=Augment.off())
    has2 = np.concatenate([(b["label"] == 2).flatten(1).any(1).numpy() for b in dl])
    assert 0.3 < has2.mean() < 0.7


@pytest.fixture(scope="module")
def smooth_case(tmp_path_factory):
    "A smooth anisotropic image and label = image > t (so the label is a function of the image)."
    rng = np.random.default_rng(0)
    x = ndi.gaussian_filter(rng.normal(size=(48, 40, 36)), sigma=(5, 3, 4))
    x = (x - x.min()) / (x.max() - x.min()) + 0.1                 # > 0 inside; padding is 0
    t = float(np.quantile(x, 0.6))
    return write_case(tmp_path_factory.mktemp("smooth"), "smooth", x[None], (x > t)[None]), t


@pytest.mark.parametrize("warp", ["torch", "dali"])
@pytest.mark.parametrize("kind", ["flip", "rotate", "scale", "all"])
def test_label_follows_image(smooth_case, kind, warp):
    d, t = smooth_case
    aug = Augment(p_flip=1.0 if kind in ("flip", "all") else 0.0, p_rotate=1.0 if kind in ("rotate", "all") else 0.0,
                  p_scale=1.0 if kind in ("scale", "all") else 0.0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0,
                  p_lowres=0, p_gamma=0)
    ref = np.load(d/"image.npy")[0]
    for b in make_train_loader([d], plan_for((24, 24, 24), oversampling=0.5), 4, seed=5, steps=2, aug=aug, warp=warp):
        im, lb = b["image"][:, 0].numpy(), b["label"][:, 0].numpy()
        inner = (slice(None),) + (slice(2, -2),) * 3
        miss = lambda l: (l != (im > t))[inner].mean()
        shifted = min(miss(np.roll(lb, s, axis=a)) for a in (1, 2, 3) for s in (-1, 1))
        # nearest (label) and linear (image) disagree only next to the boundary; a one-voxel misalignment costs more
        assert miss(lb) < 0.04 and miss(lb) < 0.75 * shifted, (kind, miss(lb), shifted)
        if kind != "flip":       # the patch really was resampled: not a plain crop of the volume
            assert not any(np.isin(im[i, 12, 12, 12], ref) for i in range(len(im)))


def _is_crop(im, ref, atol=1e-4) -> bool:
    "Whether patch `im` equals ref[a:a+p] for some start a (found from its first voxel)."
    for a in np.argwhere(np.abs(ref - im[0, 0, 0]) < atol):
        sl = tuple(slice(int(v), int(v) + p) for v, p in zip(a, im.shape))
        if ref[sl].shape == im.shape and np.allclose(ref[sl], im, atol=atol): return True
    return False


@pytest.mark.parametrize("warp", ["torch", "dali"])
def test_identity_warp_is_a_crop(smooth_case, warp):
    "A warp drawn with zoom 1 and no rotation must give back exactly a crop (checks both resamplers' geometry)."
    d, t = smooth_case
    ref = np.load(d/"image.npy")[0]
    aug = Augment(p_flip=0, p_rotate=0, p_scale=1.0, scale=(1.0, 1.0), p_noise=0, p_blur=0, p_brightness=0,
                  p_contrast=0, p_lowres=0, p_gamma=0)
    b = next(iter(make_train_loader([d], plan_for((20, 16, 12), oversampling=1.0), 3, seed=2, steps=1, aug=aug, warp=warp)))
    for im, lb in zip(b["image"][:, 0].numpy(), b["label"][:, 0].numpy()):
        assert _is_crop(im, ref), warp
        assert (lb == (im > t)).mean() > 0.999


def test_augment_off_is_a_plain_crop(smooth_case):
    d, _ = smooth_case
    ref = np.load(d/"image.npy")[0]
    b = next(iter(make_train_loader([d], plan_for((24, 24, 24)), 2, steps=1, aug=Augment.off())))
    for im in b["image"][:, 0].numpy():
        assert np.isin(im, ref).all()


def test_loader_takes_the_plans_augmentation(smooth_case):
    "No `aug` given: the plan's `augment` section decides (here: off, so every patch is a plain crop; on, most are not)."
    d, _ = smooth_case
    ref = np.load(d/"image.npy")[0]
    off = override(plan_for((24, 24, 24)), **{"augment.enabled": False})
    b = next(iter(make_train_loader([d], off, 4, steps=1)))
    assert all(np.isin(im, ref).all() for im in b["image"][:, 0].numpy())
    on = override(plan_for((24, 24, 24)), **{"augment.p_noise": 1.0})
    b = next(iter(make_train_loader([d], on, 4, steps=1)))
    assert not any(np.isin(im, ref).all() for im in b["image"][:, 0].numpy())


def test_augment_batch_seeded_and_off():
    x = torch.randn(3, 2, 12, 12, 12)
    mk = lambda s: torch.Generator().manual_seed(s)
    allon = Augment(p_noise=1, p_blur=1, p_brightness=1, p_contrast=1, p_lowres=1, p_gamma=1)
    a = augment_batch({"image": x.clone(), "label": None}, allon, mk(0))["image"]
    b = augment_batch({"image": x.clone(), "label": None}, allon, mk(0))["image"]
    c = augment_batch({"image": x.clone(), "label": None}, allon, mk(1))["image"]
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape and torch.isfinite(a).all()
    assert torch.equal(augment_batch({"image": x.clone()}, Augment.off(), mk(0))["image"], x)


def test_bad_cases(tmp_path):
    d = write_case(tmp_path, "nometa", np.zeros((1, 8, 8, 8), np.float32), np.zeros((1, 8, 8, 8), np.uint8))
    (d/"meta.json").unlink()
    with pytest.raises(SegcookError, match="nometa.*meta.json"): check_case_dir(d)
    e = write_case(tmp_path, "badlabel", np.zeros((1, 8, 8, 8), np.float32), np.zeros((1, 8, 8, 7), np.uint8))
    with pytest.raises(SegcookError, match="badlabel.*label.npy"): make_train_loader([e], plan_for((8, 8, 8)), 1)
    f = write_case(tmp_path, "nolabel", np.zeros((1, 8, 8, 8), np.float32), None)
    with pytest.raises(SegcookError, match="nolabel.*label.npy"): make_val_loader([f], plan_for((8, 8, 8)))
    with pytest.raises(SegcookError, match="ranks"): shard_order(1, 0, 0, 0, 2)


@pytest.mark.parametrize("sigma", [0.5, 0.75, 1.0, 1.4])
def test_blur_matches_scipy(sigma):
    from segcook.loader import blur3d
    x = torch.randn(2, 13, 11, 9, generator=torch.Generator().manual_seed(0))
    ref = ndi.gaussian_filter(x.numpy(), sigma=(0, sigma, sigma, sigma), mode="nearest", truncate=3.0)
    np.testing.assert_allclose(blur3d(x, sigma).numpy(), ref, atol=1e-5)


def test_intensity_transforms_keep_their_promises():
    from segcook.loader import _gamma, _lowres
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 10, 9, 8, generator=g) * 3 - 1
    x[1] = x[1] * 5 + 3                                               # channels with different statistics
    y = _gamma(x.clone(), 1.4, invert=False)
    for c in range(2):                                                # each channel keeps its mean and std
        assert abs(y[c].mean() - x[c].mean()) < 1e-4 and abs(y[c].std() - x[c].std()) < 1e-4
    assert not torch.allclose(x, y)
    assert abs(_gamma(x.clone(), 1.4, invert=True).mean() - x.mean()) < 1e-4
    torch.testing.assert_close(_lowres(x, 1.0), x)                    # zoom 1: nothing lost
    z = _lowres(x, 0.5)
    assert z.shape == x.shape and not torch.allclose(z, x)


@pytest.mark.parametrize("name", ["brightness", "noise", "contrast"])
def test_intensity_probability(name):
    "A transform with probability 0.5 changes about half of the patches, and only that one runs."
    probs = dict(p_noise=0, p_blur=0, p_brightness=0, p_contrast=0, p_lowres=0, p_gamma=0)
    aug = Augment(**{**probs, f"p_{name}": 0.5})
    x = torch.rand(400, 1, 4, 4, 4, generator=torch.Generator().manual_seed(1)) + 0.5
    y = augment_batch({"image": x.clone()}, aug, torch.Generator().manual_seed(2))["image"]
    changed = ~torch.isclose(x, y).flatten(1).all(1)
    assert 0.4 < changed.float().mean() < 0.6
    if name == "brightness":     # a multiplicative factor in range, the same for the whole patch
        f = (y / x).flatten(1)
        lo, hi = aug.brightness
        assert torch.allclose(f.amin(1), f.amax(1), atol=1e-5) and f.min() >= lo - 1e-6 and f.max() <= hi + 1e-6
    if name == "contrast":       # range preserved
        assert (y.flatten(1).amin(1) >= x.flatten(1).amin(1) - 1e-6).all() and (y.flatten(1).amax(1) <= x.flatten(1).amax(1) + 1e-6).all()


def _chance_of_foreground(lbl:np.ndarray, ps) -> float:
    "Fraction of the in-bounds patch positions whose patch holds a foreground voxel (a summed-volume table, by hand)."
    c = np.pad(np.cumsum(np.cumsum(np.cumsum(lbl > 0, 0), 1), 2, dtype=np.int64), ((1, 0),) * 3)
    (a, b), (d, e), (f, g) = [(slice(0, n - p + 1), slice(p, n + 1)) for n, p in zip(lbl.shape, ps)]
    s = c[b, e, g] - c[a, e, g] - c[b, d, g] - c[b, e, f] + c[a, d, g] + c[a, e, f] + c[b, d, f] - c[a, d, f]
    return float((s > 0).mean())


def test_chance_of_foreground_by_hand():
    a = np.zeros((10, 6, 4), np.uint8); a[9, 0, 0] = 1          # one voxel in a corner: 1 of 7 x 3 x 2 starts, along x
    assert _chance_of_foreground(a, (4, 4, 3)) == pytest.approx(1 / 42)
    a[5, 3, 2] = 1                                               # starts x 2..5, y 0..2, z 0..1 see it: 24 of 42, and the corner one
    assert _chance_of_foreground(a, (4, 4, 3)) == pytest.approx(25 / 42)


@pytest.mark.real
def test_real_ct_small_tumour_oversampled(shared, tmp_path):
    "Real CT (pyradiomics lung1, an 837-voxel tumour; whole or tests/data's crop): oversampling 1.0 finds it in every patch."
    img = to_xyz(read_image(shared/"pyradiomics"/"lung1_image.nrrd")).astype(np.float32)
    lbl = (to_xyz(read_image(shared/"pyradiomics"/"lung1_label.nrrd")) > 0).astype(np.uint8)
    ps, bs, steps = (64, 64, 16), 4, 4
    p = _chance_of_foreground(lbl, ps)               # whole scan (512x512x48): 0.02; the crop (96x96x48, every slice): 0.5
    assert p ** (bs * steps) < 1e-3, f"a random patch holds tumour with p = {p:.2f}: the test would prove nothing"
    d = write_case(tmp_path, "lung1", ((img - img.mean()) / img.std())[None], lbl[None])
    dl = make_train_loader([d], plan_for(ps, oversampling=1.0), bs, seed=0, steps=steps)
    for b in dl:
        assert (b["label"].flatten(1).amax(1) > 0).all()
        assert b["image"].shape == (bs, 1, *ps) and torch.isfinite(b["image"]).all()


def test_case_without_foreground(tmp_path):
    "Oversampling cannot find foreground where there is none: the patch is placed at random, no error."
    d = write_case(tmp_path, "empty", np.ones((1, 30, 30, 30), np.float32), np.zeros((1, 30, 30, 30), np.uint8))
    b = next(iter(make_train_loader([d], plan_for((16, 16, 16), labels=(0, 1, 2), oversampling=1.0), 3, steps=1)))
    assert b["label"].sum() == 0 and b["image"].shape == (3, 1, 16, 16, 16)


# ---------------------------------------------------------------- distance maps from the loader (issue 16)
def _edt_maps(y:np.ndarray, n:int, sp=(1., 1., 1.)) -> np.ndarray:
    "Signed distance maps of label map `y` by hand (scipy): outside, distance to the class; inside, minus the distance to the rest."
    out = []
    for c in range(n):
        m = y == c
        out.append(ndi.distance_transform_edt(~m, sampling=sp) * ~m - ndi.distance_transform_edt(m, sampling=sp) * m)
    return np.stack(out)


@pytest.fixture(scope="module")
def dtm_cases(tmp_path_factory):
    "Two cases with two nested balls and the distance maps preprocessing writes (`segcook.preprocess.distance_maps`)."
    from segcook.preprocess import distance_maps
    root, sh, sp = tmp_path_factory.mktemp("dtm"), (24, 20, 16), [1., 1., 2.]
    plan = override(plan_for(sh, labels=(0, 1, 2)), **{"spatial.target_spacing": sp, "preprocess.distance_maps": True})
    g = np.stack(np.meshgrid(*[np.arange(n) for n in sh], indexing="ij"), -1).astype(float)
    dirs = []
    for k in range(2):
        lbl = np.zeros(sh, np.uint8)
        lbl[(((g - [12, 10, 8]) * sp) ** 2).sum(-1) < 40] = 1
        lbl[(((g - [11 + k, 10, 8]) * sp) ** 2).sum(-1) < 9] = 2
        img = 1 + 0.1 * np.random.default_rng(k).standard_normal((1, *sh))       # > 0 in the volume, 0 where a patch pads
        d = write_case(root, f"c{k}", img, lbl[None])
        np.save(d/"dtm.npy", distance_maps(lbl, plan, sp))
        dirs.append(d)
    return dirs, plan, sp


def _flips_only():
    return Augment(enabled=True, p_flip=0.5, p_rotate=0., p_scale=0., p_noise=0., p_blur=0., p_brightness=0., p_contrast=0.,
                   p_lowres=0., p_gamma=0.)


@pytest.mark.parametrize("kind", ["dali", "torch", "global"])
def test_loader_maps_equal_maps_of_the_patch_label(dtm_cases, kind):
    "Without rotation/zoom, each patch's map (cut and flipped with it) is the distance map of the patch's own label, and the loss gives the same value with it."
    from segcook.train import GlobalBatchLoader
    from segcook.losses import build_loss
    dirs, plan, sp = dtm_cases
    if kind == "global": dl = GlobalBatchLoader(dirs, plan, 2, steps=2, dtm=True)
    else: dl = make_train_loader(dirs, plan, 2, steps=3, aug=_flips_only(), dtm=True, warp=kind)
    flipped = 0
    for b in dl:
        assert b["dtm"].shape == (2, 3, *plan.spatial.patch_size) and b["dtm"].dtype == torch.float32
        for i in range(2):
            y = b["label"][i, 0].numpy()
            np.testing.assert_allclose(b["dtm"][i].numpy(), _edt_maps(y, 3, sp), atol=1e-4)
            flipped += int(y[:12].sum() != y[12:].sum())
        x = torch.randn(2, 3, *plan.spatial.patch_size, generator=torch.Generator().manual_seed(0))
        for loss in ("boundary", "hausdorff_dt", "gsl"):
            fn = build_loss(override(plan, **{"train.loss": loss}))
            assert fn(x, b["label"].long(), b["dtm"]).item() == pytest.approx(fn(x, b["label"].long()).item(), rel=1e-5), loss
    assert kind == "global" or flipped                      # some patches were mirrored (the balls are off-centre in x)


@pytest.mark.parametrize("warp", ["dali", "torch"])
def test_warped_maps_follow_the_warped_label(dtm_cases, warp):
    "Patches turned in the (isotropic) x-y plane and zoomed x 0.7 or x 1.4: the map warped with the patch (linear, scaled by the zoom) stays close to the map of the warped label."
    dirs, plan, sp = dtm_cases
    for scale in ([0.7, 0.72], [1.38, 1.4]):
        aug = Augment(enabled=True, p_flip=0., p_rotate=1., rotate_axes=[2], rotate_deg=20., p_scale=1., scale=scale, p_noise=0.,
                      p_blur=0., p_brightness=0., p_contrast=0., p_lowres=0., p_gamma=0.)
        b = next(iter(make_train_loader(dirs, plan, 2, steps=1, aug=aug, dtm=True, warp=warp)))
        for i in range(2):
            inside = ndi.binary_erosion(b["image"][i, 0].numpy() > 0.5, iterations=2)      # voxels that come from the volume
            ref, got = _edt_maps(b["label"][i, 0].numpy(), 3, sp)[1][inside], b["dtm"][i, 1].numpy()[inside]
            fit = (got * ref).sum() / (got * got).sum()             # unscaled maps would need x 1/0.71 or x 1/1.39
            assert inside.sum() > 500 and 0.85 < fit < 1.15, (scale, fit)
            assert np.abs(got - ref).mean() < 0.25 * np.abs(ref).mean()   # the rest: half a voxel of label aliasing


def test_missing_maps_are_named(tmp_path, dtm_cases):
    "A loss that reads maps on cases preprocessed without them: the case, the file and the fix."
    from segcook.loader import check_dtm
    dirs, plan, _ = dtm_cases
    d = write_case(tmp_path, "nomaps", np.zeros((1, 8, 8, 8)), np.zeros((1, 8, 8, 8)))
    with pytest.raises(SegcookError, match="nomaps.*dtm.npy is missing.*preprocess.distance_maps"): check_dtm(d, plan)
    np.save(d/"dtm.npy", np.zeros((2, 8, 8, 8), np.float32))
    with pytest.raises(SegcookError, match=r"should be float32 \(3, 8, 8, 8\)"): check_dtm(d, plan)
