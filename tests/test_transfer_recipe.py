"The transfer-learning recipe end to end through papermill in smoke mode (phantoms, CPU), and its sweep spec."
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO/"recipes"/"transfer.ipynb"


def test_transfer_recipe_is_clean_and_parameterised():
    nb = json.loads(RECIPE.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    src = "\n" + "".join(code[0]["source"])
    for p in ("study", "exp", "seeds", "target_sizes", "epochs", "head_lr", "freeze_arms", "real", "smoke"): assert f"\n{p} =" in src, p
    from segcook.sweep import load_sweep
    sw = load_sweep(REPO/"recipes"/"sweep_transfer.yaml")                   # every swept name is a recipe parameter
    assert sorted(r.params["study"] for r in sw.runs) == ["freezing", "real", "segbook"]


@pytest.mark.slow
def test_transfer_recipe_smoke(tmp_path):
    "`papermill recipes/transfer.ipynb out.ipynb -p smoke True`: both studies, every arm trained, scored and shown."
    exp, out = tmp_path/"exp", tmp_path/"out.ipynb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    cmd = [str(Path(sys.executable).parent/"papermill"), str(RECIPE), str(out), "-p", "smoke", "True", "-p", "exp", str(exp)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=REPO/"recipes")
    assert r.returncode == 0, r.stderr[-3000:]
    # SegBook: every (modality, size, arm) scored on the same held-out test cases
    runs = pd.read_csv(exp/"segbook"/"runs.csv")
    assert sorted(set(zip(runs.modality, runs.n, runs.arm))) == [(m, n, a) for m in ("ct", "mr") for n in (2, 3) for a in ("finetune", "scratch")]
    cases = pd.read_csv(exp/"segbook"/"cases.csv")
    assert cases.groupby(["modality", "n", "arm"])["id"].apply(lambda s: tuple(sorted(s))).nunique() == 2   # one test set per modality
    src = exp/"segbook"/"source"/"models"/"fold_0"/"best.pt"
    ft = torch.load(exp/"segbook"/"mr_2"/"finetune_s0"/"models"/"fold_0"/"last.pt", map_location="cpu", weights_only=True)
    sc = torch.load(exp/"segbook"/"mr_2"/"scratch_s0"/"models"/"fold_0"/"last.pt", map_location="cpu", weights_only=True)
    assert ft["plan"]["train"]["pretrained"] == str(src.resolve()) and ft["plan"]["train"]["head_lr_mult"] == 10.0
    assert sc["plan"]["train"]["pretrained"] is None
    assert ft["plan"]["channels"][0]["modality"] == "mr" and ft["plan"]["train"]["epochs"] == sc["plan"]["train"]["epochs"] == 2
    train_ids = json.loads((exp/"segbook"/"mr_3"/"base"/"folds.json").read_text())["0"]
    assert len(train_ids["train"]) + len(train_ids["val"]) == 3 and len(train_ids["test"]) == 2
    # freezing study: Table 5 with every arm and region; frozen parts really did not move
    t5 = pd.read_csv(exp/"freezing"/"table5.csv", header=[0, 1], index_col=0)
    assert list(t5.index) == ["challenge 1 model, applied", "challenge 2 only"] + [f"fine-tuned, {p} frozen" for p in ("none", "encoder", "middle", "decoder")]
    assert {r for _, r in t5.columns} == {"ET", "TC", "WT"}
    pre = torch.load(exp/"freezing"/"c1"/"models"/"fold_0"/"best.pt", map_location="cpu", weights_only=True)["model"]
    dec = torch.load(exp/"freezing"/"c2"/"ft_decoder_s0"/"models"/"fold_0"/"last.pt", map_location="cpu", weights_only=True)["model"]
    ks = [k for k in pre if k.startswith("decoder.") and pre[k].is_floating_point()]
    assert ks and all(torch.equal(pre[k], dec[k]) for k in ks)
    assert (exp/"freezing"/"c2"/"c1_direct"/"predictions").is_dir()
    assert json.loads((exp/"freezing"/"c2_data"/"dataset.json").read_text())["phantom"]["quality"] == "low"
    # the report: figures inline, the summary recorded
    nb = json.loads(out.read_text())
    pngs = ["".join(c["source"]) for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert any("gain.png" in s for s in pngs) and any("table5.png" in s for s in pngs) and sum("overlay(" in s for s in pngs) == 2
    text = lambda t: "".join(t) if isinstance(t, list) else t
    last = "".join(text(o.get("data", {}).get("text/plain", "")) for o in nb["cells"][-1]["outputs"])
    assert "gain_mr_2" in last and "lesion_dice_fine-tuned_decoder_frozen" in last
