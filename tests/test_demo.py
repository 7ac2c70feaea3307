"`segcook demo --quick`: every stage through the command line, on a fresh phantom, end to end."
import os, subprocess
import pandas as pd
from conftest import segcook_cmd


def test_demo_quick_runs_every_stage(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    r = subprocess.run(segcook_cmd("demo", "--quick", "--out", tmp_path), capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ran = [l.split()[2] for l in r.stdout.splitlines() if l.startswith("[demo] segcook ")]
    assert ran == ["phantom", "check", "analyze", "preprocess", "train", "predict", "evaluate", "postprocess",
                   "predict", "postprocess", "evaluate"]
    exp = tmp_path/"exp"
    assert (exp/"models"/"fold_0"/"best.pt").exists() and (exp/"postprocess"/"strategy.json").exists()
    res = pd.read_csv(exp/"results_test.csv")
    assert list(res["id"][:2]) == ["brats_test_000", "brats_test_001"] and "Mean" in set(res["id"])
    assert res.filter(like="_dice").iloc[:2].apply(lambda c: c.between(0, 1)).all().all()
