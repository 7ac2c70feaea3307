"Plugins: an architecture registered in the user's own module works in every process (issue 16, 'models that survive processes')."
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from segcook.core import SegcookError, ARCHS, register_arch, load_plan, save_plan, override
from segcook.train import toy_experiment, train, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
PLUGIN = '''
import os
from pathlib import Path
from segcook.core import ARCHS, register_arch

@register_arch("plugin_unet")
def plugin_unet(*args, **kwargs):
    "The built-in unet under a user's name; each process that builds it leaves its pid behind."
    Path(os.environ["PLUGIN_LOG"], f"{os.getpid()}.built").write_text("")
    return ARCHS["unet"](*args, **kwargs)
'''


@pytest.fixture
def setup(tmp_path):
    mod = tmp_path/"plugins"; mod.mkdir()
    (mod/"my_plugin_nets.py").write_text(PLUGIN)
    logs = tmp_path/"built"; logs.mkdir()
    exp = toy_experiment(tmp_path/"exp", cases=8, size=(24, 24, 16), patch=(16, 16, 16), nfolds=2, val_fraction=0.5,
                         epochs=1, steps_per_epoch=1, batch_size=2, arch_kwargs={"base": 4})
    env = {**os.environ, "PYTHONPATH": f"{mod}{os.pathsep}{REPO}", "PLUGIN_LOG": str(logs), "OMP_NUM_THREADS": "1", "SEGCOOK_QUIET": "1"}
    env.pop("SEGCOOK_PLUGINS", None)
    return exp, env, logs


def _segcook(args, env):
    return subprocess.run([str(Path(sys.executable).parent/"segcook"), *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_plugin_arch_trains_in_two_ddp_workers(setup):
    exp, env, logs = setup
    r = _segcook(["train", "--exp", str(exp), "--folds", "0", "--procs", "2", "--plugin", "my_plugin_nets", "--arch", "plugin_unet"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_checkpoint(exp/"models"/"fold_0"/"last.pt")["run"]["world_size"] == 2
    assert len(list(logs.glob("*.built"))) >= 2                        # built in both worker processes, not only the parent
    # without the plugin, the same command names the problem and the fix
    r = _segcook(["train", "--exp", str(exp), "--folds", "1", "--arch", "plugin_unet"], env)
    assert r.returncode != 0 and "unknown arch 'plugin_unet'" in r.stderr and "--plugin MODULE" in r.stderr, r.stderr[-2000:]


def test_plan_plugins_are_imported_by_every_command(setup):
    exp, env, logs = setup
    save_plan(override(load_plan(exp), **{"plugins": ["my_plugin_nets"], "train.arch": "plugin_unet"}), exp/"config.json")
    r = _segcook(["train", "--exp", str(exp), "--folds", "0"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list(logs.glob("*.built"))
    r = _segcook(["--plugin", "no_such_module_here", "archs"], env)
    assert r.returncode == 2 and "plugin 'no_such_module_here' could not be imported" in r.stderr


def test_notebook_defined_arch_is_refused_before_workers_start(setup):
    exp, env, logs = setup
    def main_net(*a, **k): return ARCHS["unet"](*a, **k)
    main_net.__module__ = "__main__"                                  # as a notebook cell defines it
    register_arch("main_defined_net")(main_net)
    with pytest.raises(SegcookError, match="is defined in __main__ .* move it into a module"):
        train(exp, folds=[0], procs=2, arch="main_defined_net")
    assert not (exp/"models"/"fold_0"/"last.pt").exists()
