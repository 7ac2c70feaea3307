"segcook preprocess: geometry on real scans (landmarks, spacing, volume, round trip), resume, bad cases, extras."
import csv, json, os, time
from pathlib import Path
import numpy as np, pytest
import SimpleITK as sitk
from scipy import ndimage as ndi
from segcook.core import (Plan, Channel, Labels, Spatial, Preprocess, SegcookError, read_image, write_image, to_xyz,
                          from_xyz, compare_headers, save_plan, read_json)
from segcook.data import make_phantom, load_dataset
from segcook.preprocess import (preprocess_case, to_native, reorient, orientation_of, resample_image, resample_label,
                                distance_map, distance_maps, mind_ssc, normalize, preprocess, cli_preprocess, read_case,
                                is_done, MIND_CHANNELS)
from conftest import segcook_cmd

# ---------------------------------------------------------------- helpers

def _dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())

def _vol_mm3(arr, spacing): return float((np.asarray(arr) > 0).sum() * np.prod(spacing))

def _roi(src, dst, box):
    "Write the voxels `box` = (start, stop) of real scan `src` to `dst`, geometry preserved (a smaller real file)."
    img = read_image(src); start, stop = box
    write_image(sitk.RegionOfInterest(img, [b - a for a, b in zip(start, stop)], start), dst)
    return dst

def _label_box(lbl_path, margin_xy=24, margin_z=3):
    a = to_xyz(read_image(lbl_path)) > 0
    idx = np.argwhere(a); lo, hi = idx.min(0), idx.max(0) + 1
    m = np.array([margin_xy, margin_xy, margin_z])
    return [int(v) for v in np.maximum(lo - m, 0)], [int(v) for v in np.minimum(hi + m, a.shape)]

def _ct_channel(): return Channel(name="ct", modality="ct", norm="ct", window=[-1000., 400.], mean=-300., std=400.)

def _plan(chans, sp, crop=False, **pre):
    return Plan(channels=chans, labels=Labels(labels=[0, 1]), spatial=Spatial(target_spacing=list(sp), crop_to_foreground=crop),
                preprocess=Preprocess(**pre))

# lung scans are 512 x 512 x ~50: tests read a real-file crop around the tumour; brain scans are read whole (on a
# fresh clone, `shared` holds tests/data's crops: the brain crops sit on the whole scans' 0.7 mm grid, see its README).
# Small lesions are sensitive to where the new grid falls: brain2's 453-voxel lesion changes volume by -3.5% to
# +4.4% on 0.8-1 mm in-plane grids depending on the crop (grid phase); at 0.7 mm it stays within 1%.
REAL = {"lung1": ("ct", (0.8, 0.8, 2.5)), "lung2": ("ct", (0.8, 0.8, 2.5)),
        "brain1": ("mr", (0.7, 0.7, 1.0)), "brain2": ("mr", (0.7, 0.7, 1.0))}

def _real_case(shared, tmp_path, name):
    "(images, label) paths of a real scan; the lungs cropped to a box around the tumour, written as NRRD."
    d = shared/"pyradiomics"; img, lbl = d/f"{name}_image.nrrd", d/f"{name}_label.nrrd"
    if name.startswith("lung"):
        box = _label_box(lbl)
        img, lbl = _roi(img, tmp_path/f"{name}_image.nrrd", box), _roi(lbl, tmp_path/f"{name}_label.nrrd", box)
    mod = REAL[name][0]
    return {("ct" if mod == "ct" else "mr"): img}, lbl

def _real_plan(name, crop=True):
    mod, sp = REAL[name]
    return _plan([_ct_channel() if mod == "ct" else Channel(name="mr")], sp, crop=crop)

# ---------------------------------------------------------------- geometry on real scans

@pytest.mark.parametrize("name", ["brain1", "mni"])
def test_reorientation_keeps_landmarks_in_world(shared, name):
    p = shared/"pyradiomics"/"brain1_image.nrrd" if name == "brain1" else shared/"mni152"/"mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    img = read_image(p)
    assert orientation_of(img) != "RAI"                     # brain1: y flipped; MNI: x and y flipped
    r = reorient(img)
    assert r.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    a = to_xyz(img)
    rng = np.random.default_rng(0)
    for v in [np.array(a.shape) // 3, *rng.integers(0, a.shape, (20, 3))]:
        w = img.TransformIndexToPhysicalPoint([int(i) for i in v])        # landmark in world (mm)
        j = r.TransformPhysicalPointToIndex(w)
        assert np.allclose(r.TransformIndexToPhysicalPoint(j), w, atol=1e-4)
        assert r[j] == img[[int(i) for i in v]]


@pytest.mark.parametrize("name", list(REAL))
def test_real_scan_spacing_volume_and_round_trip(shared, tmp_path, name):
    images, lbl = _real_case(shared, tmp_path, name)
    plan = _real_plan(name)
    img, lab, meta = preprocess_case(images, plan, lbl, cid=name)
    sp = plan.spatial.target_spacing
    assert meta["resampled"]["spacing"] == sp                                    # exact, not approximately
    assert list(img.shape[1:]) == meta["resampled"]["size"] == list(lab.shape[1:])
    assert meta["resampled"]["direction"] == pytest.approx([1, 0, 0, 0, 1, 0, 0, 0, 1])
    orig = read_image(lbl)
    v0, v1 = _vol_mm3(to_xyz(orig), orig.GetSpacing()), _vol_mm3(lab, sp)
    assert abs(v1 - v0) / v0 < 0.02, f"{name}: label volume {v0:.0f} -> {v1:.0f} mm3"
    back = to_native(lab[0], json.loads(json.dumps(meta)))                      # meta survives JSON
    assert compare_headers(back, orig) == []
    assert _dice(to_xyz(back), to_xyz(orig)) >= 0.95


def test_real_ct_anisotropic_isotropic_plan_round_trip(shared, tmp_path):
    "0.57 x 0.57 x 5 mm CT to 1 mm isotropic: in-plane B-spline, nearest along z; and back."
    images, lbl = _real_case(shared, tmp_path, "lung2")
    plan = _plan([_ct_channel()], (1.0, 1.0, 1.0), crop=True)
    img, lab, meta = preprocess_case(images, plan, lbl, cid="lung2")
    assert meta["anisotropic_axis"] == 2
    assert img.min() >= (-1000 + 300) / 400 - 1e-5 and img.max() <= (400 + 300) / 400 + 1e-5   # CT window, dataset stats
    assert _dice(to_xyz(to_native(lab[0], meta)), to_xyz(read_image(lbl))) >= 0.95


def test_mr_flipped_y_round_trip_without_crop(shared):
    "brain1 (y axis flipped) whole, no crop: label back in native space, voxel for voxel close."
    d = shared/"pyradiomics"
    plan = _plan([Channel(name="mr")], (1.0, 1.0, 1.0))
    img, lab, meta = preprocess_case({"mr": d/"brain1_image.nrrd"}, plan, d/"brain1_label.nrrd", cid="brain1")
    assert meta["orientation"] == {"original": "RPI", "target": "RAI"}
    orig = read_image(d/"brain1_label.nrrd")
    back = to_native(lab[0], meta)
    assert compare_headers(back, orig) == [] and _dice(to_xyz(back), to_xyz(orig)) >= 0.95
    # the image on the way back (float maps) also lands on the scan: compare with the raw MR inside the head
    raw = to_xyz(read_image(d/"brain1_image.nrrd")).astype(np.float32)
    bk = to_xyz(to_native(img, meta, is_label=False))
    fg = raw > np.percentile(raw, 60)
    assert np.corrcoef(bk[fg], raw[fg])[0, 1] > 0.9


def test_probabilities_back_to_labels(shared):
    "(C, x, y, z) probabilities go back channel by channel, then argmax: same as the label map's way back."
    d = shared/"pyradiomics"
    plan = _plan([Channel(name="mr")], (1.0, 1.0, 2.0), crop=True)
    _, lab, meta = preprocess_case({"mr": d/"brain2_image.nrrd"}, plan, d/"brain2_label.nrrd", cid="brain2")
    onehot = np.stack([lab[0] == 0, lab[0] == 1]).astype(np.float32)
    a, b = to_xyz(to_native(onehot, meta)), to_xyz(to_native(lab[0], meta))
    assert _dice(a, b) > 0.99
    probs = to_native(onehot, meta, is_label=False)
    assert probs.GetNumberOfComponentsPerPixel() == 2 and compare_headers(probs, read_image(d/"brain2_label.nrrd")) == []


# ---------------------------------------------------------------- phantom: steps against hand computations

def test_resample_keeps_label_volume_and_centre_on_anisotropic_phantom():
    a = np.zeros((40, 40, 10), np.uint8); a[10:30, 12:26, 3:7] = 1; a[14:20, 16:20, 4:6] = 2   # even-aligned: exact on a 2x coarser grid
    l = from_xyz(a, spacing=(0.6, 0.6, 4.0), origin=(1., 2., 3.))
    r = resample_label(l, (1.2, 1.2, 1.0))
    assert r.GetSpacing() == (1.2, 1.2, 1.0) and r.GetSize() == (20, 20, 40)
    for v in (1, 2):
        assert _vol_mm3(to_xyz(r) == v, r.GetSpacing()) == pytest.approx(_vol_mm3(a == v, l.GetSpacing()), rel=0.02)
        c0 = np.mean([l.TransformIndexToPhysicalPoint([int(i) for i in p]) for p in np.argwhere(a == v)], 0)
        c1 = np.mean([r.TransformIndexToPhysicalPoint([int(i) for i in p]) for p in np.argwhere(to_xyz(r) == v)], 0)
        assert np.allclose(c0, c1, atol=0.05)


def test_bspline_matches_simpleitk_on_anisotropic_in_plane_step():
    rng = np.random.default_rng(3)
    a = ndi.gaussian_filter(rng.normal(size=(40, 36, 8)), 1.5).astype(np.float32)
    img = from_xyz(a, spacing=(0.7, 0.7, 5.0), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1))
    ours = resample_image(img, (1.1, 1.1, 5.0))                      # in-plane only
    ref = sitk.Resample(img, ours, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
    assert np.allclose(to_xyz(ours), to_xyz(ref), atol=1e-5)


def test_normalisation_by_hand():
    rng = np.random.default_rng(0)
    a = np.zeros((20, 20, 20), np.float32); a[5:15, 5:15, 5:15] = rng.normal(400, 50, (10, 10, 10))
    a[5, 5, 5] = 5000                                                  # an outlier: clipped at the 99.5th percentile
    m = a != 0
    n = normalize(a, Channel(use_nonzero=True), m)
    lo, hi = np.percentile(a[m], [0.5, 99.5]); w = np.clip(a[m], lo, hi)          # MIST: stats before the window
    assert np.allclose(n[m], (w - a[m].mean()) / a[m].std(), atol=1e-4) and (n[~m] == 0).all()
    assert n[5, 5, 5] == pytest.approx((hi - a[m].mean()) / a[m].std(), abs=1e-4)    # the outlier, clipped
    n2 = normalize(a, Channel(use_nonzero=False), m)
    lo, hi = np.percentile(a, [0.5, 99.5]); w = np.clip(a, lo, hi)
    assert np.allclose(n2, (w - a.mean()) / a.std(), atol=1e-4)
    ct = normalize(np.array([[[-3000., -1000., 100., 2000.]]], np.float32), _ct_channel())
    assert np.allclose(ct.ravel(), [(-1000 + 300) / 400, (-1000 + 300) / 400, 1.0, (400 + 300) / 400])
    with pytest.raises(SegcookError, match="window/mean/std"):
        normalize(a, Channel(name="ct", modality="ct", norm="ct"))


def test_distance_map_signs_and_values_by_hand():
    m = np.zeros((12, 10, 8), bool); m[3:8, 2:7, 2:6] = True
    sp = (1.0, 2.0, 3.0)
    d = distance_map(m, sp)
    inner = ndi.binary_erosion(m)                                      # face-connected interior
    assert set(np.unique(d[m & ~inner]).tolist()) <= {-1.0, -2.0, -3.0}  # boundary voxels: one step (1, 2 or 3 mm) from outside
    assert (d[m] < 0).all() and (d[~m] > 0).all() and not (d == 0).any()
    assert d[5, 4, 3] == pytest.approx(-3.0)                           # 3 voxels (x, 1 mm) from the outside, the nearest way
    edt = ndi.distance_transform_edt(~m, sampling=sp)                  # outside: distance to the nearest object voxel
    assert np.allclose(d[~m], edt[~m], atol=1e-4)
    edt_in = ndi.distance_transform_edt(m, sampling=sp)                # inside: minus the distance to the nearest outside voxel
    assert np.allclose(d[m], -edt_in[m], atol=1e-4)
    diag = np.sqrt(12**2 + 20**2 + 24**2)
    assert np.allclose(distance_map(np.zeros_like(m), sp), diag)       # absent label: the image diagonal everywhere
    plan = Plan(labels=Labels(labels=[0, 1, 2]))
    lbl = m.astype(np.uint8)
    dm = distance_maps(lbl, plan, sp)
    assert dm.shape == (3,) + m.shape and np.allclose(dm[2], diag)     # one map per label, label 2 absent
    nd = distance_maps(lbl, plan, sp, normalize=True)
    assert nd[1].min() == pytest.approx(-1) and nd[1].max() == pytest.approx(1)
    plan.labels.regions = {"WT": [1, 2], "TC": [2]}
    assert distance_maps(lbl, plan, sp).shape[0] == 2                  # one map per region with regions


def test_mind_ssc():
    c = mind_ssc(np.full((10, 9, 8), 3.5, np.float32))
    assert c.shape == (MIND_CHANNELS, 10, 9, 8) and np.all(c == 1)     # constant image: all ones
    rng = np.random.default_rng(0)
    a = ndi.gaussian_filter(rng.normal(size=(20, 20, 20)), 1).astype(np.float32)
    m = mind_ssc(a)
    assert np.allclose(m, mind_ssc(-200 + 7 * a), atol=1e-4)           # invariant to gain and offset
    assert np.allclose(m.max(0), 1) and m.min() > 0
    # an edge: on a step along x, pairs differing in x are less similar than pairs in the y-z plane
    s = np.zeros((20, 20, 20), np.float32); s[10:] = 100
    ms = mind_ssc(s)[:, 9, 10, 10]
    assert ms.min() < 0.5 and ms.max() == 1


# ---------------------------------------------------------------- experiments: resume, bad cases, options

def _exp(root:Path, n=4, size=(28, 28, 14), spacing=(1., 1., 2.5), **pre):
    "A phantom experiment made by hand (plan + cases.csv), independent of analysis."
    ds = load_dataset(make_phantom(root/"data", cases=n, size=size, spacing=spacing, seed=5))
    plan = Plan(channels=[Channel(name=c, use_nonzero=True) for c, _ in ds.channels], labels=Labels(labels=[0, 1, 2, 3]),
                spatial=Spatial(target_spacing=[1.5, 1.5, 1.5], crop_to_foreground=True), preprocess=Preprocess(**pre))
    exp = root/"exp"; save_plan(plan, exp/"config.json")
    with open(exp/"cases.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["id", "fold", "split", *[c for c, _ in ds.channels], "label"])
        for i, c in enumerate(ds.cases()): w.writerow([c.id, i % 2, "train", *map(str, c.images.values()), str(c.label)])
    return exp, ds


def _arrays(exp, cid):
    d = Path(exp)/"preprocessed"/cid
    return {p.name: np.load(p) for p in sorted(d.glob("*.npy"))}


def test_resume_after_interruption_gives_identical_arrays(tmp_path):
    exp, ds = _exp(tmp_path, distance_maps=True)
    ids = [c.id for c in ds.cases()]
    assert preprocess(exp, workers=2) == ids
    ref = {i: _arrays(exp, i) for i in ids}
    assert set(ref[ids[0]]) == {"image.npy", "label.npy", "dtm.npy"}
    # simulate a kill: two cases lose meta.json (one also an array), a stray temp file is left behind
    for i in ids[:2]: (exp/"preprocessed"/i/"meta.json").unlink()
    (exp/"preprocessed"/ids[0]/"image.npy").unlink()
    (exp/"preprocessed"/ids[1]/".image.npy.abc123.tmp.npy").write_bytes(b"partial")
    stamp = {i: (exp/"preprocessed"/i/"image.npy").stat().st_mtime_ns for i in ids[2:]}
    assert preprocess(exp, workers=2) == ids
    for i in ids:
        got = _arrays(exp, i)
        assert set(got) == set(ref[i]) and all(np.array_equal(got[k], ref[i][k]) for k in got)
    assert not list((exp/"preprocessed"/ids[1]).glob(".*tmp*"))               # stray temp file gone
    assert {i: (exp/"preprocessed"/i/"image.npy").stat().st_mtime_ns for i in ids[2:]} == stamp   # finished: untouched
    assert preprocess(exp, workers=1, overwrite=True) == ids                     # --overwrite redoes all, same result
    assert (exp/"preprocessed"/ids[3]/"image.npy").stat().st_mtime_ns != stamp[ids[3]]
    assert np.array_equal(_arrays(exp, ids[3])["image.npy"], ref[ids[3]]["image.npy"])
    meta = read_json(exp/"preprocessed"/ids[0]/"meta.json")
    assert meta["channels"] == ["t1", "t1c", "t2", "flair"] and meta["dtm"] == "dtm.npy"
    assert list(ref[ids[0]]["dtm.npy"].shape) == [4, *meta["resampled"]["size"]]


def test_bad_cases_are_named_and_skipped(tmp_path):
    exp, ds = _exp(tmp_path, n=5)
    cs = ds.cases()
    cs[1].images["t2"].write_bytes(b"not an image at all")                          # unreadable
    l = read_image(cs[2].label); a = sitk.GetArrayFromImage(l); a[0, 0, 0] = 7       # unknown label value
    b = sitk.GetImageFromArray(a); b.CopyInformation(l); write_image(b, cs[2].label)
    f = read_image(cs[3].images["flair"]); f.SetSpacing((1.0, 1.0, 3.0)); write_image(f, cs[3].images["flair"])  # geometry
    r = subprocess_run(segcook_cmd("preprocess", "--exp", exp, "--workers", "2"))
    assert r.returncode == 0, r.stderr
    assert "3 failed" in r.stdout
    failed = {x["id"]: x["error"] for x in read_json(exp/"preprocessed"/"failed.json")}
    assert set(failed) == {cs[1].id, cs[2].id, cs[3].id}
    assert "unreadable" in failed[cs[1].id] and cs[1].images["t2"].name in failed[cs[1].id]
    assert "[7]" in failed[cs[2].id] and cs[2].label.name in failed[cs[2].id]
    assert "spacing" in failed[cs[3].id] and cs[3].images["flair"].name in failed[cs[3].id]
    assert [c.id for c in cs if is_done(exp, c.id)] == [cs[0].id, cs[4].id]
    for bad in failed: assert not (exp/"preprocessed"/bad/"meta.json").exists()


def subprocess_run(cmd):
    import subprocess
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env={**os.environ, "SEGCOOK_QUIET": "1"})


def test_nan_in_nifti_is_caught(tmp_path):
    "ITK's NIfTI reader turns NaN into 0; the raw values are checked."
    import nibabel as nib
    exp, ds = _exp(tmp_path, n=1)
    p = ds.cases()[0].images["t1"]
    n = nib.load(p); a = np.asanyarray(n.dataobj).astype(np.float32); a[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(a, n.affine, n.header), p)
    with pytest.raises(SegcookError, match=f"case {ds.cases()[0].id}: .*t1.*NaN"):
        read_case(ds.cases()[0].images, None, None, ds.cases()[0].id)


def test_options_mind_intensity_skip_n4(tmp_path):
    from segcook.nets import n_input_channels
    exp, ds = _exp(tmp_path, n=2, size=(24, 24, 12), spacing=(1., 1., 1.))
    c = ds.cases()[0]
    base = Plan(channels=[Channel(name=ch, use_nonzero=True) for ch, _ in ds.channels], labels=Labels(labels=[0, 1, 2, 3]),
                spatial=Spatial(target_spacing=[1.0, 1.0, 1.0]))
    img0, _, _ = preprocess_case(c.images, base, c.label)
    for how in ("extra", "replace"):
        p = Plan(**{**base.__dict__, "preprocess": Preprocess(mind=how)})
        img, _, meta = preprocess_case(c.images, p, c.label)
        assert img.shape[0] == n_input_channels(p) == len(meta["channels"])
        assert (how == "extra") == np.array_equal(img[:4], img0)
    p = Plan(**{**base.__dict__, "preprocess": Preprocess(intensity="zscore_rescale")})
    img, _, _ = preprocess_case(c.images, p, c.label)
    nz = img0[0] != 0
    assert np.allclose(np.percentile(img[0][nz], [2, 98]), [0, 1], atol=1e-4) and (img[0][~nz] == 0).all()
    p = Plan(**{**base.__dict__, "preprocess": Preprocess(intensity="histmatch")})
    with pytest.raises(SegcookError, match="histmatch"): preprocess_case(c.images, p, c.label)
    ref = {k: str(v) for k, v in ds.cases()[1].images.items()}
    img, _, _ = preprocess_case(c.images, p, c.label, reference=ref)
    assert img.shape == img0.shape and not np.allclose(img, img0)
    p = Plan(**{**base.__dict__, "preprocess": Preprocess(skip=True)})
    img, lab, meta = preprocess_case(c.images, p, c.label)
    assert np.array_equal(img[0], to_xyz(read_image(c.images["t1"])))           # skip: arrays only
    assert np.array_equal(to_xyz(to_native(lab[0], meta)), to_xyz(read_image(c.label)))
    _, _, meta = preprocess_case(c.images, base, c.label, n4=True)
    assert meta["n4"] is True


def test_analysis_then_preprocess_then_back(tmp_path):
    "The chain the CLI runs: analyze writes the plan and cases.csv, preprocess reads them, to_native goes back."
    from segcook.analysis import analyze
    dj = make_phantom(tmp_path/"data", cases=3, size=(32, 30, 14), spacing=(1., 1., 2.5),
                      direction=(1, 0, 0, 0, -1, 0, 0, 0, 1), seed=9)
    exp = tmp_path/"exp"
    analyze(dj, exp, nfolds=3, workers=1)
    assert cli_preprocess(["--exp", str(exp), "--workers", "1"]) == 0
    for c in load_dataset(dj).cases():
        meta = read_json(exp/"preprocessed"/c.id/"meta.json")
        lab = np.load(exp/"preprocessed"/c.id/"label.npy")
        back, orig = to_native(lab[0], meta), read_image(c.label)
        assert compare_headers(back, orig) == [] and _dice(to_xyz(back), to_xyz(orig)) >= 0.9


def test_cli_errors():
    assert cli_preprocess(["--exp", "/nonexistent/exp"]) == 2


def test_mni_template_tissues_round_trip(shared, tmp_path):
    "MNI152 (1 mm, x and y flipped) with thresholded WM (1) / GM (2) maps as labels, to 1.5 mm and back."
    m = shared/"mni152"
    wm, gm = (to_xyz(read_image(m/f"mni_icbm152_{t}_tal_nlin_sym_09a_converted.nii.gz")) > 128 for t in ("wm", "gm"))
    ref = read_image(m/"mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
    l = np.where(wm, 1, np.where(gm, 2, 0)).astype(np.uint8)
    lbl = from_xyz(l); lbl.CopyInformation(ref); write_image(lbl, tmp_path/"tissue.nii.gz")
    plan = Plan(channels=[Channel(name="t1", use_nonzero=True)], labels=Labels(labels=[0, 1, 2]),
                spatial=Spatial(target_spacing=[1.5, 1.5, 1.5], crop_to_foreground=True))
    img, lab, meta = preprocess_case({"t1": m/"mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"}, plan, tmp_path/"tissue.nii.gz")
    assert meta["orientation"]["original"] == "LPI" and meta["resampled"]["spacing"] == [1.5, 1.5, 1.5]
    assert _vol_mm3(lab[0] > 0, (1.5,) * 3) == pytest.approx(_vol_mm3(l > 0, (1,) * 3), rel=0.02)   # brain tissue volume
    back = to_xyz(to_native(lab[0], meta))
    for v in (1, 2): assert _dice(back == v, l == v) >= 0.95


def test_one_builder_of_the_geometry_meta(tmp_path):
    "The numpy shortcut, the SimpleITK path and `skip` write the same meta keys, built by `geometry_meta` alone (issue 16)."
    import segcook.preprocess as pre
    exp, ds = _exp(tmp_path, n=2, size=(20, 20, 10), spacing=(1., 1., 1.))
    c, ref = ds.cases()[0], {k: str(v) for k, v in ds.cases()[1].images.items()}
    base = Plan(channels=[Channel(name=ch, use_nonzero=True) for ch, _ in ds.channels], labels=Labels(labels=[0, 1, 2, 3]),
                spatial=Spatial(target_spacing=[1.0, 1.0, 1.0], crop_to_foreground=True))
    _, _, fast = preprocess_case(c.images, base, c.label)                   # on target already: numpy crop only
    hm = Plan(**{**base.__dict__, "preprocess": Preprocess(intensity="histmatch")})
    _, _, slow = preprocess_case(c.images, hm, c.label, reference=ref)      # histogram matching: the SimpleITK path
    _, _, skip = preprocess_case(c.images, Plan(**{**base.__dict__, "preprocess": Preprocess(skip=True)}), c.label)
    geo = ["anisotropic_axis", "crop", "orientation", "original", "reoriented", "resampled"]
    assert set(fast) == set(slow) == set(skip) and set(geo) <= set(fast)
    flat = lambda m: {f"{k}.{j}": v for k in geo for j, v in (m[k].items() if isinstance(m[k], dict) else [("", m[k])])}
    a, b = flat(fast), flat(slow)
    assert a.keys() == b.keys()
    for k in a: assert a[k] == (pytest.approx(b[k]) if not isinstance(b[k], str) and b[k] is not None else b[k]), k
    assert fast["crop"]["stop"] != fast["original"]["size"]                 # the crop was taken (a real test of the record)
    src = Path(pre.__file__).read_text()
    assert src.count('"anisotropic_axis"') == 1, "the geometry record is written in one place: geometry_meta"


def test_tail_percentiles_are_numpys_bit_for_bit():
    "The two z-score percentiles, taken from the tails only, equal np.percentile's for any distribution and size."
    from segcook.preprocess import _tail_percentiles
    rng = np.random.default_rng(7)
    draws = [lambda n: rng.normal(size=n), lambda n: rng.integers(-4, 4, n), lambda n: rng.exponential(size=n) ** 4,
             lambda n: np.round(rng.normal(size=n) * 50) / 7, lambda n: np.r_[np.zeros(n - n // 100), rng.normal(size=n // 100)]]
    for n in (1, 5_000, 524_288, 524_289, 1_000_003, 2_500_000):
        for draw in draws:
            x = draw(n).astype(np.float32)
            for q in ((0.5, 99.5), (2.0, 98.0)):
                want, got = np.percentile(x, list(q)), _tail_percentiles(x, *q)
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (n, q, got, want)


def test_tiled_copy_equals_plain_assignment():
    from segcook.preprocess import _copy_tiled
    a = np.asfortranarray(np.random.default_rng(0).normal(size=(70, 45, 37)).astype(np.float32))
    for sl in [(slice(3, 70), slice(0, 45), slice(5, 36)), (slice(0, 1), slice(2, 3), slice(0, 37))]:
        out = np.empty(a[sl].shape, np.float32)
        assert np.array_equal(_copy_tiled(out, a[sl]), a[sl]) and out.flags.c_contiguous


def test_foreground_thresholds_from_analysis_are_reused_only_for_unchanged_files(tmp_path):
    "preprocess reuses analysis' per-channel Otsu thresholds (same arrays as estimating them again), never for a changed file."
    import shutil
    from segcook.analysis import analyze
    from segcook.core import load_plan
    from segcook.preprocess import cached_thresholds, preprocess, read_cases_csv
    src = make_phantom(tmp_path/"data", cases=3, size=(40, 40, 24))
    analyze(src, tmp_path/"exp", nfolds=3, workers=1)
    fj = tmp_path/"exp"/"foreground.json"
    shutil.copytree(tmp_path/"exp", tmp_path/"nocache"); (tmp_path/"nocache"/"foreground.json").unlink()
    plan = load_plan(tmp_path/"exp")
    rows = read_cases_csv(tmp_path/"exp", plan)
    assert all(isinstance(t, float) for t in cached_thresholds(tmp_path/"exp", rows[0]))
    preprocess(tmp_path/"exp", workers=2); preprocess(tmp_path/"nocache", workers=2)
    for r in rows:
        for f in ("image.npy", "label.npy", "meta.json"):
            assert (tmp_path/"exp"/"preprocessed"/r["id"]/f).read_bytes() == (tmp_path/"nocache"/"preprocessed"/r["id"]/f).read_bytes()
    # the thresholds are really used: an absurd one empties the foreground, so the crop shrinks to the label's box
    d = json.loads(fj.read_text())
    for e in d["cases"][rows[0]["id"]].values(): e["threshold"] = 1e30
    fj.write_text(json.dumps(d))
    img, lab, meta = preprocess_case(rows[0]["images"], plan, rows[0]["label"], cid=rows[0]["id"],
                                     fg_thresholds=cached_thresholds(tmp_path/"exp", rows[0]))
    ref = np.load(tmp_path/"nocache"/"preprocessed"/rows[0]["id"]/"image.npy")
    assert np.prod(img.shape) < np.prod(ref.shape) and (lab > 0).any()
    # a file touched after analysis: its case is estimated again
    f = rows[0]["images"][plan.channels[0].name]; st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cached_thresholds(tmp_path/"exp", rows[0]) is None
    assert cached_thresholds(tmp_path/"exp", rows[1]) is not None
