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
