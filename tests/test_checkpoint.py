"Checkpoints live in one chapter that training and inference both import; neither imports the other for them (issue 16)."
import ast, os, subprocess, sys
from pathlib import Path
import pytest
import segcook

PKG = Path(segcook.__file__).parent


def _imports(mod:str, top_only:bool) -> set[str]:
    "segcook modules `segcook.<mod>` imports (module level only, or anywhere)."
    tree = ast.parse((PKG/f"{mod}.py").read_text())
    nodes = tree.body if top_only else list(ast.walk(tree))
    out = set()
    for n in nodes:
        if isinstance(n, ast.ImportFrom) and n.module: out.add(n.module if n.level == 0 else "segcook." + n.module)
        elif isinstance(n, ast.Import): out |= {a.name for a in n.names}
    return out


def test_no_import_cycle_between_train_and_inference():
    "inference never imports train (not even inside a function); train does not import inference at module level."
    assert "segcook.train" not in _imports("inference", top_only=False)
    assert "segcook.inference" not in _imports("train", top_only=True)
    assert "segcook.checkpoint" in _imports("inference", True) and "segcook.checkpoint" in _imports("train", True)
    assert not {"segcook.train", "segcook.inference"} & _imports("checkpoint", top_only=False)


_LOAD = """
import sys, torch
from pathlib import Path
from segcook.core import Plan
from segcook.nets import build_net
from segcook.checkpoint import save_checkpoint
from segcook.inference import load_models
plan = Plan(); plan.spatial.patch_size, plan.spatial.target_spacing = [16, 16, 16], [1., 1., 1.]
plan.train.arch_kwargs = {"base": 4}
net = build_net(plan); opt = torch.optim.SGD(net.parameters(), lr=0.1)
exp = Path(sys.argv[1])
save_checkpoint(exp/"models"/"fold_0"/"best.pt", net, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0),
                torch.amp.GradScaler("cuda", enabled=False), plan, 1, 0.5, 0, [], [], {})
nets, folds, plans = load_models(exp)
assert folds == [0] and plans[0].spatial.patch_size == [16, 16, 16]
print("train imported:", "segcook.train" in sys.modules)
"""


@pytest.mark.slow
def test_loading_models_for_inference_leaves_train_out(tmp_path):
    "Predicting loads checkpoints without importing the training module (in a fresh process)."
    r = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train imported: False" in r.stdout


def test_train_still_offers_the_checkpoint_functions():
    "`from segcook.train import load_model, load_checkpoint, save_checkpoint` keeps working (the same objects)."
    import segcook.train as t, segcook.checkpoint as c
    assert (t.load_model, t.load_checkpoint, t.save_checkpoint) == (c.load_model, c.load_checkpoint, c.save_checkpoint)
