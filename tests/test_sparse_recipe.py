"The sparse-annotation recipe end to end through papermill in smoke mode (phantom + MNI data, 3d + 2d, CPU), and its sweep spec."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from segcook.core import read_image, to_xyz

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO/"recipes"/"sparse_annotation.ipynb"


def test_sparse_recipe_is_clean_and_parameterised():
    nb = json.loads(RECIPE.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    src = "\n" + "".join(code[0]["source"])
    for p in ("study", "datasets", "configs", "exp", "seeds", "densities", "volume_fractions", "policies", "methods", "smoke"):
        assert f"\n{p} =" in src, p
    from segcook.sweep import load_sweep
    sw = load_sweep(REPO/"recipes"/"sweep_sparse_annotation.yaml")          # every swept name is a recipe parameter
    assert sorted((tuple(r.params["datasets"]), tuple(r.params["configs"])) for r in sw.runs) == \
        [(("mni",), ("2d",)), (("mni",), ("3d",)), (("phantom",), ("2d",)), (("phantom",), ("3d",))]


@pytest.mark.slow
def test_sparse_recipe_smoke(tmp_path):
    "`papermill recipes/sparse_annotation.ipynb out.ipynb -p smoke True`: the three studies, every arm trained on sparse labels and scored."
    exp, out = tmp_path/"exp", tmp_path/"out.ipynb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    cmd = [str(Path(sys.executable).parent/"papermill"), str(RECIPE), str(out), "-p", "smoke", "True", "-p", "exp", str(exp)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, cwd=REPO/"recipes")
    assert r.returncode == 0, r.stderr[-3000:]
    datasets = ["phantom", "mni"] if (exp/"mni").exists() else ["phantom"]
    # budget grid: every (data, config, density, volumes) and the dense arm, with IoU
    b = pd.read_csv(exp/"budget.csv")
    grid = {(d, c, r, s) for d in datasets for c in ("3d", "2d") for r in (0.25, 0.5) for s in (0.5, 1.0)}
    assert {(x.data, x.config, x.density, x.volumes) for x in b[b.policy != "dense"].itertuples()} == grid
    assert set(b[b.policy == "dense"].data) == set(datasets) and b["iou"].between(0, 1).all()
    # the arms really trained on sparse labels: the derived labels hold the ignore value outside the chosen slices
    arm = exp/"phantom"/"arms"/"r0.25_s0.5_fixed_k0"
    sel = pd.read_csv(arm/"slices.csv")
    dj = json.loads((arm/"sparse"/"dataset.json").read_text())
    ign = dj["ignore-label"]
    assert sel["case"].nunique() == 2 and sel.groupby("case").size().nunique() == 1     # s 0.5 of 4 volumes, equal slices
    cid = sel["case"].iloc[0]
    lbl = to_xyz(read_image(arm/"sparse"/"train"/cid/f"{cid}_seg.nii.gz"))
    chosen = sorted(sel[sel.case == cid]["slice"])
    ax = "xyz".index(sel["axis"].iloc[0])
    for k in range(lbl.shape[ax]):
        sl = np.take(lbl, k, axis=ax)
        assert (sl != ign).all() if k in chosen else (sl == ign).all(), k
    ck = json.loads((arm/"study_none"/"base_3d"/"config.json").read_text())
    assert ck["labels"]["ignore_label"] == ign
    twod = json.loads((arm/"study_none"/"base_2d"/"config.json").read_text())
    assert twod["spatial"]["config"] == "2d" and twod["spatial"]["patch_size"][twod["spatial"]["slice_axis"]] == 1
    # test cases are dense and the same for every arm
    t_dense = json.loads((exp/"phantom"/"arms"/"dense"/"study"/"3d_s0"/"folds.json").read_text())["0"]["test"]
    t_sparse = json.loads((arm/"study_none"/"3d_s0"/"folds.json").read_text())["0"]["test"]
    assert t_dense == t_sparse and len(t_dense) == 2
    # policies and interpolation
    pol = pd.read_csv(exp/"policy.csv")
    assert set(pol.policy) == {"fixed", "random", "ual"}
    assert np.allclose(pol.groupby(["data", "config", "density"])["rel"].sum(), 0, atol=1e-9)
    masks = pd.read_csv(exp/"interpolation_masks.csv")
    assert set(masks.method) == {"contour", "propagate"} and masks["iou"].between(0, 1).all()
    it = pd.read_csv(exp/"interpolation.csv")
    assert {"none", "contour", "propagate", "contour_gain"} <= set(it.columns)
    v = pd.read_csv(exp/"verdicts.csv")
    assert set(v.verdict) <= {"reproduced", "not reproduced", "within the spread"}
    assert any(v.conclusion.str.startswith("equal budget")) and any(v.conclusion.str.startswith("policies"))
    # the report: figures inline, the summary recorded
    nb = json.loads(out.read_text())
    pngs = ["".join(c["source"]) for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    for f in ("slices.png", "budget.png", "policy.png", "interpolation.png", "overlay.png"): assert any(f in s for s in pngs), f
    text = lambda t: "".join(t) if isinstance(t, list) else t
    last = "".join(text(o.get("data", {}).get("text/plain", "")) for o in nb["cells"][-1]["outputs"])
    assert "more_volumes_gain_phantom_3d" in last and "verdict_" in last
