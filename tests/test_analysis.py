"segcook analyze: each MIST rule against a hand computation, folds, exclusions, CLI, real CT scans."
import csv, json, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest
import SimpleITK as sitk
from segcook.core import SegcookError, load_plan, read_json, to_xyz, Geometry
from segcook.data import make_phantom, load_dataset
from segcook.analysis import (analyze, cli_analyze, foreground_mask, bbox_of, otsu_threshold, rai_axes, to_rai,
                              _read_xyz, _fingerprint, patch_size_for)
from conftest import segcook_cmd

PERM = (0, 0, 1, 1, 0, 0, 0, 1, 0)   # world x <- image axis 2, y <- axis 0, z <- axis 1


def _mixed(tmp, spacings, kind="ct", size=(24, 24, 12), direction=None):
    "One dataset whose cases have the given spacings (each case a one-case phantom)."
    root = tmp/"mixed"; (root/"train").mkdir(parents=True)
    for i, sp in enumerate(spacings):
        dj = make_phantom(tmp/f"p{i}", cases=1, kind=kind, size=size, spacing=sp, direction=direction, seed=i)
        src = next((dj.parent/"train").iterdir())
        shutil.copytree(src, root/"train"/f"case{i}")
    shutil.copy(dj, root/"dataset.json")
    return root/"dataset.json"


def _files(folder):
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*")}


# ---------------------------------------------------------------- foreground
def test_otsu_matches_simpleitk_classes():
    rng = np.random.default_rng(0)
    a = np.r_[rng.normal(100, 10, 5000), rng.normal(400, 30, 2000)]
    f = sitk.OtsuThresholdImageFilter(); f.SetNumberOfHistogramBins(256)
    f.Execute(sitk.GetImageFromArray(a.reshape(7, 10, 100)))
    t, ts = otsu_threshold(a), f.GetThreshold()
    assert abs(t - ts) <= (a.max() - a.min()) / 256 * 1.01      # within one histogram bin
    assert (a >= t).sum() == 2000


def test_foreground_bbox_by_hand_and_sampled_equals_exact(phantom):
    c = load_dataset(phantom).cases()[0]
    arrs = [to_xyz(sitk.ReadImage(str(p))) for p in c.images.values()]
    # by hand for channel t1: window at its percentiles, Otsu in SimpleITK, >= threshold
    a = arrs[0].astype(np.float64); lo, hi = np.percentile(a, [33, 99.5])
    w = np.clip(a, lo, hi)
    f = sitk.OtsuThresholdImageFilter(); f.SetNumberOfHistogramBins(256); f.Execute(sitk.GetImageFromArray(w))
    hand = w > f.GetThreshold()
    got = foreground_mask(arrs[:1], max_samples=None)
    assert (got != hand).mean() < 0.01                     # threshold bins differ by at most one bin
    assert bbox_of(foreground_mask(arrs)) == bbox_of(foreground_mask(arrs, max_samples=None))
    start, stop = bbox_of(foreground_mask(arrs))
    brain = np.argwhere(np.any([x != 0 for x in arrs], axis=0))  # phantom: exact zeros outside the brain
    assert start == brain.min(0).tolist() and stop == (brain.max(0) + 1).tolist()


def test_rai_axes_agree_with_dicomorient():
    img = sitk.Image(10, 20, 30, sitk.sitkUInt8); img.SetSpacing((1., 4., 0.8)); img.SetDirection(PERM)
    ref = sitk.DICOMOrient(img, "RAI")
    assert to_rai(img.GetSpacing(), img.GetDirection()) == list(ref.GetSpacing())
    assert to_rai(img.GetSize(), img.GetDirection()) == list(ref.GetSize())
    with pytest.raises(SegcookError, match="degenerate"): rai_axes((1, 0, 0, 1, 0, 0, 0, 0, 1))


def test_nifti_read_equals_simpleitk(phantom):
    c = load_dataset(phantom).cases()[0]
    for p in [*c.images.values(), c.label]:
        a, g = _read_xyz(p)
        assert np.array_equal(a, to_xyz(sitk.ReadImage(str(p)))) and g == Geometry.read(p)


def test_nifti_fast_read_scaling_and_nan(tmp_path):
    import nibabel as nib
    arr = (np.arange(24 * 20 * 10).reshape(24, 20, 10) % 300).astype(np.int16)
    img = nib.Nifti1Image(arr, np.diag([1., 2., 3., 1.])); img.header.set_slope_inter(2.0, -5.0)
    nib.save(img, tmp_path/"s.nii.gz")
    a, g = _read_xyz(tmp_path/"s.nii.gz")
    np.testing.assert_allclose(a, to_xyz(sitk.ReadImage(str(tmp_path/"s.nii.gz"))))
    np.testing.assert_allclose(a, arr * 2.0 - 5.0)
    f = np.ones((8, 9, 10), np.float32); f[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(f, np.eye(4)), tmp_path/"n.nii")
    a, _ = _read_xyz(tmp_path/"n.nii")
    assert np.isnan(a[1, 2, 3]) and np.isfinite(a).sum() == f.size - 1


def test_inflate_multi_member_gzip():
    import gzip
    from segcook.analysis import _inflate
    a = b"segcook" * 999
    assert _inflate(gzip.compress(a) + gzip.compress(a)) == a + a and _inflate(gzip.compress(a)) == a and _inflate(a) == a


# ---------------------------------------------------------------- rules
def test_target_spacing_median_and_tenth_percentile_with_direction(tmp_path):
    img_sp = [(1.0, 4.0, 0.8), (1.2, 6.0, 0.9), (0.9, 3.0, 1.0), (1.1, 5.0, 0.7), (1.0, 2.5, 0.8)]
    dj = _mixed(tmp_path, img_sp, direction=PERM)
    plan = analyze(dj, tmp_path/"exp", nfolds=2, workers=2)
    rai = np.array([[s[2], s[0], s[1]] for s in img_sp])      # hand permutation of PERM
    exp = np.median(rai, axis=0); assert exp.max() / exp.min() > 3
    exp[2] = np.percentile(rai[:, 2], 10)                      # 2.5, 3, 4, 5, 6 -> 2.7
    np.testing.assert_allclose(plan.spatial.target_spacing, exp, rtol=1e-6)
    assert plan.spatial.anisotropic_axis == 2 and abs(exp[2] - 2.7) < 1e-6


def test_isotropic_dataset_median_only(tmp_path):
    sps = [(1.0, 1.0, 1.5), (0.8, 0.8, 1.0), (1.2, 1.0, 2.0)]
    plan = analyze(_mixed(tmp_path, sps), tmp_path/"exp", nfolds=3, workers=1)
    np.testing.assert_allclose(plan.spatial.target_spacing, np.median(sps, axis=0), rtol=1e-6)
    assert plan.spatial.anisotropic_axis is None


def test_patch_size_powers_of_two_from_median_resampled_size(tmp_path):
    dj = make_phantom(tmp_path/"d", cases=3, size=(72, 40, 20), spacing=(1., 1., 2.), seed=0)
    plan = analyze(dj, tmp_path/"exp", nfolds=3, workers=1, max_patch_size=(32, 64, 64))
    med = plan.spatial.median_size
    for p, m, cap in zip(plan.spatial.patch_size, med, (32, 64, 64)):
        assert p & (p - 1) == 0 and p <= cap and (p == cap or p <= m < 2 * p)
    assert plan.spatial.patch_size[0] == 32                    # capped
    assert patch_size_for([5, 100, 100]) == [8, 64, 64]         # floor of 8 voxels


def test_crop_decision_background_vs_none(tmp_path, phantom):
    plan = analyze(phantom, tmp_path/"e1", nfolds=2, workers=1)
    assert plan.spatial.crop_to_foreground                     # brains in lots of air
    ds = tmp_path/"noise"; shutil.copytree(phantom.parent, ds)
    rng = np.random.default_rng(0)
    for c in load_dataset(ds/"dataset.json").cases():             # texture everywhere: nothing to crop
        for p in c.images.values():
            img = sitk.ReadImage(str(p)); a = rng.uniform(100, 200, img.GetSize()[::-1]).astype(np.float32)
            out = sitk.GetImageFromArray(a); out.CopyInformation(img); sitk.WriteImage(out, str(p))
    plan = analyze(ds/"dataset.json", tmp_path/"e2", nfolds=2, workers=1)
    assert not plan.spatial.crop_to_foreground
    assert plan.spatial.median_size == [40.0, 40.0, 32.0]       # uncropped sizes


def test_normalisation_mr_nonzero_and_ct_window_by_hand(tmp_path, phantom):
    plan = analyze(phantom, tmp_path/"mr", nfolds=2, workers=1)
    assert [c.use_nonzero for c in plan.channels] == [True] * 4 and all(c.norm == "zscore" for c in plan.channels)
    dj = make_phantom(tmp_path/"ct", cases=3, kind="ct", size=(32, 32, 10), seed=4)
    plan = analyze(dj, tmp_path/"ctx", nfolds=3, workers=1)
    vals = []
    for c in load_dataset(dj).cases():
        im, lb = sitk.GetArrayFromImage(sitk.ReadImage(str(c.images["ct"]))), sitk.GetArrayFromImage(sitk.ReadImage(str(c.label)))
        vals.append(im.T[lb.T > 0][::10].astype(float))         # MIST: every 10th foreground voxel, (x,y,z) order
    v = np.concatenate(vals); lo, hi = np.percentile(v, [0.5, 99.5]); w = np.clip(v, lo, hi)
    ch = plan.channels[0]
    assert ch.norm == "ct" and not ch.use_nonzero
    np.testing.assert_allclose(ch.window, [lo, hi], rtol=1e-6)
    np.testing.assert_allclose([ch.mean, ch.std], [w.mean(), w.std()], rtol=1e-6)


# ---------------------------------------------------------------- folds
def test_folds_disjoint_cover_val_from_train_and_seeded(tmp_path):
    dj = make_phantom(tmp_path/"d", cases=7, size=(24, 24, 16), seed=1, test_cases=1)
    analyze(dj, tmp_path/"a", nfolds=3, seed=5, workers=1, val_fraction=0.25)
    analyze(dj, tmp_path/"b", nfolds=3, seed=5, workers=1, val_fraction=0.25)
    analyze(dj, tmp_path/"c", nfolds=3, seed=6, workers=1, val_fraction=0.25)
    fa, fb, fc = (read_json(tmp_path/x/"folds.json") for x in "abc")
    ids = sorted(c.id for c in load_dataset(dj).cases())
    assert sorted(sum((f["test"] for f in fa.values()), [])) == ids
    for f in fa.values():
        assert set(f["train"]) | set(f["val"]) | set(f["test"]) == set(ids)
        assert not (set(f["val"]) & set(f["test"])) and not (set(f["val"]) & set(f["train"])) and len(f["val"]) >= 1
    assert fa == fb and fa != fc
    rows = list(csv.DictReader(open(tmp_path/"a"/"cases.csv")))
    assert [r["split"] for r in rows].count("test") == 1 and {r["fold"] for r in rows if r["split"] == "test"} == {"-1"}
    for r in rows:
        if r["split"] == "train": assert r["id"] in fa[r["fold"]]["test"]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_custom_folds_honoured(tmp_path, phantom, fmt):
    ids = sorted(c.id for c in load_dataset(phantom).cases())
    want = {i: k % 2 for k, i in enumerate(ids[::-1])}
    f = tmp_path/f"folds.{fmt}"
    if fmt == "json": f.write_text(json.dumps(want))
    else: f.write_text("id,fold\n" + "".join(f"{i},{k}\n" for i, k in want.items()))
    plan = analyze(phantom, tmp_path/"e", folds_file=f, workers=1)
    folds = read_json(tmp_path/"e"/"folds.json")
    assert plan.train.nfolds == 2
    for k in ("0", "1"): assert folds[k]["test"] == sorted(i for i, v in want.items() if v == int(k))
    sites = tmp_path/"sites.csv"                                  # leave-one-institution-out by name
    sites.write_text("id,fold\n" + "".join(f"{i},{'B' if k < 2 else 'A'}\n" for k, i in enumerate(ids)))
    plan = analyze(phantom, tmp_path/"e3", folds_file=sites, workers=1)
    assert read_json(tmp_path/"e3"/"folds.json")["0"]["test"] == ids[2:] and plan.train.nfolds == 2
    bad = tmp_path/"bad.json"; bad.write_text(json.dumps({ids[0]: 0}))
    with pytest.raises(SegcookError, match="no fold for case"): analyze(phantom, tmp_path/"e2", folds_file=bad, workers=1)


# ---------------------------------------------------------------- bad input
def test_too_few_good_cases_fails_cleanly(tmp_path, phantom_copy):
    cases = load_dataset(phantom_copy).cases()
    img = sitk.ReadImage(str(cases[0].images["t2"])); img.SetOrigin((5., 0., 0.)); sitk.WriteImage(img, str(cases[0].images["t2"]))
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[1].images["flair"]))); a[3, 3, 3] = np.nan
    out = sitk.GetImageFromArray(a); out.CopyInformation(sitk.ReadImage(str(cases[1].images["flair"])))
    sitk.WriteImage(out, str(cases[1].images["flair"]))      # NaN survives in the file (ITK reads it as 0)
    cases[2].label.write_bytes(b"not an image at all")
    before = _files(phantom_copy.parent)
    with pytest.raises(SegcookError, match="cannot fill 2 folds"):   # 3 of 4 excluded, one left
        analyze(phantom_copy, tmp_path/"exp", nfolds=2, workers=2)
    assert _files(phantom_copy.parent) == before                 # nothing written into the dataset
    assert not (tmp_path/"exp"/"config.json").exists()


def test_bad_cases_excluded_named_in_plan(tmp_path):
    dj = make_phantom(tmp_path/"d", cases=5, size=(24, 24, 16), seed=2)
    cases = load_dataset(dj).cases()
    img = sitk.ReadImage(str(cases[0].images["t2"])); img.SetOrigin((5., 0., 0.)); sitk.WriteImage(img, str(cases[0].images["t2"]))
    ref = sitk.ReadImage(str(cases[1].images["flair"])); a = sitk.GetArrayFromImage(ref); a[3, 3, 3] = np.nan
    out = sitk.GetImageFromArray(a); out.CopyInformation(ref); sitk.WriteImage(out, str(cases[1].images["flair"]))
    cases[2].label.write_bytes(b"not an image at all")
    before = _files(dj.parent)
    plan = analyze(dj, tmp_path/"exp", nfolds=2, workers=2)
    ex = {e["id"]: e["reason"] for e in plan.excluded}
    assert set(ex) == {cases[0].id, cases[1].id, cases[2].id}
    assert "origin" in ex[cases[0].id] and "t2" in ex[cases[0].id]
    assert "NaN" in ex[cases[1].id] and "unreadable" in ex[cases[2].id]
    assert plan.dataset.n_cases == 2 and load_plan(tmp_path/"exp").excluded == plan.excluded
    ids = [r["id"] for r in csv.DictReader(open(tmp_path/"exp"/"cases.csv"))]
    assert sorted(ids) == sorted(c.id for c in cases[3:])
    assert _files(dj.parent) == before


def test_impossible_spacing_or_patch_rejected_by_name(tmp_path, phantom):
    for kw, msg in [(dict(target_spacing=[1, 0, 1]), "target spacing"), (dict(patch_size=[96, 96, 36]), "does not fit"),
                    (dict(patch_size=[64, 64, 64], max_patch_size=(32, 32, 32)), "exceeds"),
                    (dict(max_patch_size=(4, 64, 64)), "max patch size"), (dict(patch_size=[64, -8, 64]), "patch size")]:
        with pytest.raises(SegcookError, match=msg): analyze(phantom, tmp_path/"e", nfolds=2, workers=1, **kw)
    assert not (tmp_path/"e").exists()
    with pytest.raises(SegcookError, match="inside the dataset"): analyze(phantom, phantom.parent/"exp", nfolds=2, workers=1)
    plan = analyze(phantom, tmp_path/"e", nfolds=2, workers=1, patch_size=[16, 16, 16], target_spacing=[1., 1., 1.5])
    assert plan.spatial.patch_size == [16, 16, 16] and plan.spatial.target_spacing == [1., 1., 1.5]


# ---------------------------------------------------------------- CLI
def test_cli_writes_four_files_refuses_overwrite_and_bad_max_patch(tmp_path, phantom):
    exp = tmp_path/"exp"
    r = subprocess.run(segcook_cmd("analyze", "--data", phantom, "--exp", exp, "--nfolds", "2", "--workers", "1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in exp.iterdir()) == ["cases.csv", "config.json", "folds.json", "foreground.json"]
    plan = load_plan(exp)
    ds = load_dataset(phantom)
    assert [c.name for c in plan.channels] == ds.channel_names and plan.labels.regions == ds.regions
    assert plan.labels.final_classes == ds.final_classes and plan.dataset.n_cases == 4
    rows = list(csv.DictReader(open(exp/"cases.csv")))
    assert list(rows[0]) == ["id", "fold", "split", *ds.channel_names, "label"]
    assert all(Path(r[ch]).is_absolute() and Path(r[ch]).exists() for r in rows for ch in ds.channel_names)
    mtime = (exp/"config.json").stat().st_mtime_ns
    assert cli_analyze(["--data", str(phantom), "--exp", str(exp), "--nfolds", "2"]) == 2
    assert (exp/"config.json").stat().st_mtime_ns == mtime
    assert cli_analyze(["--data", str(phantom), "--exp", str(exp), "--nfolds", "3", "--workers", "1", "--overwrite"]) == 0
    assert load_plan(exp).train.nfolds == 3
    r = subprocess.run(segcook_cmd("analyze", "--data", phantom, "--exp", tmp_path/"e2", "--max-patch-size", "0", "64", "64"), capture_output=True, text=True)
    assert r.returncode == 2 and "max patch size" in r.stderr and not (tmp_path/"e2").exists()


def test_augment_set_is_chosen_at_analysis(tmp_path, phantom):
    "MIST's set by default; `--augment nnunet` writes nnU-Net v2's set, `off` none; an unknown name is an error naming the choices."
    from segcook.core import Augment
    analyze(phantom, tmp_path/"a", 2, workers=1)
    assert load_plan(tmp_path/"a").augment == Augment()                       # as written to config.json
    assert cli_analyze(["--data", str(phantom), "--exp", str(tmp_path/"b"), "--nfolds", "2", "--workers", "1", "--augment", "nnunet"]) == 0
    aug = load_plan(tmp_path/"b").augment
    assert aug == Augment.nnunet() and (aug.p_rotate, aug.p_gamma, aug.p_lowres) == (0.2, 0.3, 0.25)
    analyze(phantom, tmp_path/"c", 2, workers=1, augment="off")
    assert not load_plan(tmp_path/"c").augment.enabled
    with pytest.raises(SegcookError, match=r"augment should be one of \['mist', 'nnunet', 'off'\], got 'heavy'"):
        analyze(phantom, tmp_path/"d", 2, workers=1, augment="heavy")
    assert not (tmp_path/"d").exists()


# ---------------------------------------------------------------- real scans
def _real_dataset(tmp_path, d, ids, modality, cls):
    "A dataset.json listing the real scans `<id>_image.nrrd` / `<id>_label.nrrd` of folder `d` (one channel)."
    dj = tmp_path/"ds"/"dataset.json"; dj.parent.mkdir()
    dj.write_text(json.dumps({"task": cls, "modality": modality, "images": {modality: ["_image."]}, "labels": [0, 1],
                              "final_classes": {cls: [1]},
                              "train-cases": [{"id": i, "images": {modality: str(d/f"{i}_image.nrrd")}, "mask": str(d/f"{i}_label.nrrd")} for i in ids]}))
    return dj

def test_real_ct_lungs_anisotropic_tenth_percentile(tmp_path, shared):
    d = shared/"pyradiomics"
    ids = ["lung1", "lung2"]
    dj = _real_dataset(tmp_path, d, ids, "ct", "tumour")
    plan = analyze(dj, tmp_path/"exp", nfolds=2, workers=2)
    sp = []
    for i in ids:                                               # spacings from the headers, RAI order by hand
        r = sitk.ImageFileReader(); r.SetFileName(str(d/f"{i}_image.nrrd")); r.ReadImageInformation()
        D = np.abs(np.array(r.GetDirection()).reshape(3, 3))
        sp.append([r.GetSpacing()[int(np.argmax(D[k]))] for k in range(3)])
    sp = np.array(sp)
    exp = np.median(sp, axis=0); exp[2] = np.percentile(sp[:, 2], 10)
    np.testing.assert_allclose(plan.spatial.target_spacing, exp, rtol=1e-9)
    assert plan.spatial.anisotropic_axis == 2 and exp.max() / np.median(sp, axis=0).min() > 3
    ch = plan.channels[0]
    assert ch.norm == "ct" and -1024 <= ch.window[0] < ch.mean < ch.window[1] <= 3071
    assert all(p & (p - 1) == 0 for p in plan.spatial.patch_size)


def test_memory_warning_names_cases(tmp_path, phantom, caplog):
    import logging
    caplog.set_level(logging.WARNING, logger="segcook")
    analyze(phantom, tmp_path/"e", nfolds=2, workers=1, max_case_gb=1e-4)   # 100 kB: every case is "too big"
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "exceed" in msg and all(c.id in msg for c in load_dataset(phantom).cases())


def test_real_mr_brains_flipped_axis_and_nonzero_rule(tmp_path, shared):
    d = shared/"pyradiomics"
    ids = ["brain1", "brain2"]
    dj = _real_dataset(tmp_path, d, ids, "mr", "lesion")
    plan = analyze(dj, tmp_path/"exp", nfolds=2, workers=1)
    zf = [float((sitk.GetArrayFromImage(sitk.ReadImage(str(d/f"{i}_image.nrrd"))) == 0).mean()) for i in ids]
    assert plan.channels[0].use_nonzero == (np.mean(zf) >= 0.2)
    sp = np.array([sitk.ReadImage(str(d/f"{i}_label.nrrd")).GetSpacing() for i in ids])  # y flipped: axes stay in place
    exp = np.median(sp, axis=0); exp[2] = np.percentile(sp[:, 2], 10)
    np.testing.assert_allclose(plan.spatial.target_spacing, exp, rtol=1e-9)
    assert plan.spatial.anisotropic_axis == 2 and not plan.excluded


def test_analysis_does_not_import_torch(tmp_path):
    "Analysis checks patch sizes with core's get_topology: `segcook analyze` never pays for importing torch."
    dj = make_phantom(tmp_path/"ph", cases=3, size=(24, 24, 16))
    code = ("import sys; from segcook.analysis import analyze; "
            f"analyze({str(dj)!r}, {str(tmp_path/'exp')!r}, nfolds=2, workers=2); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path/"exp"/"config.json").exists()


def test_inflating_into_numpy_equals_gzip(tmp_path):
    "ISA-L's reader fills the numpy buffer with exactly gzip's bytes; files it cannot do (several members, not gzip) fall back."
    import gzip
    from segcook.analysis import _inflate_file, _nifti_array
    data = np.random.default_rng(0).integers(0, 7, 3_000_000).astype(np.uint8).tobytes()
    one = tmp_path/"one.gz"; one.write_bytes(gzip.compress(data))
    assert _inflate_file(one).tobytes() == data
    two = tmp_path/"two.gz"; two.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    got = _inflate_file(two)
    assert got is None or got.tobytes() == data                       # ISIZE is the last member's: not a full read
    (tmp_path/"raw.bin").write_bytes(data)
    assert _inflate_file(tmp_path/"raw.bin") is None                  # not gzip: the caller reads the bytes as they are
    img = sitk.GetImageFromArray(np.arange(24 * 20 * 16, dtype=np.float32).reshape(16, 20, 24)); img.SetSpacing((1, 2, 3))
    for name in ("a.nii.gz", "a.nii"):
        sitk.WriteImage(img, str(tmp_path/name))
        assert np.array_equal(_nifti_array(tmp_path/name), sitk.GetArrayFromImage(img).T)
