"segcook evaluate: API, CLI (paths and experiment), parallel workers, bad input."
import json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from segcook.core import from_xyz, write_image, Plan, save_plan
from segcook.evaluate import evaluate, cli_evaluate, SUMMARY
from segcook.metrics import case_metrics

if not hasattr(np, "Inf"): np.Inf = np.inf
import surface_distance as sd

def _write_cases(d, n=4, sp=(0.8, 1.0, 2.5)):
    rng = np.random.default_rng(0); pairs = []
    for i in range(n):
        g = np.zeros((40, 36, 20), np.uint8)
        g[8:30, 6:28, 4:16] = 2; g[12:24, 10:22, 6:13] = 3; g[15:20, 14:18, 8:11] = 1
        p = np.roll(g, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3)))
        if i == n - 1: p[p == 1] = 3          # a case with an empty class in the prediction
        for a, nm in ((g, "gt"), (p, "pred")): write_image(from_xyz(a, spacing=sp), d / f"{nm}{i}.nii.gz")
        pairs.append((f"c{i}", str(d / f"gt{i}.nii.gz"), str(d / f"pred{i}.nii.gz"), g, p))
    return pairs

CLASSES = {"WT": [1, 2, 3], "TC": [1, 3], "NC": [1]}

def test_api_matches_reference_and_parallel_equals_serial(tmp_path):
    cases = _write_cases(tmp_path)
    pairs = [c[:3] for c in cases]
    ms = ["dice", "haus95", "surf_dice"]
    a = evaluate(pairs, CLASSES, ms, workers=1)
    b = evaluate(pairs, CLASSES, ms, out=tmp_path / "r.csv", workers=2)
    pd.testing.assert_frame_equal(a, b)
    sp = (0.8, 1.0, 2.5)
    g, p = cases[0][3], cases[0][4]
    ref = sd.compute_surface_distances(np.isin(g, [1, 3]), np.isin(p, [1, 3]), sp)
    assert a.loc[0, "TC_haus95"] == pytest.approx(sd.compute_robust_hausdorff(ref, 95), rel=1e-6)
    assert a.loc[0, "TC_surf_dice"] == pytest.approx(sd.compute_surface_dice_at_tolerance(ref, 1.0), rel=1e-6)
    diag = np.linalg.norm(np.multiply((40, 36, 20), sp))
    assert a.loc[3, "NC_dice"] == 0 and a.loc[3, "NC_haus95"] == pytest.approx(diag)
    r = pd.read_csv(tmp_path / "r.csv")
    assert r["id"].tolist() == [c[0] for c in cases] + list(SUMMARY)
    assert r.loc[r.id == "Mean", "WT_dice"].item() == pytest.approx(a["WT_dice"].mean())
    assert (tmp_path / "r.png").exists()

def test_cli_paths(tmp_path, capsys):
    cases = _write_cases(tmp_path, 2)
    pd.DataFrame([c[:3] for c in cases], columns=["id", "mask", "prediction"]).to_csv(tmp_path / "paths.csv", index=False)
    (tmp_path / "classes.json").write_text(json.dumps({"WT": [1, 2, 3], "ET": [3]}))
    rc = cli_evaluate(["--paths", str(tmp_path / "paths.csv"), "--classes", str(tmp_path / "classes.json"),
                       "--out", str(tmp_path / "out" / "results.csv"), "--metrics", "dice", "hd95", "assd", "--workers", "1"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(df.columns) == ["id", "WT_dice", "WT_haus95", "WT_avg_surf", "ET_dice", "ET_haus95", "ET_avg_surf"]

def test_cli_experiment(tmp_path):
    exp = tmp_path / "exp"; (exp / "predictions" / "fold0").mkdir(parents=True)
    cases = _write_cases(tmp_path, 3)
    rows = []
    for cid, m, p, *_ in cases:
        rows.append({"id": cid, "fold": 0, "split": "train", "t1": "x", "label": m})
        if cid != "c2": Path(p).rename(exp / "predictions" / "fold0" / f"{cid}.nii.gz")
    pd.DataFrame(rows).to_csv(exp / "cases.csv", index=False)
    plan = Plan(); plan.labels.labels = [0, 1, 2, 3]; plan.labels.final_classes = {"WT": [1, 2, 3], "ET": [3]}
    plan.evaluate.metrics = ["dice", "surf_dice"]
    save_plan(plan, exp / "config.json")
    assert cli_evaluate(["--exp", str(exp), "--workers", "1"]) == 0
    df = pd.read_csv(exp / "results.csv")
    assert df["id"].tolist()[:2] == ["c0", "c1"] and "c2" not in df["id"].tolist()
    assert "ET_surf_dice" in df.columns

def test_bad_inputs_are_clear(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("id,mask\nc0,a.nii.gz\n")
    (tmp_path / "c.json").write_text(json.dumps({"WT": [1]}))
    assert cli_evaluate(["--paths", str(tmp_path / "p.csv"), "--classes", str(tmp_path / "c.json"), "--out", str(tmp_path / "r.csv")]) == 2
    assert "missing column" in capsys.readouterr().err
    (tmp_path / "c.json").write_text(json.dumps({"WT": "one"}))
    (tmp_path / "p.csv").write_text("id,mask,prediction\nc0,a.nii.gz,b.nii.gz\n")
    assert cli_evaluate(["--paths", str(tmp_path / "p.csv"), "--classes", str(tmp_path / "c.json"), "--out", str(tmp_path / "r.csv")]) == 2
    assert "class 'WT'" in capsys.readouterr().err
    (tmp_path / "c.json").write_text(json.dumps({"WT": [1]}))
    assert cli_evaluate(["--paths", str(tmp_path / "p.csv"), "--classes", str(tmp_path / "c.json"), "--out", str(tmp_path / "r.csv"), "--workers", "1"]) == 2
    assert "file not found" in capsys.readouterr().err

def _write_pair_of_cubes(d, cid="b0"):
    """Two 4^3 cubes of label 1 (NCR: in WT and TC, not ET) 4 voxels apart along x; the prediction is the first."""
    g = np.zeros((40, 12, 12), np.uint8); g[2:6, 4:8, 4:8] = 1; g[10:14, 4:8, 4:8] = 1
    p = np.zeros_like(g); p[2:6, 4:8, 4:8] = 1
    for a, nm in ((g, "gt"), (p, "pred")): write_image(from_xyz(a), d / f"{cid}-{nm}.nii.gz")
    return (cid, str(d / f"{cid}-gt.nii.gz"), str(d / f"{cid}-pred.nii.gz"))

def test_cli_lesionwise_challenges(tmp_path, capsys):
    """GLI dilates 3 times (the 4-voxel gap closes: one lesion of 128 voxels, half found, Dice 2*64/192);
    MEN dilates once (two lesions: one found exactly, one missed: Dice 1/2, HD95 374/2). ET is empty on both sides."""
    pd.DataFrame([_write_pair_of_cubes(tmp_path)], columns=["id", "mask", "prediction"]).to_csv(tmp_path / "paths.csv", index=False)
    res = {}
    for ch in ("GLI", "MEN"):
        assert cli_evaluate(["--paths", str(tmp_path / "paths.csv"), "--challenge", ch, "--out", str(tmp_path / f"{ch}.csv"), "--workers", "1"]) == 0
        res[ch] = pd.read_csv(tmp_path / f"{ch}.csv").set_index("id").loc["b0"]
    assert (tmp_path / "GLI.png").exists()
    for r in ("WT", "TC"):
        assert res["GLI"][f"{r}_lesion_dice"] == pytest.approx(2 * 64 / 192)
        assert (res["GLI"][f"{r}_num_tp"], res["GLI"][f"{r}_num_fn"], res["GLI"][f"{r}_num_fp"]) == (1, 0, 0)
        assert res["MEN"][f"{r}_lesion_dice"] == pytest.approx(0.5) and res["MEN"][f"{r}_lesion_hd95"] == pytest.approx(187.0)
        assert (res["MEN"][f"{r}_num_tp"], res["MEN"][f"{r}_num_fn"], res["MEN"][f"{r}_num_fp"]) == (1, 1, 0)
        assert res["MEN"][f"{r}_legacy_dice"] == pytest.approx(2 * 64 / 192)   # the whole-image Dice ignores lesions
    for ch in res: assert res[ch]["ET_lesion_dice"] == 1.0 and res[ch]["ET_lesion_hd95"] == 0.0 and res[ch]["ET_num_fn"] == 0
    assert cli_evaluate(["--paths", str(tmp_path / "paths.csv"), "--challenge", "GLI", "--brats-version", "2024",
                         "--out", str(tmp_path / "g24.csv"), "--workers", "1"]) == 0
    cols = pd.read_csv(tmp_path / "g24.csv").columns
    assert [c[:-len("_lesion_dice")] for c in cols if c.endswith("_lesion_dice")] == ["WT", "TC", "NETC", "SNFH", "ET", "RC"]

def test_cli_lesionwise_experiment_and_bad_input(tmp_path, capsys):
    exp = tmp_path / "exp"; (exp / "predictions" / "fold0").mkdir(parents=True)
    cid, m, p = _write_pair_of_cubes(tmp_path)
    Path(p).rename(exp / "predictions" / "fold0" / f"{cid}.nii.gz")
    pd.DataFrame([{"id": cid, "label": m}]).to_csv(exp / "cases.csv", index=False)
    assert cli_evaluate(["--exp", str(exp), "--challenge", "BraTS-MET", "--workers", "1"]) == 0
    r = pd.read_csv(exp / "results_lesionwise.csv").set_index("id").loc[cid]
    assert r["WT_lesion_dice"] == pytest.approx(0.5) and not (exp / "results.csv").exists()
    capsys.readouterr()
    assert cli_evaluate(["--exp", str(exp), "--challenge", "LUNG"]) == 2
    err = capsys.readouterr().err
    assert "'LUNG' unknown" in err and "2023: GLI, MEN, MET, PED, SSA" in err
    assert cli_evaluate(["--exp", str(exp), "--challenge", "SSA", "--brats-version", "2024"]) == 2
    assert "2024 challenge 'SSA' unknown or not implemented" in capsys.readouterr().err
    assert cli_evaluate(["--exp", str(exp), "--challenge", "GLI", "--metrics", "dice"]) == 2
    assert "drop --classes and --metrics" in capsys.readouterr().err
    (tmp_path / "paths.csv").write_text(f"id,mask,prediction\n{cid},{m},{p}\n")
    assert cli_evaluate(["--paths", str(tmp_path / "paths.csv"), "--challenge", "GLI"]) == 2
    assert "needs --out" in capsys.readouterr().err
