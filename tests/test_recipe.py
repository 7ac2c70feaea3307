"The BraTS recipe end to end through papermill in smoke mode (phantom data, CPU)."
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO/"recipes"/"brats.ipynb"


def test_recipe_is_clean_and_parameterised():
    nb = json.loads(RECIPE.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    src = "".join(code[0]["source"])
    for p in ("gpus", "data", "exp", "epochs", "folds", "arch", "loss", "smoke"): assert f"\n{p} =" in "\n" + src, p


def test_recipe_smoke(tmp_path):
    "`papermill recipes/brats.ipynb out.ipynb -p smoke True` analyses, preprocesses and trains a phantom on the CPU."
    exp, out = tmp_path/"exp", tmp_path/"out.ipynb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    r = subprocess.run([str(Path(sys.executable).parent/"papermill"), str(RECIPE), str(out), "-p", "smoke", "True", "-p", "exp", str(exp)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = exp/"models"/"fold_0"
    assert {"best.pt", "last.pt", "log.csv", "curves.png"} <= {p.name for p in d.iterdir()}
    assert len((d/"log.csv").read_text().strip().splitlines()) == 1 + 2       # header + 2 epochs
    ck = torch.load(d/"last.pt", map_location="cpu", weights_only=True)
    t = ck["plan"]["train"]
    assert (t["deep_supervision"], t["l2"], t["scheduler"], t["lr"], t["arch_kwargs"]["residual"]) == (2, 1e-5, "cosine", 1e-3, True)
    cfg = json.loads((exp/"config.json").read_text())
    assert cfg["train"]["l2"] == 0                                            # the protocol (l2 1e-5) stayed out of config.json
    # inference -> evaluation -> postprocessing selection -> test inference
    import SimpleITK as sitk
    from segcook.core import read_image, compare_headers
    folds = json.loads((exp/"folds.json").read_text())
    held_out = set(folds["0"]["test"])
    oof = {p.name[:-7] for p in (exp/"predictions"/"oof").glob("*.nii.gz")}
    assert oof == held_out                                                    # fold 0 predicts exactly its held-out cases
    res = (exp/"results_oof.csv").read_text().splitlines()
    assert res[0].split(",")[:3] == ["id", "WT_dice", "WT_haus95"] and len(res) == 1 + len(held_out) + 5
    steps = json.loads((exp/"postprocess"/"strategy.json").read_text())["steps"]
    thr = json.loads((exp/"postprocess"/"strategy.json").read_text())["thresholds"]        # chosen on the OOF probabilities
    assert set(thr) == {"WT", "TC", "ET"} and json.loads((exp/"predictions"/"test"/"thresholds.json").read_text()) == thr
    assert isinstance(steps, list)
    cases = {l.split(",")[0]: l for l in (exp/"cases.csv").read_text().splitlines()[1:]}
    tests = sorted(c for c, l in cases.items() if ",test," in l)
    assert len(tests) == 2
    for cid in tests:
        pred = exp/"postprocess"/"test"/f"{cid}.nii.gz"
        src = exp.parent/"exp_data"/"test"/cid
        ref = read_image(src/f"{cid}_t1.nii.gz")
        assert compare_headers(read_image(pred), ref) == []                  # native geometry of the input
        assert set(sitk.GetArrayFromImage(read_image(pred)).ravel()) <= {0, 1, 2, 3}
    assert len((exp/"results_test.csv").read_text().splitlines()) == 1 + 2 + 5
    nb = json.loads(out.read_text())
    pngs = [c for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert any("show_curves" in "".join(c["source"]) for c in pngs)           # the training curves ...
    assert any("results_oof.png" in "".join(c["source"]) for c in pngs)       # ... the OOF box plot ...
    assert any("results_test.png" in "".join(c["source"]) for c in pngs)      # ... and the test box plot are in the report
