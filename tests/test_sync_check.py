"`.ci/run`'s sync check fails when notebooks and the generated library disagree, or a notebook is not clean."
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import REPO

BIN = Path(sys.executable).parent


@pytest.fixture
def clone(tmp_path):
    if not (REPO/".git").exists(): pytest.skip("SKIPPED: not a git checkout")
    dst = tmp_path/"repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(dst)], check=True)
    # bring the working tree's current notebooks and modules, so the test checks what is being tested
    for sub in ("nbs", "segcook", "tools"):
        shutil.rmtree(dst/sub); shutil.copytree(REPO/sub, dst/sub, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _check(repo):
    return subprocess.run(["bash", "tools/sync_check.sh"], cwd=repo, capture_output=True, text=True, env={"NBDEV_BIN": str(BIN), "PATH": "/usr/bin:/bin"})


def test_in_sync_passes(clone):
    r = _check(clone)
    assert r.returncode == 0, r.stderr


def test_library_edited_by_hand_fails(clone):
    f = clone/"segcook"/"core.py"
    f.write_text(f.read_text() + "\nHAND_EDIT = 1\n")
    r = _check(clone)
    assert r.returncode == 1 and "segcook/core.py" in r.stderr


def test_unclean_notebook_fails(clone):
    f = clone/"nbs"/"00_core.ipynb"
    nb = json.loads(f.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["execution_count"] = 7
    f.write_text(json.dumps(nb, indent=1))
    r = _check(clone)
    assert r.returncode == 1 and "nbs/00_core.ipynb" in r.stderr
