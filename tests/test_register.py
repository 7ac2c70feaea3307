"Label transfer between sequences (segcook.register) and the paired abdominal phantoms, on real files through SimpleITK."
import csv, json, os, shutil
from pathlib import Path
import numpy as np
import pytest
import SimpleITK as sitk
from segcook.core import read_image, write_image, from_xyz, to_xyz, SegcookError
from segcook.data import make_phantom, load_dataset, ABDOMEN_ORGANS
from segcook.register import transfer_labels, transfer_dataset, register_files, judge, cli_register

os.environ.setdefault("OMP_NUM_THREADS", "1")
SZ, SP = (40, 40, 32), (1.8, 1.8, 1.8)


def np_dice(a, b):
    "Mean Dice over the organs present in either map, computed here by hand (independent of segcook.register.dice)."
    out = []
    for l in sorted(set(np.unique(a)) | set(np.unique(b)) - {0}):
        x, y = a == l, b == l
        out.append(2.0 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return float(np.mean(out))


@pytest.fixture(scope="module")
def mr(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("mr")/"mr", cases=2, kind="abdomen_mr", size=SZ, spacing=SP)


def test_abdomen_phantoms_deterministic_other_patients(tmp_path, mr):
    "Same seed, same voxels; CT and MR are different patients; the MR dataset exposes no labels."
    a = make_phantom(tmp_path/"a", cases=1, kind="abdomen_ct", size=SZ, spacing=SP, seed=4)
    b = make_phantom(tmp_path/"b", cases=1, kind="abdomen_ct", size=SZ, spacing=SP, seed=4)
    ca, cb = load_dataset(a).cases()[0], load_dataset(b).cases()[0]
    assert open(ca.images["ct"], "rb").read() == open(cb.images["ct"], "rb").read()
    ct_lbl = to_xyz(read_image(ca.label))
    assert set(np.unique(ct_lbl)) == set(range(11)) and read_image(ca.images["ct"]).GetPixelID() == sitk.sitkInt16
    m = load_dataset(mr)
    assert all(c.label is None for c in m.cases()) and "mask" not in json.loads(Path(mr).read_text())
    t1_truth = to_xyz(read_image(Path(mr).parent/"truth"/"abdomen_mr_000"/"abdomen_mr_000_t1_seg.nii.gz"))
    ct0 = to_xyz(read_image(load_dataset(make_phantom(tmp_path/"c", cases=1, kind="abdomen_ct", size=SZ, spacing=SP)).cases()[0].label))
    assert not np.array_equal(t1_truth, ct0)                      # seed 0 CT patient 0 is not MR patient 0


def test_known_affine_recovered(mr):
    "A known affine (3 deg per axis, 3 mm) applied to a phantom T1 is recovered: labels Dice >= 0.9 against the moved truth."
    c = load_dataset(mr).cases()[0]
    t1 = read_image(c.images["t1"]); lab = read_image(Path(mr).parent/"truth"/c.id/f"{c.id}_t1_seg.nii.gz")
    known = sitk.AffineTransform(3)
    known.SetMatrix(sitk.Euler3DTransform((0, 0, 0), *np.deg2rad([3, -3, 3])).GetMatrix()); known.SetTranslation((3, -2, 3))
    moved = sitk.Resample(t1, t1, known, sitk.sitkLinear, 0.0)
    truth = to_xyz(sitk.Resample(lab, lab, known, sitk.sitkNearestNeighbor, 0))
    out, tf, q = transfer_labels(moved, t1, lab)
    assert q.ok and q.gain > 0 and judge(q) == ""
    assert np_dice(to_xyz(out), truth) >= 0.9 > np_dice(to_xyz(lab), truth)


def test_dataset_drops_and_names_bad_registration(tmp_path, mr):
    "A T2 replaced by noise is dropped and named in the report; the CLI exits 1; mixed-up ids are refused."
    root = tmp_path/"mr"; shutil.copytree(Path(mr).parent, root)
    bad = root/"train/abdomen_mr_001/abdomen_mr_001_t2.nii.gz"
    g = read_image(bad)
    write_image(from_xyz(np.random.default_rng(0).uniform(0, 1000, SZ).astype(np.float32), spacing=SP, origin=g.GetOrigin()), bad)
    labs = tmp_path/"labs"; labs.mkdir()
    for c in ("abdomen_mr_000", "abdomen_mr_001"): shutil.copy(root/"truth"/c/f"{c}_t1_seg.nii.gz", labs/f"{c}.nii.gz")
    rc = cli_register(["--data", str(root/"dataset.json"), "--labels", str(labs), "--out", str(tmp_path/"tr")])
    assert rc == 1
    rep = {(r["id"], r["sequence"]): r for r in csv.DictReader(open(tmp_path/"tr"/"transfer_report.csv"))}
    assert rep[("abdomen_mr_001", "t2")]["kept"] == "0" and "MI after" in rep[("abdomen_mr_001", "t2")]["reason"]
    assert rep[("abdomen_mr_000", "t2")]["kept"] == "1"
    dj = json.loads((tmp_path/"tr"/"dataset.json").read_text())
    assert dj["transfer"]["dropped"] == ["abdomen_mr_001:t2"] and "abdomen_mr_001_t2" not in [e["id"] for e in dj["train-cases"]]
    got = to_xyz(read_image(tmp_path/"tr"/"abdomen_mr_000"/"abdomen_mr_000_t2_seg.nii.gz"))
    truth = to_xyz(read_image(root/"truth"/"abdomen_mr_000"/"abdomen_mr_000_t2_seg.nii.gz"))
    assert np_dice(got, truth) > np_dice(to_xyz(read_image(labs/"abdomen_mr_000.nii.gz")), truth)
    # a patient folder holding another patient's sequence: refused before any registration
    shutil.copy(root/"train/abdomen_mr_001/abdomen_mr_001_dwi.nii.gz", root/"train/abdomen_mr_000/abdomen_mr_001_t2x.nii.gz")
    (root/"train/abdomen_mr_000/abdomen_mr_000_dwi.nii.gz").unlink()
    (root/"train/abdomen_mr_000/abdomen_mr_001_t2x.nii.gz").rename(root/"train/abdomen_mr_000/abdomen_mr_001_dwi.nii.gz")
    with pytest.raises(SegcookError, match="named after patient 'abdomen_mr_001'"):
        transfer_dataset(root/"dataset.json", tmp_path/"tr2", labels=labs)


def test_absurd_start_fails_cleanly(mr):
    "A start 500 mm away: the registration fails, the quality says why, and `judge` drops it."
    c = load_dataset(mr).cases()[0]
    t1, t2 = read_image(c.images["t1"]), read_image(c.images["t2"])
    lab = read_image(Path(mr).parent/"truth"/c.id/f"{c.id}_t1_seg.nii.gz")
    _, _, q = transfer_labels(t2, t1, lab, initial=sitk.TranslationTransform(3, (500, 0, 0)))
    assert not q.ok and judge(q).startswith("registration failed")
