"The BraTS 2023 optimisation study recipe end to end through papermill in smoke mode (phantom, CPU), and its sweep spec."
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO/"recipes"/"brats_optimisation.ipynb"
SECTIONS = ["preprocessing", "losses", "targets", "postprocessing", "thresholds", "transfer"]


def test_recipe_is_clean_parameterised_and_swept():
    nb = json.loads(RECIPE.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []) and all(not c["outputs"] for c in code)
    src = "\n" + "".join(code[0]["source"])
    for p in ("data", "exp", "sections", "seeds", "epochs", "gpus", "smoke"): assert f"\n{p} =" in src, p
    from segcook.sweep import load_sweep
    sw = load_sweep(REPO/"recipes"/"sweep_brats_optimisation.yaml")
    assert sorted(s for r in sw.runs for s in r.params["sections"]) == sorted(SECTIONS)


@pytest.mark.slow
def test_brats_optimisation_smoke(tmp_path):
    exp, out = tmp_path/"exp", tmp_path/"out.ipynb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    cmd = [str(Path(sys.executable).parent/"papermill"), str(RECIPE), str(out), "-p", "smoke", "True", "-p", "exp", str(exp)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=REPO/"recipes")
    assert r.returncode == 0, r.stderr[-3000:]
    arms = {"preprocessing": ["zscore", "zscore_rescale", "histmatch"],
            "losses": ["dice_ce", "mse+ce+edge", "dice+focal+edge 0.05", "dice+focal+edge 0.005"],
            "targets": ["regions (sigmoid)", "labels (softmax)"],
            "postprocessing": ["none", "BraTS cascade", "chosen strategy"],
            "transfer": ["challenge 1 model, applied", "challenge 2 only"] + [f"fine-tuned, {p} frozen" for p in ("none", "encoder", "middle", "decoder")]}
    for name, want in arms.items():
        t = pd.read_csv(exp/f"{name}.csv", header=[0, 1], index_col=0)
        assert list(t.index) == want, name
        assert {m for m, _ in t.columns} == {"dice", "dice_sd", "hd95", "legacy_dice", "legacy_hd95", "fp", "fn"}
        assert (exp/f"{name}.png").exists()
    cases = pd.read_csv(exp/"losses.cases.csv")
    assert cases.groupby("arm")["id"].apply(lambda s: tuple(sorted(set(s)))).nunique() == 1        # same test cases for every arm
    # the arms really differ in what they say they differ in
    ck = lambda p: torch.load(p/"models"/"fold_0"/"last.pt", map_location="cpu", weights_only=True)["plan"]
    assert ck(exp/"study"/"zscore"/"mse_ce_edge_s0")["train"]["loss_kwargs"]["terms"] == {"mse": 0.25, "ce": 0.0044, "edge": 0.00015}
    assert json.loads((exp/"study"/"histmatch"/"base"/"config.json").read_text())["preprocess"]["intensity"] == "histmatch"
    assert ck(exp/"study"/"zscore"/"labels_s0")["labels"]["regions"] is None
    assert ck(exp/"c2"/"ft_decoder_s0")["train"]["freeze"] == "decoder"
    strategy_thr = json.loads((exp/"study"/"cv_test"/"chosen"/"raw"/"thresholds.json").read_text())
    assert set(strategy_thr) == {"WT", "TC", "ET"}
    nb = json.loads(out.read_text())
    pngs = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    assert pngs >= 6
    text = lambda t: "".join(t) if isinstance(t, list) else t
    last = "".join(text(o.get("data", {}).get("text/plain", "")) for o in nb["cells"][-1]["outputs"])
    assert "losses:mse+ce+edge" in last and "thresholds:chosen thresholds, none" in last
    v = pd.read_csv(exp/"verdicts.csv")
    assert list(v.section) == SECTIONS and set(v.here) <= {"reproduced", "not reproduced", "within the spread"}
