#!/usr/bin/env bash
# RESULTS.md §10: OOF threshold search on a phantom experiment, two training budgets (CPU, ~4 min on 2 cores).
# bash benchmarks/thresholds.sh [/tmp/thr_bench]
set -euo pipefail
export OMP_NUM_THREADS=1 SEGCOOK_QUIET=1
B=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin
R=${1:-/tmp/thr_bench}
$B/segcook phantom --out $R/data --cases 8 --test-cases 2 --size 48 48 40 --seed 0
$B/segcook analyze --data $R/data/dataset.json --exp $R/exp --nfolds 2
$B/segcook preprocess --exp $R/exp
mkdir -p $R/exp_weak && cp -r $R/exp/config.json $R/exp/cases.csv $R/exp/folds.json $R/exp/preprocessed $R/exp_weak/
$B/segcook train --exp $R/exp --folds 0 1 --epochs 4 --steps-per-epoch 10        # "exp": 40 steps per fold
$B/segcook train --exp $R/exp_weak --folds 0 1 --epochs 2 --steps-per-epoch 5    # "exp_weak": 10 steps per fold
for e in exp exp_weak; do
  $B/segcook predict --exp $R/$e --oof --fast --probs npz
  for m in lesion_dice dice; do
    $B/segcook postprocess --select-thresholds --exp $R/$e --name oof --metric $m --workers 1 --out $R/$e/thr_$m
  done
  $B/segcook postprocess --select-thresholds --exp $R/$e --name oof --grid --workers 1 --out $R/$e/thr_grid
  for t in default chosen; do   # the 2 held-out test cases, plan thresholds vs the chosen (lesion_dice) ones
    $B/segcook predict --exp $R/$e --input $R/data/dataset.json --out $R/$e/test_$t --fast \
      $([ $t = chosen ] && echo --thresholds $R/$e/thr_lesion_dice/strategy.json)
  done
done
$B/python - "$R" <<'PY'
import sys, pandas as pd
from pathlib import Path
from segcook.core import read_image, to_xyz
from segcook.metrics import brats_lesionwise
R = Path(sys.argv[1])
for e in ["exp", "exp_weak"]:
    cols = {}
    for t in ["default", "chosen"]:
        s = []
        for p in sorted((R/e/f"test_{t}").glob("brats_test_*.nii.gz")):
            g = read_image(next((R/"data"/"test"/p.name.split(".")[0]).glob("*_seg.nii.gz")))
            s.append(brats_lesionwise(to_xyz(g), to_xyz(read_image(p)), g.GetSpacing()).set_index("Labels")["LesionWise_Score_Dice"])
        cols[t] = pd.concat(s, axis=1).mean(axis=1)
    df = pd.DataFrame(cols); df.loc["mean"] = df.mean(); df["gain"] = df["chosen"] - df["default"]
    print(f"{e}: test lesion-wise Dice\n{df.round(4).to_string()}")
PY
