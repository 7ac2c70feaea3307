"Pseudo-labelling (segcook.selftrain) and the memory-time area of inference (segcook.inference.MemoryCurve)."
import csv, json, os, time
from pathlib import Path
import numpy as np
import pytest
import torch
from segcook.core import Plan, Channel, save_plan, plan_to_dict, read_image, to_xyz, SegcookError
from segcook.data import make_phantom, load_dataset
from segcook.nets import build_net
from segcook.inference import MemoryCurve, TIMING_FIELDS
from segcook.selftrain import case_stats, verdict, pseudolabel, cli_pseudolabel, efficiency

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def hand_exp(root, dj):
    "A plan and a random-weight checkpoint as segcook.train writes them (as tests/test_inference.py does)."
    ds = load_dataset(dj); p = Plan()
    p.dataset.dataset_json, p.dataset.name = str(dj), ds.task
    p.channels = [Channel(n, m) for n, m in ds.channels]
    p.labels.labels, p.labels.final_classes, p.labels.names = list(ds.labels), dict(ds.final_classes), dict(ds.label_names)
    p.spatial.target_spacing, p.spatial.patch_size = [2.0, 2.0, 2.0], [16, 16, 16]
    p.train.arch_kwargs = {"base": 4, "max_width": 8, "max_pools": 2}
    exp = root/"exp"; save_plan(p, exp/"config.json")
    torch.manual_seed(0); net = build_net(p); (exp/"models/fold_0").mkdir(parents=True)
    torch.save({"format": "segcook-ckpt-1", "plan": plan_to_dict(p), "model": net.state_dict(), "epoch": 0, "best_score": 0.0,
                "fold": 0}, exp/"models/fold_0/best.pt")
    return exp


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("st")
    dj = make_phantom(root/"ct", cases=3, kind="ct", size=(24, 24, 16), spacing=(2.0, 2.0, 2.0))
    return root, hand_exp(root, dj)


def test_rules_by_hand():
    "Volumes in ml at 2 x 2 x 2.5 mm voxels (10 ul each) and the confidence, computed by hand."
    lbl = np.zeros((10, 10, 10), np.uint8); lbl[:5] = 1; lbl[5, :2] = 2       # 500 voxels of 1, 20 of 2
    probs = np.full((3, 10, 10, 10), 0.2); probs[1][lbl == 1] = 0.8; probs[2][lbl == 2] = 0.5
    st = case_stats(lbl, (2.0, 2.0, 2.5), [0, 1, 2], probs)
    assert st["volumes_ml"] == pytest.approx({1: 5.0, 2: 0.2})
    assert st["confidence"] == pytest.approx((500*0.8 + 20*0.5)/520)
    names = {1: "liver", 2: "spleen"}
    assert verdict(st, names, require_all_labels=True) == ""
    assert verdict(st, names, min_volume=0.5) == "too small: spleen 0.20 ml < 0.5"
    assert verdict(st, names, min_volume={"liver": 6}) == "too small: liver 5.00 ml < 6"
    assert "confidence" in verdict(st, names, min_confidence=0.8)
    st0 = case_stats(np.where(lbl == 2, 0, lbl), (2.0, 2.0, 2.5), [0, 1, 2])
    assert verdict(st0, names, require_all_labels=True) == "missing spleen"


def test_pseudolabel_keeps_reports_and_refuses_empty(setup, tmp_path):
    "Kept cases reference the source images and the predictions; every case is in the report; keeping nothing exits 2."
    root, exp = setup
    src = root/"ct"/"train"
    before = sorted(p.name for p in src.rglob("*"))
    dj = pseudolabel(exp, src, tmp_path/"pl", min_confidence=0.0, device="cpu")
    cases = load_dataset(dj).cases()
    assert len(cases) == 3 and all(c.images["ct"].parent.parent == src.resolve() for c in cases)
    assert all(c.label.parent == (tmp_path/"pl"/"predictions").resolve() for c in cases)
    rows = list(csv.DictReader(open(tmp_path/"pl"/"pseudolabel_report.csv")))
    assert [r["kept"] for r in rows] == ["1"]*3 and all(0 < float(r["confidence"]) <= 1 for r in rows)
    assert sorted(p.name for p in src.rglob("*")) == before               # the source is untouched
    rc = cli_pseudolabel(["--exp", str(exp), "--input", str(src), "--out", str(tmp_path/"none"), "--min-volume", "1e6", "--device", "cpu"])
    assert rc == 2
    rows = list(csv.DictReader(open(tmp_path/"none"/"pseudolabel_report.csv")))
    assert len(rows) == 3 and all(r["kept"] == "0" and "too small" in r["reason"] for r in rows)
    assert not (tmp_path/"none"/"dataset.json").exists()
    with pytest.raises(SegcookError, match="inside the input"):
        pseudolabel(exp, src, src/"ct_000"/"pl", device="cpu")


def test_memory_curve_area_is_mean_times_time():
    "A known sleep holding a known allocation: area = mean * time, and the mean rises by the allocation."
    with MemoryCurve(interval=0.01) as base: time.sleep(0.25)
    x = np.ones(160 * 2**20 // 8)                     # 160 MiB, written: resident
    with MemoryCurve(interval=0.01) as mc: time.sleep(0.25)
    del x
    assert mc.area_mib_s > 0 and 0.25 <= mc.seconds < 3
    assert mc.area_mib_s == pytest.approx(mc.mean_mib * mc.seconds, rel=1e-9)
    assert mc.area_mib_s == pytest.approx((base.mean_mib + 160) * mc.seconds, rel=0.1)


def test_efficiency_table(setup, tmp_path):
    "timing.csv carries the area; default vs fast side by side with a mean row."
    root, exp = setup
    df = efficiency(exp, root/"ct"/"train", tmp_path/"eff", device="cpu")
    assert list(df.index) == ["ct_000", "ct_001", "ct_002", "mean"]
    assert (df["default_mem_area_mib_s"] > 0).all() and (df["fast_mem_area_mib_s"] > 0).all()
    assert df.loc["mean", "fast_tta_passes"] == 1
    hdr = open(tmp_path/"eff"/"default"/"timing.csv").readline().strip().split(",")
    assert hdr == TIMING_FIELDS and "mem_area_mib_s" in hdr
