"Datasets: description, discovery, every bad-input case of `segcook check`, converters, phantoms, CLI."
import json, os, shutil, subprocess, hashlib
from pathlib import Path
import numpy as np
import SimpleITK as sitk
import pytest
from segcook.core import SegcookError, read_image, write_image, to_xyz, from_xyz, write_json, Geometry
from segcook.data import load_dataset, check_dataset, make_phantom, convert_msd, convert_csv, convert_nnunet
from conftest import segcook_cmd


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _case_dir(dj, cid): return Path(dj).parent/"train"/cid


def _probs(dj): return [str(p) for p in check_dataset(dj)]


def test_phantom_passes_check_and_check_writes_nothing(phantom):
    before = _snapshot(phantom.parent)
    assert check_dataset(phantom) == []
    assert _snapshot(phantom.parent) == before


def test_phantom_realism(phantom):
    ds = load_dataset(phantom)
    for c in ds.cases():
        imgs = {ch: to_xyz(read_image(p)) for ch, p in c.images.items()}
        lbl = to_xyz(read_image(c.label))
        fg = imgs["t1"] > 0
        assert fg.mean() > 0.2 and (~fg).mean() > 0.2          # brain plus exact-zero background
        assert all(((a > 0) == fg).all() for a in imgs.values())
        assert set(np.unique(lbl)) <= {0, 1, 2, 3} and (lbl > 0).any()
        assert (lbl[~fg] == 0).all()                             # tumour inside the brain
        # channel contrasts differ: enhancing tumour is brightest on t1c, oedema brightest on flair
        if (lbl == 3).any() and (lbl == 2).any():
            assert imgs["t1c"][lbl == 3].mean() > imgs["t1"][lbl == 3].mean()
            assert imgs["flair"][lbl == 2].mean() > imgs["flair"][(lbl == 0) & fg].mean()


def test_phantom_options(tmp_path):
    dj = make_phantom(tmp_path/"p", cases=2, size=(32, 32, 12), spacing=(1, 1, 4), direction=(0, 1, 0, 1, 0, 0, 0, 0, -1),
                      post_treatment=True, seed=5)
    ds = load_dataset(dj)
    assert ds.labels == [0, 1, 2, 3, 4]
    g = Geometry.read(ds.cases()[0].images["flair"])
    assert g.spacing == [1, 1, 4] and g.direction == [0, 1, 0, 1, 0, 0, 0, 0, -1]
    assert check_dataset(dj) == []
    with pytest.raises(SegcookError, match="not a 3x3 orthonormal"):
        make_phantom(tmp_path/"q", cases=1, direction=(1, 1, 0, 0, 1, 0, 0, 0, 1))
    several = [len(np.unique(__import__("cc3d").connected_components(to_xyz(read_image(c.label)) > 0)[1:]))
               for c in load_dataset(make_phantom(tmp_path/"m", cases=8, size=(40, 40, 32), seed=2)).cases()]
    assert max(several) >= 1


def test_ct_phantom(tmp_path):
    dj = make_phantom(tmp_path/"ct", cases=1, kind="ct", size=(48, 48, 16), spacing=(1, 1, 3))
    c = load_dataset(dj).cases()[0]
    hu, lbl = to_xyz(read_image(c.images["ct"])), to_xyz(read_image(c.label))
    assert hu.min() <= -990 and set(np.unique(lbl)) == {0, 1, 2, 3}
    assert abs(np.median(hu[lbl == 1]) - 60) < 20                # liver ~60 HU
    assert check_dataset(dj) == []


# ---- bad input: each builds the broken dataset and checks the message names patient and file ----

def test_missing_file(phantom_copy):
    (_case_dir(phantom_copy, "brats_001")/"brats_001_t1c.nii.gz").unlink()
    ps = _probs(phantom_copy)
    assert len(ps) == 1 and "brats_001" in ps[0] and "t1c pattern ['_t1c.'] matches no file" in ps[0]


def test_ambiguous_pattern(phantom_copy):
    d = json.loads(phantom_copy.read_text()); d["images"]["t1"] = ["_t1"]; phantom_copy.write_text(json.dumps(d))
    ps = _probs(phantom_copy)
    assert any("brats_000" in p and "matches 2 files (brats_000_t1.nii.gz, brats_000_t1c.nii.gz)" in p for p in ps)
    with pytest.raises(SegcookError, match="make the pattern more specific"):
        load_dataset(phantom_copy).cases()


def test_unreadable_file(phantom_copy):
    f = _case_dir(phantom_copy, "brats_002")/"brats_002_t2.nii.gz"
    f.write_bytes(b"\x00garbage")
    ps = _probs(phantom_copy)
    assert len(ps) == 1 and "brats_002" in ps[0] and "brats_002_t2.nii.gz" in ps[0] and "unreadable" in ps[0]


def test_undeclared_label_and_labels_without_zero(phantom_copy):
    f = _case_dir(phantom_copy, "brats_000")/"brats_000_seg.nii.gz"
    l = read_image(f); l[3, 3, 3] = 9; write_image(l, f)
    ps = _probs(phantom_copy)
    assert len(ps) == 1 and "brats_000_seg.nii.gz" in ps[0] and "label values [9] are not declared" in ps[0]
    d = json.loads(phantom_copy.read_text()); d["labels"] = [1, 2, 3]; phantom_copy.write_text(json.dumps(d))
    with pytest.raises(SegcookError, match=r"labels \[1, 2, 3\] must include 0"):
        load_dataset(phantom_copy)


def test_non_3d_image(phantom_copy):
    f = _case_dir(phantom_copy, "brats_003")/"brats_003_flair.nii.gz"
    write_image(sitk.GetImageFromArray(np.ones((40, 40), np.float32)), f)
    ps = _probs(phantom_copy)
    assert any("brats_003" in p and "brats_003_flair.nii.gz" in p and "is 2D" in p for p in ps)


def test_nan_voxels(phantom_copy):
    f = _case_dir(phantom_copy, "brats_001")/"brats_001_flair.nii.gz"
    img = read_image(f); a = to_xyz(img); a[1, 2, 3] = np.nan; a[2, 2, 2] = np.inf
    write_image(from_xyz(a, ref=img), f)
    ps = _probs(phantom_copy)
    assert ps == [f"brats_001: {f}: flair has 2 NaN/inf voxels"]


def test_geometry_mismatch_between_channels_and_with_label(phantom_copy):
    f = _case_dir(phantom_copy, "brats_000")/"brats_000_t2.nii.gz"
    img = read_image(f); img.SetSpacing((1, 1, 1.5)); write_image(img, f)
    g = _case_dir(phantom_copy, "brats_001")/"brats_001_seg.nii.gz"
    img = read_image(g); img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1)); write_image(img, g)
    ps = _probs(phantom_copy)
    assert any("brats_000" in p and "geometry of t2 disagrees with t1: spacing" in p for p in ps)
    assert any("brats_001" in p and "geometry of label disagrees with t1: direction" in p for p in ps)


def test_empty_label(phantom_copy):
    f = _case_dir(phantom_copy, "brats_002")/"brats_002_seg.nii.gz"
    img = read_image(f); write_image(from_xyz(np.zeros_like(to_xyz(img)), ref=img), f)
    assert _probs(phantom_copy) == [f"brats_002: {f}: label is empty (only 0)"]


def test_duplicate_ids_and_path_outside_root(phantom, tmp_path):
    ds = load_dataset(phantom)
    cases = [{"id": c.id, "images": {k: str(v.relative_to(phantom.parent)) for k, v in c.images.items()},
              "mask": str(c.label.relative_to(phantom.parent))} for c in ds.cases()]
    cases.append(dict(cases[0]))
    cases[1] = {**cases[1], "images": {**cases[1]["images"], "t2": "../../etc/t2.nii.gz"}}
    d = {**json.loads(phantom.read_text()), "train-cases": cases}
    del d["train-data"]
    dj = tmp_path/"listed.json"; d["root"] = str(phantom.parent); dj.write_text(json.dumps(d))
    ps = _probs(dj)
    assert any("patient id 'brats_000' appears 2 times" in p for p in ps)
    assert any("brats_001" in p and "'../../etc/t2.nii.gz' points outside the dataset root" in p for p in ps)


def test_all_problems_at_once(phantom_copy):
    (_case_dir(phantom_copy, "brats_000")/"brats_000_t1.nii.gz").unlink()
    f = _case_dir(phantom_copy, "brats_003")/"brats_003_seg.nii.gz"
    img = read_image(f); write_image(from_xyz(np.zeros_like(to_xyz(img)), ref=img), f)
    ps = _probs(phantom_copy)
    assert len(ps) == 2 and "brats_000" in ps[0] and "brats_003" in ps[1]


def test_bad_description_fields(tmp_path):
    dj = tmp_path/"d.json"
    dj.write_text(json.dumps({"task": "x", "modality": "pet", "train-data": "t", "images": {"a": ["a"]}, "labels": [0, 1],
                              "regions": {"R": [1, 5]}, "channel-modality": {"b": "ct"}}))
    with pytest.raises(SegcookError) as e: load_dataset(dj)
    msg = str(e.value)
    assert "modality should be one of" in msg and "regions['R'] uses labels [5]" in msg and "channel-modality names 'b'" in msg


# ---- converters ----

def test_convert_msd_splits_4d_and_leaves_source_alone(phantom, tmp_path):
    src = tmp_path/"Task01_Phantom"; (src/"imagesTr").mkdir(parents=True); (src/"labelsTr").mkdir()
    ds = load_dataset(phantom)
    training = []
    for c in ds.cases()[:2]:
        vols = [read_image(p) for p in c.images.values()]
        four = sitk.JoinSeries(vols)            # 4D: x, y, z, channel
        write_image(four, src/"imagesTr"/f"{c.id}.nii.gz")
        shutil.copy(c.label, src/"labelsTr"/f"{c.id}.nii.gz")
        training.append({"image": f"./imagesTr/{c.id}.nii.gz", "label": f"./labelsTr/{c.id}.nii.gz"})
    write_json(src/"dataset.json", {"name": "Phantom", "modality": {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"},
                                    "labels": {"0": "background", "1": "NCR", "2": "ED", "3": "ET"}, "training": training, "test": []})
    before = _snapshot(src)
    out = convert_msd(src, tmp_path/"conv")
    assert _snapshot(src) == before
    new = load_dataset(out)
    assert new.channel_names == ["t1", "t1c", "t2", "flair"] and new.labels == [0, 1, 2, 3]
    c0, orig = new.cases()[0], ds.cases()[0]
    np.testing.assert_array_equal(to_xyz(read_image(c0.images["t2"])), to_xyz(read_image(orig.images["t2"])))
    assert Geometry.read(c0.images["t2"]).compare(Geometry.read(orig.images["t2"])) == []
    assert check_dataset(out) == []
    with pytest.raises(SegcookError, match="inside the source"):
        convert_msd(src, src/"out")


def test_convert_csv(phantom, tmp_path):
    ds = load_dataset(phantom)
    rows = ["id,mask,t1,flair"] + [f"{c.id},{c.label},{c.images['t1']},{c.images['flair']}" for c in ds.cases()]
    (tmp_path/"train.csv").write_text("\n".join(rows) + "\n")
    new = load_dataset(convert_csv(tmp_path/"train.csv", tmp_path/"conv"))
    assert new.channel_names == ["t1", "flair"] and new.labels == [0, 1, 2, 3]
    assert [c.id for c in new.cases()] == [c.id for c in ds.cases()]
    assert check_dataset(new) == []
    (tmp_path/"bad.csv").write_text("name,t1\nx,y\n")
    with pytest.raises(SegcookError, match="needs an 'id' column"):
        convert_csv(tmp_path/"bad.csv", tmp_path/"conv2")


def test_convert_nnunet_with_ignore_label(phantom, tmp_path):
    src = tmp_path/"Dataset002_X"; ds = load_dataset(phantom)
    for c in ds.cases():
        for k, p in enumerate(list(c.images.values())[:2]):
            (src/"imagesTr").mkdir(parents=True, exist_ok=True); shutil.copy(p, src/"imagesTr"/f"{c.id}_{k:04d}.nii.gz")
        (src/"labelsTr").mkdir(exist_ok=True)
        l = read_image(c.label); a = to_xyz(l); a[:2] = 4; write_image(from_xyz(a, ref=l), src/"labelsTr"/f"{c.id}.nii.gz")
    write_json(src/"dataset.json", {"channel_names": {"0": "T1", "1": "CT"}, "labels": {"background": 0, "a": 1, "b": 2, "c": 3, "ignore": 4},
                                    "numTraining": 4, "file_ending": ".nii.gz"})
    new = load_dataset(convert_nnunet(src, tmp_path/"conv"))
    assert new.ignore_label == 4 and new.labels == [0, 1, 2, 3]
    assert new.channels == [("t1", "mr"), ("ct", "ct")]
    assert check_dataset(new) == []


def test_real_scans_via_csv(shared, tmp_path):
    r = shared/"pyradiomics"
    rows = ["id,mask,ct"] + [f"{n},{r/f'{n}_label.nrrd'},{r/f'{n}_image.nrrd'}" for n in ("lung1", "lung2")]
    (tmp_path/"lung.csv").write_text("\n".join(rows) + "\n")
    dj = convert_csv(tmp_path/"lung.csv", tmp_path/"lung", modality="ct")
    assert load_dataset(dj).labels == [0, 1]
    assert check_dataset(dj) == []


# ---- command line ----

@pytest.mark.parametrize("cmd", ["phantom", "convert", "check"])
def test_cli_help_has_example(cmd):
    out = subprocess.run(segcook_cmd(cmd, "--help"), capture_output=True, text=True)
    assert out.returncode == 0 and "example:" in out.stdout and f"segcook {cmd}" in out.stdout


def test_cli_phantom_and_check(tmp_path):
    r = subprocess.run(segcook_cmd("phantom", "--out", tmp_path/"p", "--cases", 2, "--size", 32, 32, 24), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dj = tmp_path/"p"/"dataset.json"
    r = subprocess.run(segcook_cmd("check", "--data", dj), capture_output=True, text=True)
    assert r.returncode == 0 and "no problems found" in r.stderr
    (tmp_path/"p/train/brats_000/brats_000_t2.nii.gz").unlink()
    r = subprocess.run(segcook_cmd("check", "--data", dj), capture_output=True, text=True)
    assert r.returncode == 1 and "brats_000" in r.stdout and "1 problem(s)" in r.stderr
    r = subprocess.run(segcook_cmd("check", "--data", tmp_path/"nope.json"), capture_output=True, text=True)
    assert r.returncode == 2 and "nope.json: file not found" in r.stderr


def test_cli_unknown_command():
    r = subprocess.run(segcook_cmd("analyse"), capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean 'analyze'" in r.stderr


def test_mr_abdomen_same_anatomy_other_contrast(tmp_path):
    ct = load_dataset(make_phantom(tmp_path/"ct", cases=2, kind="ct", size=(40, 40, 16), seed=4)).cases()
    mr_dj = make_phantom(tmp_path/"mr", cases=2, kind="mr_abdomen", size=(40, 40, 16), seed=4)
    mr = load_dataset(mr_dj).cases()
    assert load_dataset(mr_dj).modality == "mr" and list(mr[0].images) == ["t1"]
    for c, m in zip(ct, mr):
        lc, lm = to_xyz(read_image(c.label)), to_xyz(read_image(m.label))
        assert np.array_equal(lc, lm)                                             # same body, voxel for voxel
        t1, hu = to_xyz(read_image(m.images["t1"])), to_xyz(read_image(c.images["ct"]))
        assert (t1[hu <= -990] == 0).all()                                        # air is exactly 0 on MR
        assert t1[lm == 1].mean() > t1[lm == 3].mean() and hu[lm == 1].mean() > hu[lm == 3].mean()
    assert check_dataset(mr_dj) == []


@pytest.mark.parametrize("kind,ch", [("brats", "t1c"), ("ct", "ct")])
def test_low_quality_phantom(tmp_path, kind, ch):
    hi = load_dataset(make_phantom(tmp_path/"hi", cases=1, kind=kind, size=(40, 40, 24), seed=7)).cases()[0]
    lo = load_dataset(make_phantom(tmp_path/"lo", cases=1, kind=kind, size=(40, 40, 24), seed=7, quality="low")).cases()[0]
    lh, ll = to_xyz(read_image(hi.label)), to_xyz(read_image(lo.label))
    assert np.array_equal(lh, ll)                                                 # labels untouched
    a, b = to_xyz(read_image(hi.images[ch])).astype(float), to_xyz(read_image(lo.images[ch])).astype(float)
    one, two = (3, 2) if kind == "brats" else (1, 2)                               # ET vs oedema; liver vs kidney
    contrast = lambda x: x[lh == one].mean() - x[lh == two].mean()
    assert 0 < contrast(b) < 0.7 * contrast(a)
    edge = lambda x: np.abs(np.diff(x, axis=2))[(lh[:, :, 1:] != lh[:, :, :-1])].mean()   # sharpness along z at label borders
    assert edge(b) < edge(a)
    with pytest.raises(SegcookError, match="unknown phantom quality 'bad'"):
        make_phantom(tmp_path/"x", cases=1, quality="bad")


def test_phantom_never_writes_over_user_files(tmp_path):
    mine = tmp_path/"mine"; mine.mkdir(); (mine/"notes.txt").write_text("keep")
    with pytest.raises(SegcookError, match="is not empty and is not a phantom segcook made"):
        make_phantom(mine, cases=1, size=(16, 16, 12))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    r = subprocess.run(segcook_cmd("phantom", "--out", mine, "--cases", 1, "--size", 16, 16, 12), capture_output=True, text=True)
    assert r.returncode != 0 and "is not a phantom segcook made" in r.stderr and (mine/"notes.txt").read_text() == "keep"
    dj = make_phantom(tmp_path/"p", cases=2, size=(16, 16, 12))
    assert make_phantom(tmp_path/"p", cases=2, size=(16, 16, 12)) == dj          # same settings: rewritten in place
    with pytest.raises(SegcookError, match="cases: 2 there, 1 now"):             # fewer cases would leave stale ones behind
        make_phantom(tmp_path/"p", cases=1, size=(16, 16, 12))
    assert len(load_dataset(dj).cases()) == 2
