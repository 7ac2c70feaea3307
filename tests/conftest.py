import os, sys, shutil
from pathlib import Path
import pytest

os.environ.setdefault("SEGCOOK_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def shared_data() -> Path | None:
    "The real scans in ../shared/data (or $SEGCOOK_SHARED_DATA), None when absent."
    p = Path(os.environ.get("SEGCOOK_SHARED_DATA", REPO.parent/"shared"/"data"))
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def shared():
    p = shared_data()
    if p is None:
        pytest.skip("SKIPPED: real scans not found at ../shared/data (set SEGCOOK_SHARED_DATA to run this test)")
    return p


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    "A small BraTS-like phantom dataset shared by tests that only read it."
    from segcook.data import make_phantom
    return make_phantom(tmp_path_factory.mktemp("phantom"), cases=4, size=(40, 40, 32), seed=3, test_cases=1)


@pytest.fixture
def phantom_copy(phantom, tmp_path):
    "A private copy of the phantom that a test may break."
    dst = tmp_path/"ds"
    shutil.copytree(phantom.parent, dst)
    return dst/"dataset.json"


def segcook_cmd(*args):
    return [str(BIN/"segcook"), *map(str, args)]
