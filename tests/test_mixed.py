"Datasets that mix CT and MR cases: per-case modality, CT statistics from the CT cases only, each case normalised by its own rule, MIND."
import csv, dataclasses, json, os, shutil
from pathlib import Path
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from segcook.core import SegcookError, load_plan, plan_for, read_json, write_json
from segcook.data import make_phantom, merge_datasets, load_dataset, check_dataset
from segcook.analysis import analyze
from segcook.preprocess import preprocess, preprocess_case, read_cases_csv
from segcook.inference import input_modalities

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
SIZE = (24, 24, 16)
MAP = [{"ct": "image"}, {"t1": "image"}]


def arr(p): return sitk.GetArrayFromImage(sitk.ReadImage(str(p))).T.astype(np.float64)   # (x, y, z)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    "3 CT phantoms + their MR twins (same seeds: same anatomy), merged, analysed and preprocessed."
    t = tmp_path_factory.mktemp("mixed")
    ct = make_phantom(t/"ct", cases=3, kind="ct", size=SIZE)
    mr = make_phantom(t/"mr", cases=3, kind="mr_abdomen", size=SIZE)
    dj = merge_datasets([ct, mr], t/"mix", channels=MAP)
    plan = analyze(dj, t/"exp", nfolds=2, workers=1, patch_size=[16, 16, 16])
    preprocess(t/"exp", workers=1)
    return dict(t=t, ct=ct, mr=mr, dj=dj, exp=t/"exp", plan=plan)


def test_merged_dataset_lists_both_with_their_modality(mixed):
    d = read_json(mixed["dj"])
    assert d["modality"] == "mixed"
    assert [(e["id"], e["modality"]) for e in d["train-cases"]] == [(f"ct_00{i}", "ct") for i in range(3)] + [(f"mr_abdomen_00{i}", "mr") for i in range(3)]
    assert all(Path(p).is_absolute() for e in d["train-cases"] for p in [*e["images"].values(), e["mask"]])
    assert d["train-cases"][3]["images"]["image"].endswith("mr_abdomen_000_t1.nii.gz")
    assert check_dataset(mixed["dj"]) == []
    rows = list(csv.DictReader(open(mixed["exp"]/"cases.csv")))
    assert {r["id"]: r["modality"] for r in rows} == {**{f"ct_00{i}": "ct" for i in range(3)}, **{f"mr_abdomen_00{i}": "mr" for i in range(3)}}


def test_ct_statistics_come_from_the_ct_cases_only(mixed):
    "The plan's CT rule equals the rule computed by hand over the CT cases' labelled voxels (every 10th, MIST's sample)."
    ch = mixed["plan"].channels[0]
    assert (ch.modality, ch.norm) == ("mixed", "by_modality") and sorted(ch.by_modality) == ["ct", "mr"]
    v = np.concatenate([arr(f"{mixed['t']}/ct/train/ct_00{i}/ct_00{i}_ct.nii.gz")[arr(f"{mixed['t']}/ct/train/ct_00{i}/ct_00{i}_seg.nii.gz") != 0][::10]
                        for i in range(3)])
    lo, hi = np.percentile(v, [0.5, 99.5]); w = np.clip(v, lo, hi)
    r = ch.by_modality["ct"]
    assert r["norm"] == "ct"
    np.testing.assert_allclose(r["window"], [lo, hi], rtol=1e-6)
    np.testing.assert_allclose([r["mean"], r["std"]], [w.mean(), w.std()], rtol=1e-5)
    assert r["window"][0] > 0                         # soft-tissue HU: the MR values (hundreds, a bias field) did not enter
    assert ch.by_modality["mr"]["norm"] == "zscore"


def test_each_case_is_normalised_by_its_own_rule(mixed):
    plan, exp = mixed["plan"], mixed["exp"]
    r = plan.channels[0].by_modality
    for cid, src in [("ct_001", f"{mixed['t']}/ct/train/ct_001/ct_001_ct.nii.gz"), ("mr_abdomen_001", f"{mixed['t']}/mr/train/mr_abdomen_001/mr_abdomen_001_t1.nii.gz")]:
        meta = json.loads((exp/"preprocessed"/cid/"meta.json").read_text())
        got = np.load(exp/"preprocessed"/cid/"image.npy")[0]
        assert meta["resampled"]["spacing"] == [1.0, 1.0, 1.0] and meta["orientation"]["original"] == "RAI"   # only a crop before the intensities
        box = tuple(slice(a, b) for a, b in zip(meta["crop"]["start"], meta["crop"]["stop"]))
        a = arr(src)[box]
        if cid.startswith("ct"):
            want = (np.clip(a, *r["ct"]["window"]) - r["ct"]["mean"]) / r["ct"]["std"]
        else:
            assert r["mr"]["use_nonzero"]                  # the MR twin has exact zeros in the air
            m = a != 0; v = a[m]
            lo, hi = np.percentile(v, [0.5, 99.5])
            want = (np.clip(a, lo, hi) - v.mean()) / v.std() * m
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_mixed_experiment_trains_one_epoch(mixed, tmp_path):
    from segcook.train import train
    exp = tmp_path/"exp"; shutil.copytree(mixed["exp"], exp)
    train(exp, folds=[0], epochs=1, steps_per_epoch=1, batch_size=2, loader="global", arch_kwargs={"base": 4}, val_fraction=0.5)
    assert (exp/"models"/"fold_0"/"last.pt").exists()
    log = list(csv.DictReader(open(exp/"models"/"fold_0"/"log.csv")))
    assert len(log) == 1 and np.isfinite(float(log[0]["train_loss"]))
    from segcook.inference import predict, predict_oof
    ct, mr = f"{mixed['t']}/ct/train/ct_002/ct_002_ct.nii.gz", f"{mixed['t']}/mr/train/mr_abdomen_002/mr_abdomen_002_t1.nii.gz"
    (tmp_path/"in").mkdir(); p = tmp_path/"in"/"paths.csv"; p.write_text(f"id,image,modality\nc,{ct},ct\nm,{mr},mr\n")
    done = predict(exp, p, tmp_path/"out", device="cpu", fast=True)
    assert [d.name for d in done] == ["c.nii.gz", "m.nii.gz"]
    assert sitk.ReadImage(str(done[1])).GetSize() == sitk.ReadImage(mr).GetSize()
    q = tmp_path/"in"/"nomod.csv"; q.write_text(f"id,image\nm,{mr}\n")
    with pytest.raises(SegcookError, match="have no modality"): predict(exp, q, tmp_path/"out2", device="cpu", fast=True)
    assert len(predict(exp, q, tmp_path/"out3", device="cpu", fast=True, modality="mr")) == 1
    assert len(predict_oof(exp, folds=[0], device="cpu", fast=True)) == 3              # held-out cases: each by its cases.csv modality


def test_modality_must_be_declared(mixed, tmp_path):
    d = read_json(mixed["dj"])
    d["train-cases"] = [{k: v for k, v in e.items() if not (k == "modality" and e["id"] in ("ct_001", "mr_abdomen_002"))} for e in d["train-cases"]]
    with pytest.raises(SegcookError, match=r"\['ct_001', 'mr_abdomen_002'\] do not declare their own"): load_dataset(write_json(tmp_path/"a"/"dataset.json", d))
    with pytest.raises(SegcookError, match="cannot say each case's modality"):
        load_dataset(write_json(tmp_path/"b"/"dataset.json", {**read_json(mixed["ct"]), "modality": "mixed", "train-data": str(Path(mixed["ct"]).parent/"train")}))
    d = read_json(mixed["dj"]); d["train-cases"][0]["modality"] = "pet"
    with pytest.raises(SegcookError, match=r"\['ct_000'\]: a case's modality should be one of"): load_dataset(write_json(tmp_path/"c"/"dataset.json", d))
    row = {r["id"]: r for r in read_cases_csv(mixed["exp"], mixed["plan"])}["ct_000"]
    with pytest.raises(SegcookError, match="case ct_000: channel 'image' mixes modalities"): preprocess_case(row["images"], mixed["plan"], cid="ct_000")


def test_merge_refuses_clashing_ids_and_unmatched_channels(mixed, tmp_path):
    with pytest.raises(SegcookError, match="ids must be unique"): merge_datasets([mixed["ct"], mixed["ct"]], tmp_path/"m1")
    with pytest.raises(SegcookError, match="do not match"): merge_datasets([mixed["ct"], mixed["mr"]], tmp_path/"m2")
    with pytest.raises(SegcookError, match="not channels of this dataset"): merge_datasets([mixed["ct"], mixed["mr"]], tmp_path/"m3", channels=[{"ct": "image"}, {"t2": "image"}])
    with pytest.raises(SegcookError, match="inside the source"): merge_datasets([mixed["ct"], mixed["mr"]], Path(mixed["ct"]).parent/"m", channels=MAP)


def test_inference_modality_from_csv_flag_or_error(mixed, tmp_path):
    plan = mixed["plan"]
    img = f"{mixed['t']}/ct/train/ct_000/ct_000_ct.nii.gz"
    cases = [("a", {"image": Path(img)}), ("b", {"image": Path(img)})]
    p = tmp_path/"paths.csv"; p.write_text(f"id,image,modality\na,{img},ct\nb,{img},\n")
    with pytest.raises(SegcookError, match=r"case\(s\) \['b'\] have no modality"): input_modalities(p, cases, plan)
    assert input_modalities(p, cases, plan, modality="mr") == {"a": "ct", "b": "mr"}
    assert input_modalities(p, cases, dataclasses.replace(plan, channels=[plan_for(plan, "ct").channels[0]])) == {}   # single-modality plan: nothing to choose


def test_single_modality_plan_is_unchanged(tmp_path):
    "A CT-only phantom: a plain CT channel (by_modality None), no modality column in cases.csv, config.json as before plus the new null field."
    dj = make_phantom(tmp_path/"ct", cases=2, kind="ct", size=SIZE)
    analyze(dj, tmp_path/"exp", nfolds=2, workers=1, patch_size=[16, 16, 16])
    cfg = read_json(tmp_path/"exp"/"config.json")
    assert [sorted(c) for c in cfg["channels"]] == [sorted(["name", "modality", "norm", "use_nonzero", "window", "mean", "std", "by_modality"])]
    c = cfg["channels"][0]
    assert (c["modality"], c["norm"], c["by_modality"]) == ("ct", "ct", None) and cfg["dataset"]["modality"] == "ct"
    assert open(tmp_path/"exp"/"cases.csv").readline().strip() == "id,fold,split,ct,label"
    assert read_cases_csv(tmp_path/"exp", load_plan(tmp_path/"exp"))[0]["modality"] is None


def test_mind_replace_makes_ct_and_mr_inputs_closer(mixed):
    "Same anatomy as CT and as MR: normalised intensities are anti-correlated, MIND descriptors agree far better."
    plan = mixed["plan"]
    rows = {r["id"]: r for r in read_cases_csv(mixed["exp"], plan)}
    res = {}
    for mind in (None, "replace"):
        q = dataclasses.replace(plan, preprocess=dataclasses.replace(plan.preprocess, mind=mind), spatial=dataclasses.replace(plan.spatial, crop_to_foreground=False))
        a = preprocess_case(rows["ct_000"]["images"], q, modality="ct")[0]
        b = preprocess_case(rows["mr_abdomen_000"]["images"], q, modality="mr")[0]
        spread = 0.5 * (np.abs(a - a.mean()).mean() + np.abs(b - b.mean()).mean())
        res[mind] = (np.abs(a - b).mean() / spread, np.corrcoef(a.ravel(), b.ravel())[0, 1], a.shape[0])
    assert res[None][2] == 1 and res["replace"][2] == 12
    assert res[None][1] < 0 < 0.5 < res["replace"][1]                   # measured: -0.43 vs 0.59
    assert res["replace"][0] < 0.25 * res[None][0]                      # relative MAD, measured: 0.62 vs 3.46


def test_cli_merge(mixed, tmp_path, capsys):
    from segcook.cli import main
    assert main(["merge", "--data", str(mixed["ct"]), str(mixed["mr"]), "--channels", "ct=image", "t1=image", "--out", str(tmp_path/"m")]) == 0
    assert read_json(tmp_path/"m"/"dataset.json")["train-cases"] == read_json(mixed["dj"])["train-cases"]
    assert main(["merge", "--data", str(mixed["ct"]), str(mixed["mr"]), "--out", str(tmp_path/"m2")]) != 0
    assert "do not match" in capsys.readouterr().err
    assert main(["check", "--data", str(mixed["dj"])]) == 0
    assert "training cases per modality: ct 3, mr 3" in capsys.readouterr().err
