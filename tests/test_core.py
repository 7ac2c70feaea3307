"Core helpers that every stage relies on."
import os, stat, subprocess, sys
from pathlib import Path
import pytest


def test_atomic_writes_follow_the_umask(tmp_path):
    "Files segcook writes get the permissions of the process's umask (0664 under 002), not mkstemp's 0600."
    code = ("import os, sys; os.umask(0o002); from segcook.core import write_json, write_text; "
            "write_json(sys.argv[1] + '/a.json', {'x': 1}); write_text(sys.argv[1] + '/b.txt', 'y')")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for n in ("a.json", "b.txt"):
        assert stat.S_IMODE((tmp_path/n).stat().st_mode) == 0o664, n
    assert not list(tmp_path.glob(".*.tmp*"))                                  # no temporary file left behind

def test_progress_in_a_log_writes_lines_not_redraws():
    "stderr to a file (a log): one line per 10% and the last, no carriage returns (a bar would redraw ~every 0.1 s)."
    import subprocess, sys, os
    code = "import time\nfrom segcook.core import progress\nfor _ in progress(range(40), 'steps'): time.sleep(0.02)\n"
    env = {**os.environ, "SEGCOOK_QUIET": "0"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("steps:")]
    assert len(lines) == 10 and lines[0].startswith("steps: 4/40 (10%)") and lines[-1].endswith("done")


def test_plugin_variable_is_named_once():
    "The registry reads the plugin list through `PLUGIN_ENV`: the variable's name is spelled in one place (issue 16)."
    import segcook.core as core
    src = Path(core.__file__).read_text()
    assert src.count('"SEGCOOK_PLUGINS"') == 1, "spell the variable as PLUGIN_ENV"


def test_validator_accepts_exactly_the_optimisers_and_schedules_train_builds():
    "Every name `validate_plan` accepts builds in training, and every other name is refused by both (issue 16)."
    import dataclasses, torch
    from segcook.core import Plan, OPTIMIZERS, SCHEDULES, validate_plan, SegcookError
    from segcook.train import make_optimizer, lr_factor
    ps = [torch.nn.Parameter(torch.zeros(2))]
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    for name in ["adam", "adamw", "sgd", "rmsprop", "Adam"]:
        plan = Plan()
        plan.train = dataclasses.replace(plan.train, optimizer=name)
        ok = not [m for m in validate_plan(plan) if m.startswith("train.optimizer")]
        assert ok == (name in OPTIMIZERS) == (name in kinds), name
        if ok: assert type(make_optimizer(ps, plan.train)) is kinds[name]
        else:
            with pytest.raises(SegcookError, match="train.optimizer"): make_optimizer(ps, plan.train)
    assert make_optimizer(ps, dataclasses.replace(Plan().train, optimizer="sgd")).defaults["nesterov"]
    want = {"constant": 1.0, "cosine": 0.5, "poly": 0.5 ** 0.9}                       # by hand, at half the run
    for name in ["constant", "cosine", "poly", "step", "linear"]:
        t = dataclasses.replace(Plan().train, scheduler=name, epochs=10, warmup_epochs=0)
        plan = Plan(); plan.train = t
        ok = not [m for m in validate_plan(plan) if m.startswith("train.scheduler")]
        assert ok == (name in SCHEDULES) == (name in want), name
        if ok: assert lr_factor(5, t) == pytest.approx(want[name])
        else:
            with pytest.raises(SegcookError, match="train.scheduler"): lr_factor(5, t)
