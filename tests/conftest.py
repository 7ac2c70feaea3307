import os, sys, shutil
from pathlib import Path
import pytest

os.environ.setdefault("SEGCOOK_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


DATA = REPO/"tests"/"data"            # what a fresh clone has: crops of the pyradiomics scans, the golden BraTS cases
MNI_FILES = [f"mni_icbm152_{t}_tal_nlin_sym_09a_converted.nii.gz" for t in ("t1", "gm", "wm")]
# parts of ../shared/data that tests/data does not hold: a test needing them skips with this reason, every other skip
# of a test that uses the `shared` fixture is turned into a failure when tests/data is there (pytest_runtest_makereport)
NOT_IN_TESTDATA = {"stunet": "the STU-Net reference state dicts and outputs are 7 MB (tests/data keeps under 3 MB)"}


def no_shared() -> bool:
    "True when $SEGCOOK_NO_SHARED is set (not 0): ignore ../shared/data and $SEGCOOK_SHARED_DATA, as on a fresh clone."
    return os.environ.get("SEGCOOK_NO_SHARED", "0") not in ("", "0")


def shared_data() -> Path | None:
    "The full real scans in ../shared/data (or $SEGCOOK_SHARED_DATA), None when absent or when $SEGCOOK_NO_SHARED=1."
    if no_shared(): return None
    p = Path(os.environ.get("SEGCOOK_SHARED_DATA", REPO.parent/"shared"/"data"))
    return p if p.is_dir() else None


def nilearn_mni() -> Path | None:
    "The MNI152 2009a folder shipped in nilearn's wheel (nilearn/datasets/data), None without nilearn."
    import importlib.util
    spec = importlib.util.find_spec("nilearn")
    d = Path(spec.origin).parent/"datasets"/"data" if spec and spec.origin else None
    return d if d is not None and all((d/f).is_file() for f in MNI_FILES) else None


def fresh_clone_data(root:Path) -> Path:
    "A folder laid out like ../shared/data from what a fresh clone has: links to tests/data/* and nilearn's MNI152."
    mni = nilearn_mni()
    if mni is None: pytest.fail("tests/data is here but nilearn's MNI152 template is not: `make install` (nilearn is in the dev extra)")
    root.mkdir(parents=True, exist_ok=True)
    for d in sorted(DATA.iterdir()):
        if d.is_dir(): (root/d.name).symlink_to(d, target_is_directory=True)
    (root/"mni152").symlink_to(mni, target_is_directory=True)
    return root


def shared_part(shared:Path, name:str) -> Path:
    "Folder `name` of the test data; a loud skip when it is one that tests/data does not hold (NOT_IN_TESTDATA)."
    d = shared/name
    if not d.is_dir():
        pytest.skip(f"SKIPPED: {name} not found at {d}: {NOT_IN_TESTDATA.get(name, 'unknown data')}; "
                    "it is in ../shared/data (or set SEGCOOK_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    "The real scans: ../shared/data (or $SEGCOOK_SHARED_DATA) when present, else tests/data's crops and nilearn's MNI152."
    p = shared_data()
    if p is not None: return p
    if DATA.is_dir(): return fresh_clone_data(tmp_path_factory.mktemp("testdata")/"data")
    pytest.skip("SKIPPED: real scans not found at ../shared/data nor tests/data (set SEGCOOK_SHARED_DATA to run this test)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    "A test using real data may skip only for data that tests/data lacks by design (NOT_IN_TESTDATA): else it fails."
    rep = (yield).get_result()
    if rep.skipped and "shared" in getattr(item, "fixturenames", ()) and DATA.is_dir():
        reason = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if not any(f": {why};" in reason for why in NOT_IN_TESTDATA.values()):
            rep.outcome, rep.longrepr = "failed", f"skipped for lack of data although tests/data is here: {reason}"


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
