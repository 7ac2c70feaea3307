#!/usr/bin/env python
"""Execute notebooks in place, as `nbdev-test` runs them, and keep their outputs.

Cells flagged with a `tst_flags` flag (`gpu slow multigpu`) and `#| eval: false` cells are skipped, exactly as
`nbdev-test` skips them (this calls nbdev's own `test_nb`, with `save=True`). A notebook that fails is left unchanged
and makes the command exit 1. Then `nbdev-clean` on the executed notebooks. Usage:

    python tools/exec_nbs.py [NOTEBOOK ...]      # default: every nbs/*.ipynb
"""
import os, re, sys, json, time, argparse, subprocess, tempfile
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

_TMP = re.compile(re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^/\s'\"]+")
_ADDR = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")

def scrub(text:str) -> str:
    "`text` without what changes from run to run and machine to machine: temp folders, memory addresses."
    return _ADDR.sub("0x...", _TMP.sub("<tmp>", text))

def _scrub_outputs(fn:str):
    "Scrub the text outputs of notebook `fn` in place."
    nb = json.loads(Path(fn).read_text())
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if "text" in o: o["text"] = scrub("".join(o["text"]))
            for k, v in o.get("data", {}).items():
                if k.startswith("text/"): o["data"][k] = scrub("".join(v))
    Path(fn).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")

def _one(fn:str) -> bool:
    "Execute `fn` in place in this process (IPython takes over `__main__`: one notebook per process)."
    os.environ.setdefault("OMP_NUM_THREADS", "1"); os.environ.setdefault("SEGCOOK_QUIET", "1")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    from nbdev.config import get_config
    from nbdev.test import test_nb
    flags = get_config().get("tst_flags", "").split()
    ok, _ = test_nb(str(Path(fn).resolve()), skip_flags=flags, save=True, do_print=False)
    if ok: _scrub_outputs(fn)
    return ok

def _run(fn:str) -> tuple[str, bool, float, str]:
    "Execute `fn` in a fresh interpreter; (name, ok, seconds, stderr)."
    t0 = time.time()
    r = subprocess.run([sys.executable, __file__, "--one", fn], capture_output=True, text=True)
    return fn, r.returncode == 0, time.time() - t0, r.stdout + r.stderr

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nbs", nargs="*", help="notebooks (default: nbs/*.ipynb)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one: return 0 if _one(a.one) else 1
    nbs = a.nbs or sorted(str(f) for f in Path("nbs").glob("*.ipynb"))
    t0, failed = time.time(), []
    with ThreadPoolExecutor(a.workers) as ex:
        for fn, ok, secs, err in ex.map(_run, nbs):
            print(f"{'ok  ' if ok else 'FAIL'} {fn} ({secs:.1f} s)", flush=True)
            if not ok: failed.append(fn); print(err, file=sys.stderr)
    from nbdev.clean import nbdev_clean  # also turns the scrubbed strings back into nbformat's line lists
    for fn in nbs: nbdev_clean.__wrapped__(fname=fn)
    print(f"executed {len(nbs) - len(failed)}/{len(nbs)} notebooks in {time.time() - t0:.0f} s")
    return 1 if failed else 0

if __name__ == "__main__": sys.exit(main())
