"segcook postprocess: operations against independent computations, strategies, folder CLI, selection."
import json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from scipy import ndimage as ndi
from segcook.core import from_xyz, write_image, read_image, to_xyz
from segcook.postprocess import (remove_small, keep_largest, fill_holes, opening, closing, brats_cascade, apply_strategy,
                                 load_strategy, postprocess_folder, select_strategy, cli_postprocess)

def _random_labels(seed, shape=(30, 28, 20)):
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.random(shape), 1.2)
    lbl = np.zeros(shape, np.uint8); lbl[f > np.quantile(f, 0.85)] = 1; lbl[f > np.quantile(f, 0.93)] = 2
    return lbl

@pytest.mark.parametrize("seed", range(3))
def test_remove_small_and_keep_largest_match_scipy_labelling(seed):
    lbl = _random_labels(seed)
    m = lbl > 0
    cc, n = ndi.label(m, structure=np.ones((3, 3, 3)))      # independent 26-connected labelling
    sizes = np.bincount(cc.ravel())
    exp = m & (sizes[cc] >= 20); exp[cc == 0] = False
    out = remove_small(lbl, [1, 2], min_size=20)
    assert np.array_equal(out > 0, exp) and np.array_equal(out[exp], lbl[exp])
    big = np.argsort(sizes[1:])[::-1][:2] + 1
    out = keep_largest(lbl, [1, 2], k=2)
    assert np.array_equal(out > 0, np.isin(cc, big))

def test_mm3_threshold_uses_spacing():
    lbl = np.zeros((20, 20, 20), np.uint8); lbl[2:4, 2:4, 2:4] = 1     # 8 voxels
    assert remove_small(lbl, [1], spacing=(1, 1, 1), min_size=10, unit="mm3").sum() == 0
    assert remove_small(lbl, [1], spacing=(2, 1, 1), min_size=10, unit="mm3").sum() == 8   # 16 mm^3

def test_fill_holes_opening_closing():
    lbl = np.zeros((15, 15, 15), np.uint8); lbl[3:12, 3:12, 3:12] = 2; lbl[6:9, 6:9, 6:9] = 0
    assert (fill_holes(lbl, [2], fill_label=1)[6:9, 6:9, 6:9] == 1).all()
    spur = lbl.copy(); spur[12:14, 7, 7] = 2                     # a one-voxel-thin spike
    assert opening(spur, [2])[13, 7, 7] == 0 and (opening(spur, [2])[4:11, 4:11, 3] == 2).all()
    gap = np.zeros((15, 15, 15), np.uint8); gap[3:12, 3:12, 3:7] = 1; gap[3:12, 3:12, 8:12] = 1
    assert (closing(gap, [1], radius=1)[5:10, 5:10, 7] == 1).all()

def test_brats_cascade_equals_its_three_steps():
    lbl = _random_labels(5).astype(np.uint8); lbl[lbl == 2] = 3; lbl[(lbl == 0) & (np.indices(lbl.shape)[0] % 7 == 0)] = 0
    steps = [{"op": "replace_small", "labels": [3], "min_size": 30, "replace_with": 1},
             {"op": "replace_small", "labels": [1, 3], "min_size": 30, "replace_with": 2},
             {"op": "remove_small", "labels": [1, 2, 3], "min_size": 30}]
    assert np.array_equal(brats_cascade(lbl, min_et=30, min_tc=30, min_wt=30), apply_strategy(lbl, steps))

def test_folder_cli_never_writes_into_input(tmp_path):
    inp = tmp_path / "preds"; inp.mkdir()
    for i in range(2): write_image(from_xyz(_random_labels(i), spacing=(1., 1., 2.)), inp / f"c{i}.nii.gz")
    before = {p.name: p.stat().st_mtime_ns for p in inp.iterdir()}
    (tmp_path / "s.json").write_text(json.dumps([{"transform": "remove_small_objects", "apply_to_labels": [[1, 2]],
                                                  "per_label": False, "kwargs": {"small_object_threshold": 15}}]))
    assert cli_postprocess(["--input", str(inp), "--out", str(inp), "--strategy", str(tmp_path / "s.json")]) == 2
    assert cli_postprocess(["--input", str(inp), "--out", str(tmp_path / "pp"), "--strategy", str(tmp_path / "s.json"), "--workers", "1"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in inp.iterdir()} == before
    a, b = read_image(inp / "c0.nii.gz"), read_image(tmp_path / "pp" / "c0.nii.gz")
    assert b.GetSpacing() == a.GetSpacing()
    assert np.array_equal(to_xyz(b), remove_small(to_xyz(a), [1, 2], min_size=15))

def test_selection_keeps_helpful_steps_and_rejects_harmful(tmp_path):
    rows = []
    for i in range(3):
        g = np.zeros((40, 40, 20), np.uint8); g[10:30, 10:30, 5:15] = 1; g[15:25, 15:25, 8:12] = 2
        g[33:36, 33:36, 2:5] = 1                                     # a small TRUE object: keep_largest would hurt
        p = g.copy(); p[2:4, 2:4, 2:4] = 1                           # dust
        for a, n in ((g, "gt"), (p, "pr")): write_image(from_xyz(a), tmp_path / f"{n}{i}.nii.gz")
        rows.append((f"c{i}", str(tmp_path / f"gt{i}.nii.gz"), str(tmp_path / f"pr{i}.nii.gz")))
    cands = [{"op": "keep_largest", "labels": [1, 2], "k": 1}, {"op": "remove_small", "labels": [1, 2], "min_size": 10}]
    strat, cmp = select_strategy(rows, {"fg": [1, 2]}, ["dice", "haus95"], cands, workers=1)
    assert strat["steps"] == [cands[1]]
    assert cmp["accepted"].tolist() == [False, True, True]
    pd.DataFrame(rows, columns=["id", "mask", "prediction"]).to_csv(tmp_path / "paths.csv", index=False)
    (tmp_path / "classes.json").write_text(json.dumps({"fg": [1, 2]}))
    assert cli_postprocess(["--select", "--paths", str(tmp_path / "paths.csv"), "--classes", str(tmp_path / "classes.json"),
                            "--out", str(tmp_path / "sel"), "--workers", "1"]) == 0
    assert json.loads((tmp_path / "sel" / "strategy.json").read_text())["steps"]
    assert (tmp_path / "sel" / "comparison.csv").exists()

def test_selection_keeps_the_minimal_chain_and_needs_two_cases(tmp_path):
    "Greedy keeps 'remove < 10' then 'remove < 200'; the first is redundant and is pruned. A fix for one case only is not kept."
    rows = []
    for i in range(4):
        g = np.zeros((40, 40, 20), np.uint8); g[8:32, 8:32, 4:16] = 1
        p = g.copy(); p[2:4, 2:4, 2:3] = 1; p[34:39, 2:6, 2:5] = 1      # a 4-voxel speck and a 60-voxel blob
        if i == 0: p[18:20, 18:20, 9:11] = 0                             # a hole in one case only
        for a, n in ((g, "gt"), (p, "pr")): write_image(from_xyz(a), tmp_path / f"{n}{i}.nii.gz")
        rows.append((f"c{i}", str(tmp_path / f"gt{i}.nii.gz"), str(tmp_path / f"pr{i}.nii.gz")))
    cands = [{"op": "remove_small", "labels": [1], "min_size": 10}, {"op": "remove_small", "labels": [1], "min_size": 200},
             {"op": "fill_holes", "labels": [1]}]
    strat, cmp = select_strategy(rows, {"fg": [1]}, ["dice", "haus95"], cands, workers=1)
    assert strat["steps"] == [cands[1]]
    assert cmp["step"].str.startswith("drop ").sum() == 1 and json.dumps(cands[0]) in cmp[cmp["step"].str.startswith("drop ")]["step"].iloc[0]
    assert cmp.loc[cmp["step"] == json.dumps(cands[2]), "cases helped"].iloc[0] == 1
    assert not cmp.loc[cmp["step"] == json.dumps(cands[2]), "accepted"].iloc[0]
    # with min_cases=1 the one-case fix is kept: the rule, not the metric, rejected it
    strat1, _ = select_strategy(rows, {"fg": [1]}, ["dice", "haus95"], cands, workers=1, min_cases=1)
    assert cands[2] in strat1["steps"]

def test_select_from_an_experiment_without_final_classes(tmp_path):
    "`--select --exp` on a plan without final_classes scores one class per label (the one fallback, `Labels.eval_classes`)."
    from segcook.core import Plan, Labels, save_plan
    exp = tmp_path / "exp"; (exp / "predictions" / "oof").mkdir(parents=True)
    save_plan(Plan(labels=Labels(labels=[0, 1, 2])), exp / "config.json")
    rows = []
    for i in range(3):
        g = np.zeros((30, 30, 12), np.uint8); g[5:20, 5:20, 3:9] = 1; g[8:14, 8:14, 4:8] = 2
        p = g.copy(); p[25:27, 25:27, 1:3] = 1
        write_image(from_xyz(g), tmp_path / f"gt{i}.nii.gz"); write_image(from_xyz(p), exp / "predictions" / "oof" / f"c{i}.nii.gz")
        rows.append({"id": f"c{i}", "label": str(tmp_path / f"gt{i}.nii.gz")})
    pd.DataFrame(rows).to_csv(exp / "cases.csv", index=False)
    assert cli_postprocess(["--select", "--exp", str(exp), "--name", "oof", "--out", str(tmp_path / "sel"), "--workers", "1"]) == 0
    cmp = pd.read_csv(tmp_path / "sel" / "comparison.csv")
    assert {"1_dice before", "2_dice before"} <= set(cmp.columns)
    assert json.loads((tmp_path / "sel" / "strategy.json").read_text())["steps"]


def test_gain_is_one_rule_for_cases_and_means():
    "`_no_worse` judges the means with the same signed gain `_gain` gives per case (Dice up is better, HD95 down is better; issue 16)."
    from segcook.postprocess import _gain, _no_worse
    cur = pd.DataFrame({"WT_dice": [0.8, 0.6], "WT_haus95": [5.0, 9.0]})
    new = pd.DataFrame({"WT_dice": [0.9, 0.6], "WT_haus95": [4.0, 11.0]})
    g = _gain(new, cur)
    assert list(g.columns) == ["WT_dice", "WT_haus95"]
    assert g.to_numpy().ravel().tolist() == pytest.approx([0.1, 1.0, 0.0, -2.0])
    gm = _gain(new.mean(), cur.mean())                                    # the same rule on the means
    assert gm.to_dict() == pytest.approx({"WT_dice": 0.05, "WT_haus95": -0.5})
    assert not _no_worse(new.mean(), cur.mean(), tol=0.01)                # mean HD95 7 -> 7.5 mm: worse by more than 1% of 7
    assert _no_worse(new.mean(), cur.mean(), tol=0.1)                     # within 10% of 7 mm
