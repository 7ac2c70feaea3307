"Threshold search on out-of-fold probabilities: known optimum, lesion-wise Dice vs BraTS, bad input, CLI round trip, predict default."
import json, subprocess
from pathlib import Path
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from segcook.core import SegcookError, load_plan, plan_to_dict, read_image, to_xyz, write_image, from_xyz
from segcook.nets import build_net
from segcook.metrics import brats_lesionwise
from segcook.inference import regions_to_labels, region_thresholds, predict, predict_oof, cli_predict, with_thresholds
from segcook.postprocess import select_thresholds, lesion_dice, read_probs, oof_prob_pairs, save_thresholds, cli_postprocess
from conftest import segcook_cmd

BRATS = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}


def known_case(seed, true, gap=0.06, shape=(30, 28, 18)):
    "Smooth random probabilities with no value within `gap` of the true thresholds; the truth is the rule at `true`."
    rng = np.random.default_rng(seed)
    pr = ndi.gaussian_filter(rng.random((3, *shape)), (0, 2, 2, 2))
    pr = (pr - pr.min((1, 2, 3), keepdims=True)) / np.ptp(pr, (1, 2, 3), keepdims=True)
    for i, t in enumerate(true.values()):
        near = np.abs(pr[i] - t) < gap
        pr[i][near] = t + np.where(pr[i][near] >= t, gap, -gap)
    return pr.astype(np.float32), regions_to_labels(pr, BRATS, true)


@pytest.mark.parametrize("true,grid,metric", [({"WT": 0.25, "TC": 0.55, "ET": 0.75}, False, "lesion_dice"),
                                              ({"WT": 0.6, "TC": 0.35, "ET": 0.5}, True, "lesion_dice"),
                                              ({"WT": 0.3, "TC": 0.5, "ET": 0.65}, False, "dice")])
def test_recovers_known_thresholds_from_files(tmp_path, true, grid, metric):
    "Probabilities in npz and NIfTI files, truth = prob >= t per region: the search finds every t and scores 1."
    pairs = []
    for s in range(4):
        pr, gt = known_case(s, true)
        write_image(from_xyz(gt), tmp_path/f"gt{s}.nii.gz")
        if s % 2: np.savez_compressed(tmp_path/f"c{s}_probs.npz", probs=pr[::-1], names=np.array(["ET", "TC", "WT"]))
        else:
            for i, r in enumerate(BRATS): write_image(from_xyz(pr[i]), tmp_path/f"c{s}_prob_{r}.nii.gz")
        src = tmp_path/f"c{s}_probs.npz" if s % 2 else {r: tmp_path/f"c{s}_prob_{r}.nii.gz" for r in BRATS}
        np.testing.assert_allclose(read_probs(src, list(BRATS)), pr, atol=1e-6)
        pairs.append((f"c{s}", tmp_path/f"gt{s}.nii.gz", src))
    thr, tab = select_thresholds(pairs, BRATS, metric=metric, trials=30, grid=grid, workers=1)
    for r, t in true.items(): assert abs(thr[r] - t) <= 0.06 + 1e-9, (r, thr[r], t)
    assert tab[f"chosen {metric}"].min() == pytest.approx(1.0)
    assert tab.loc["mean", f"default {metric}"] < 1.0 and tab.loc["mean", "gain"] > 0
    assert list(tab.index) == ["WT", "TC", "ET", "mean"]
    assert select_thresholds(pairs, BRATS, metric=metric, trials=30, grid=grid, workers=1)[0] == thr   # seeded


@pytest.mark.parametrize("seed", range(3))
def test_lesion_dice_equals_brats_lesionwise(seed):
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.random((40, 36, 24)), 1.5)
    g = np.zeros(f.shape, np.uint8); g[f > np.quantile(f, 0.9)] = 2; g[f > np.quantile(f, 0.95)] = 1; g[f > np.quantile(f, 0.975)] = 3
    p = np.roll(g, 2, 0); p[rng.random(f.shape) > 0.999] = 3                          # shifted, plus specks
    ref = brats_lesionwise(g, p, (1.0, 1.2, 1.5)).set_index("Labels")["LesionWise_Score_Dice"]
    for r, l in BRATS.items():
        assert lesion_dice(np.isin(g, l), np.isin(p, l), (1.0, 1.2, 1.5)) == pytest.approx(ref[r], abs=1e-12)


# ---------------------------------------------------------------- an experiment: analyze + random-weight checkpoints
def _random_exp(phantom, e, **opts):
    "An analysed phantom experiment with random-weight checkpoints for both folds."
    from segcook.analysis import analyze
    analyze(phantom, e, nfolds=2, workers=1, patch_size=(16, 16, 16), **opts)
    plan = load_plan(e)
    plan.train.arch_kwargs = {"base": 4, "max_width": 8, "max_pools": 2}
    for k in (0, 1):
        torch.manual_seed(k)
        d = e/"models"/f"fold_{k}"; d.mkdir(parents=True)
        torch.save({"format": "segcook-ckpt-1", "plan": plan_to_dict(plan), "model": build_net(plan).state_dict(), "epoch": 0,
                    "best_score": 0.0, "fold": k}, d/"best.pt")
    return e


@pytest.fixture(scope="module")
def exp(phantom, tmp_path_factory):
    "One sigmoid head per region: the plan the thresholds were designed for (BraTS's 0.45/0.40/0.45 by default)."
    return _random_exp(phantom, tmp_path_factory.mktemp("thr")/"exp", region_recipe="sigmoid")


def test_softmax_plan_predicts_argmax_unless_thresholds(phantom, tmp_path):
    "A softmax head with regions writes region probabilities; its labels are their argmax, or the region rule once given thresholds."
    e = _random_exp(phantom, tmp_path/"exp")
    assert load_plan(e).labels.head == "softmax"
    done = predict(e, phantom, tmp_path/"default", fast=True, probs=True, device="cpu")
    ruled = predict(e, phantom, tmp_path/"ruled", fast=True, probs=True, device="cpu", thresholds="WT=0.5,TC=0.5,ET=0.5")
    for p, q in zip(done, ruled):
        pr = np.load(p.parent/f"{p.name.split('.')[0]}_probs.npz")["probs"]         # WT, TC, ET, each a sum of label probabilities
        wt, tc, et = pr
        assert (wt >= tc - 1e-5).all() and (tc >= et - 1e-5).all()
        by_label = np.stack([1 - wt, tc - et, wt - tc, et])                             # labels 0, 1, 2, 3 back from the sums
        top = np.sort(by_label, 0)
        sure = top[-1] - top[-2] > 1e-5                                                # float sums may swap near-ties only
        assert sure.mean() > 0.99
        np.testing.assert_array_equal(to_xyz(read_image(p))[sure], np.array([0, 1, 2, 3])[by_label.argmax(0)][sure])
        np.testing.assert_array_equal(to_xyz(read_image(q)), regions_to_labels(pr, BRATS, {"WT": 0.5, "TC": 0.5, "ET": 0.5}))


def test_no_probabilities_says_how_to_write_them(exp, capsys):
    predict_oof(exp, name="labels_only", fast=True, device="cpu")
    with pytest.raises(SegcookError, match=r"no probabilities for 4 of 4 case\(s\).*segcook predict --exp .* --oof --probs"):
        oof_prob_pairs(exp, "labels_only")
    assert cli_postprocess(["--select-thresholds", "--exp", str(exp), "--name", "labels_only"]) == 2
    assert "--oof --probs" in capsys.readouterr().err
    assert not (exp/"postprocess"/"strategy.json").exists()


def test_cli_round_trip_and_default_unchanged(exp, phantom, tmp_path):
    "predict --oof --probs -> postprocess --select-thresholds -> strategy.json -> predict --thresholds uses them."
    assert cli_predict(["--exp", str(exp), "--oof", "--fast", "--probs", "--device", "cpu"]) == 0
    sdir = exp/"postprocess"; sdir.mkdir(exist_ok=True)
    steps = [{"op": "remove_small", "labels": [1, 2, 3], "min_size": 10}]
    (sdir/"strategy.json").write_text(json.dumps({"steps": steps}))                 # an earlier --select: kept
    r = subprocess.run(segcook_cmd("postprocess", "--select-thresholds", "--exp", exp, "--name", "oof", "--trials", "15",
                                   "--workers", "1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.loads((sdir/"strategy.json").read_text())
    assert s["steps"] == steps and set(s["thresholds"]) == set(BRATS) and s["thresholds_selection"]["metric"] == "lesion_dice"
    assert (sdir/"thresholds.csv").read_text().startswith("region,default threshold,default lesion_dice")
    thr = s["thresholds"]
    # predict with the strategy: the labels are the rule at the chosen thresholds on the written probabilities
    out = tmp_path/"chosen"
    assert cli_predict(["--exp", str(exp), "--input", str(phantom), "--out", str(out), "--fast", "--probs", "--device", "cpu",
                        "--thresholds", str(sdir/"strategy.json")]) == 0
    assert json.loads((out/"thresholds.json").read_text()) == thr
    # default: no thresholds -> the plan's (BraTS 0.45/0.40/0.45), nothing recorded
    dflt = tmp_path/"default"
    done = predict(exp, phantom, dflt, fast=True, probs=True, device="cpu")
    assert not (dflt/"thresholds.json").exists()
    same = predict(exp, phantom, tmp_path/"same", fast=True, device="cpu", thresholds="WT=0.45,TC=0.4,ET=0.45")
    for p, q in zip(done, same):
        cid = p.name.split(".")[0]
        probs = np.load(dflt/f"{cid}_probs.npz")["probs"]
        np.testing.assert_array_equal(to_xyz(read_image(p)), regions_to_labels(probs, BRATS, {"WT": 0.45, "TC": 0.4, "ET": 0.45}))
        np.testing.assert_array_equal(to_xyz(read_image(q)), to_xyz(read_image(p)))
        np.testing.assert_array_equal(to_xyz(read_image(out/p.name)), regions_to_labels(np.load(out/f"{cid}_probs.npz")["probs"], BRATS, thr))
    assert load_plan(exp).labels.region_thresholds is None                           # config.json untouched
    # resuming a folder predicted with other thresholds is refused; --overwrite redoes it
    with pytest.raises(SegcookError, match="holds predictions made with thresholds"):
        predict(exp, phantom, out, fast=True, device="cpu", thresholds="WT=0.9")
    with pytest.raises(SegcookError, match="holds predictions made with thresholds"):
        predict(exp, phantom, dflt, fast=True, device="cpu", thresholds=thr)
    predict(exp, phantom, out, fast=True, device="cpu", thresholds="WT=0.9", overwrite=True)
    assert json.loads((out/"thresholds.json").read_text()) == {**region_thresholds(BRATS), "WT": 0.9}


def test_threshold_arguments_checked(exp, tmp_path):
    plan = load_plan(exp)
    with pytest.raises(SegcookError, match="unknown region"): with_thresholds(plan, "XX=0.5")
    with pytest.raises(SegcookError, match=r"\[0, 1\]"): with_thresholds(plan, {"WT": 1.5})
    (tmp_path/"s.json").write_text(json.dumps({"steps": []}))
    with pytest.raises(SegcookError, match="--select-thresholds"): with_thresholds(plan, tmp_path/"s.json")
    assert cli_predict(["--exp", str(exp), "--input", "x", "--out", str(tmp_path/"o"), "--thresholds", "WT"]) == 2
    save_thresholds(tmp_path, {"WT": 0.3})
    assert with_thresholds(plan, tmp_path/"strategy.json").labels.region_thresholds == {"WT": 0.3}


def test_grid_fallback_without_optuna(monkeypatch):
    "No optuna installed: the search says so and runs the grid (same result as grid=True)."
    import sys
    true = {"WT": 0.4, "TC": 0.6, "ET": 0.3}
    pairs = [(f"c{s}", gt, pr) for s in range(3) for pr, gt in [known_case(s, true)]]
    want = select_thresholds(pairs, BRATS, grid=True, workers=1)[0]
    monkeypatch.setitem(sys.modules, "optuna", None)                                # `import optuna` raises ImportError
    assert select_thresholds(pairs, BRATS, trials=5, workers=1)[0] == want
    for r, t in true.items(): assert abs(want[r] - t) <= 0.06 + 1e-9
