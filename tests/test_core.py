"Core helpers that every stage relies on."
import os, stat, subprocess, sys
from pathlib import Path


def test_atomic_writes_follow_the_umask(tmp_path):
    "Files segcook writes get the permissions of the process's umask (0664 under 002), not mkstemp's 0600."
    code = ("import os, sys; os.umask(0o002); from segcook.core import write_json, write_text; "
            "write_json(sys.argv[1] + '/a.json', {'x': 1}); write_text(sys.argv[1] + '/b.txt', 'y')")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for n in ("a.json", "b.txt"):
        assert stat.S_IMODE((tmp_path/n).stat().st_mode) == 0o664, n
    assert not list(tmp_path.glob(".*.tmp*"))                                  # no temporary file left behind
