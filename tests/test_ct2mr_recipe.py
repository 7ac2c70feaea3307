"The CT -> MR (MIND) recipe end to end through papermill in smoke mode (abdomen phantoms, CPU), and its sweep spec."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from segcook.core import read_image, to_xyz, load_plan

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO/"recipes"/"ct2mr_mind.ipynb"
MODELS = ["baseline CT intensities", "1 CT MIND", "4 T1 self-trained", "7 ablation MR only", "7 final MR + CT"]
ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "stomach", "aorta", "ivc", "gallbladder", "duodenum"]


def test_ct2mr_recipe_is_clean_and_parameterised():
    nb = json.loads(RECIPE.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    src = "\n" + "".join(code[0]["source"])
    for p in ("exp", "seeds", "ct_cases", "mr_patients", "test_patients", "size", "epochs", "final_epochs", "min_mi", "smoke"):
        assert f"\n{p} =" in src, p
    assert all("=" not in line.split("#", 1)[1] for line in src.splitlines() if "#" in line)   # papermill-safe comments
    from segcook.sweep import load_sweep
    sw = load_sweep(REPO/"recipes"/"sweep_ct2mr_mind.yaml")               # every swept name is a recipe parameter
    assert sorted(tuple(r.params["seeds"]) for r in sw.runs) == [(0,), (1,)]


@pytest.mark.slow
def test_ct2mr_recipe_smoke(tmp_path):
    "`papermill recipes/ct2mr_mind.ipynb out.ipynb -p smoke True`: the seven steps run, every model is scored on held-out MR truth."
    exp, out = tmp_path/"exp", tmp_path/"out.ipynb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    cmd = [str(Path(sys.executable).parent/"papermill"), str(RECIPE), str(out), "-p", "smoke", "True", "-p", "exp", str(exp), "-p", "workers", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=REPO/"recipes")
    assert r.returncode == 0, r.stderr[-3000:]
    # every model scored on every held-out patient and sequence, Dice and NSD in [0, 1]
    cases = pd.read_csv(exp/"cases.csv")
    test_ids = sorted(cases["id"].unique())
    assert test_ids == ["abdomen_mr_004", "abdomen_mr_005"]                # the last 2 of 6 MR patients: never in the pool
    assert sorted(set(zip(cases.model, cases.seq))) == sorted((m, s) for m in MODELS for s in ("dwi", "t1", "t2"))
    assert len(cases) == len(MODELS) * 3 * 2
    for o in ORGANS:
        assert cases[f"{o}_dice"].between(0, 1).all() and cases[f"{o}_surf_dice"].between(0, 1).all(), o
    # the per-organ table is the mean of the per-case rows (one seed)
    t = pd.read_csv(exp/"organs.csv", index_col=0)
    assert list(t.index) == MODELS and list(t.columns[:10]) == ORGANS
    m = cases[cases.model == "1 CT MIND"]
    assert t.loc["1 CT MIND", "liver"] == pytest.approx(m["liver_dice"].mean())
    assert t.loc["1 CT MIND", "mean_dice"] == pytest.approx(m[[f"{o}_dice" for o in ORGANS]].mean(axis=1).mean())
    # a held-out score, recomputed by hand from the files: Dice of the liver on one case
    e = exp/"chain_s0"/"step7_mr_ct"/"s0"
    pid = test_ids[0]
    gt = to_xyz(read_image(exp/"mr_data"/"truth"/pid/f"{pid}_t2_seg.nii.gz")) == 1
    pr = to_xyz(read_image(e/"scores"/"t2"/"pred"/f"{pid}.nii.gz")) == 1
    hand = 2*(gt & pr).sum()/(gt.sum() + pr.sum()) if gt.sum() + pr.sum() else 1.0
    row = cases[(cases.model == "7 final MR + CT") & (cases.seq == "t2") & (cases.id == pid)].iloc[0]
    assert row["liver_dice"] == pytest.approx(hand, abs=1e-6)
    # step 1: MIND in replace mode on a z-scored CT channel; the baseline the same without MIND
    p1, pb = load_plan(exp/"ct_mind"/"s0"), load_plan(exp/"ct_intensity"/"s0")
    assert p1.preprocess.mind == "replace" and pb.preprocess.mind is None and p1.channels[0].norm == pb.channels[0].norm == "zscore"
    # step 3: the report names every pool case and why it was dropped; the kept ones train step 4 (T1 images)
    rep = pd.read_csv(exp/"chain_s0"/"step3"/"pseudolabel_report.csv", keep_default_na=False)
    assert len(rep) == 4 and all(r.kept == 1 or r.reason.startswith("missing") for r in rep.itertuples())
    t1 = json.loads((exp/"chain_s0"/"step4_data"/"dataset.json").read_text())
    assert 2 <= len(t1["train-cases"]) <= 4 and all(c["images"]["mr"].endswith("_t1.nii.gz") for c in t1["train-cases"])
    assert not any(c["id"] in test_ids for c in t1["train-cases"])
    # step 6: 2 registrations per pool patient, each kept or dropped by name; the MR set holds every kept one
    tr = pd.read_csv(exp/"chain_s0"/"step6"/"transfer_report.csv", keep_default_na=False)
    assert len(tr) == 8 and set(tr.sequence) == {"t2", "dwi"}
    assert all((r.kept == 1) == (r.reason == "") for r in tr.itertuples())
    mr_all = json.loads((exp/"chain_s0"/"step6"/"dataset.json").read_text())
    assert len(mr_all["train-cases"]) == 4 + int(tr.kept.sum())
    assert sorted(mr_all["transfer"]["dropped"]) == sorted(f"{r.id}:{r.sequence}" for r in tr.itertuples() if not r.kept)
    # step 7: the final plan mixes CT and MR cases under one channel; the ablation is MR only
    pf, pm = load_plan(e), load_plan(exp/"chain_s0"/"step7_mr_only"/"s0")
    assert pf.channels[0].modality == "mixed" and sorted(pf.channels[0].by_modality) == ["ct", "mr"]
    assert pm.channels[0].modality == "mr"
    mixed = pd.read_csv(e/"cases.csv")
    assert sorted(mixed["modality"].unique()) == ["ct", "mr"] and (mixed["modality"] == "ct").sum() == 4
    # efficiency: default (8 TTA passes) vs fast (1), per case and a mean row
    eff = pd.read_csv(exp/"efficiency"/"run"/"efficiency.csv", index_col=0)
    assert list(eff.index) == [*test_ids, "mean"]
    assert (eff["default_tta_passes"] == 8).all() and (eff["fast_tta_passes"] == 1).all()
    assert (eff["default_mem_area_mib_s"] > eff["fast_mem_area_mib_s"]).all()
    v = pd.read_csv(exp/"verdicts.csv")
    assert len(v) == 5 and set(v.verdict) <= {"reproduced", "not reproduced", "within the spread"}
    # the report: a figure per step inline, the summary recorded
    nb = json.loads(out.read_text())
    pngs = ["".join(c["source"]) for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    for f in ("step1.png", "step3.png", "step4.png", "step6.png", "step7_", "steps.png"): assert any(f in s for s in pngs), f
    text = lambda t: "".join(t) if isinstance(t, list) else t
    last = "".join(text(o.get("data", {}).get("text/plain", "")) for o in nb["cells"][-1]["outputs"])
    assert "dice_7_final_MR_plus_CT" in last and "verdict_3" in last and "speedup_fast" in last
