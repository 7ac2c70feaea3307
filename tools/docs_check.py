#!/usr/bin/env python
"""The documentation checks CI runs (`make docs-check`), on a copy of the tracked tree:

1. `nbdev-proc-nbs` (the half of `nbdev-docs` that needs no Quarto) exits 0, prints no warning or error, and
   processes every notebook in nbs/ into _proc/;
2. the committed outputs are not stale: every chapter is re-executed (`tools/exec_nbs.py`, which skips what
   `nbdev-test` skips) and each cell's outputs must match the committed ones: same kinds, same text once
   volatile bits (temp folders, memory addresses, timings) are masked, same number of images (PNG bytes are not
   compared). On a mismatch: `make docs` and commit.
"""
import os, re, sys, json, time, shutil, difflib, argparse, subprocess, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from exec_nbs import scrub

# nbdev-proc-nbs prints these when Quarto is absent (it tries `sudo` to install it; our shim refuses): expected.
QUARTO_MISSING = {"Quarto is not installed. We will download and install it for you.",
                  "Installing or upgrading quarto -- this requires root access.",
                  "Cancelled. Please download and install Quarto from quarto.org."}
_NUM = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_TIMES = [(re.compile(rf"{_NUM}\s*(ms|s|sec|seconds|min|it/s|s/it)\b"), r"<t> \1"),
          (re.compile(rf"(['\"]?\w*(?:_ms|_s|seconds|_time)['\"]?\s*[:=]\s*){_NUM}"), r"\1<t>")]

def mask(text:str) -> str:
    "`text` with temp folders, memory addresses and timings masked."
    text = scrub(text)
    for pat, rep in _TIMES: text = pat.sub(rep, text)
    return text

def _out_sig(o:dict) -> tuple:
    "What is compared of one output."
    t = o["output_type"]
    if t == "stream": return (t, o.get("name"), mask("".join(o.get("text", ""))))
    if t == "error": return (t, o.get("ename"), mask(o.get("evalue", "")))
    d = o.get("data", {})
    txt = next(("".join(d[k]) for k in ("text/html", "text/markdown", "text/plain") if k in d), "")
    return (t, tuple(sorted(d)), mask(txt) if not any(k.startswith("image/") for k in d) else "<image>")

def signature(fn) -> dict:
    "`{cell id: [output signatures]}` of the code cells of notebook `fn`."
    nb = json.loads(Path(fn).read_text())
    return {c.get("id", str(i)): [_out_sig(o) for o in c.get("outputs", [])]
            for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"}

def _copy_tree(root:Path, dst:Path):
    "The tracked files of `root` (as they are in the working tree) copied to `dst`."
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = root/f.decode()
        if src.is_file(): (dst/f.decode()).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst/f.decode())

def check_proc(tree:Path, bin_dir:Path) -> list[str]:
    "Problems found running `nbdev-proc-nbs` in `tree`."
    shim = tree/".shim"; shim.mkdir()
    (shim/"sudo").write_text("#!/bin/sh\nexit 1\n"); (shim/"sudo").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    t0 = time.time()
    r = subprocess.run([str(bin_dir/"nbdev-proc-nbs"), "--n-workers", "2"], cwd=tree, env=env, capture_output=True, text=True)
    print(f"nbdev-proc-nbs: exit {r.returncode} in {time.time() - t0:.0f} s")
    bad = [l for l in (r.stdout + r.stderr).splitlines() if l.strip() and l.strip() not in QUARTO_MISSING]
    probs = [f"nbdev-proc-nbs exited {r.returncode}"] if r.returncode else []
    if bad: probs.append("nbdev-proc-nbs printed:\n    " + "\n    ".join(bad))
    missing = [p.name for p in sorted((tree/"nbs").glob("*.ipynb")) if not (tree/"_proc"/p.name).exists()]
    if missing: probs.append(f"not processed into _proc/: {missing}")
    return probs

def check_stale(tree:Path, bin_dir:Path) -> list[str]:
    "Cells of the notebooks in `tree` whose committed outputs differ from a fresh execution."
    nbs = sorted((tree/"nbs").glob("*.ipynb"))
    before = {p.name: signature(p) for p in nbs}
    t0 = time.time()
    r = subprocess.run([str(bin_dir/"python"), "tools/exec_nbs.py"], cwd=tree, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "", f"(re-execution: {time.time() - t0:.0f} s)")
    if r.returncode: return [f"re-executing the notebooks failed:\n{r.stdout}\n{r.stderr}"]
    probs = []
    for p in nbs:
        after, src = signature(p), {c.get("id"): "".join(c["source"]).splitlines()[:1] for c in json.loads(p.read_text())["cells"]}
        for cid in list(after) + [c for c in before[p.name] if c not in after]:
            old, new = before[p.name].get(cid, []), after.get(cid, [])
            if old != new:
                d = "\n".join(difflib.unified_diff([repr(s) for s in old], [repr(s) for s in new], "committed", "fresh", lineterm="", n=0))
                probs.append(f"{p.name}, cell {cid} {src.get(cid, [''])[:1]}: outputs are stale\n{d}")
    return probs

def main(argv=None) -> int:
    a = argparse.ArgumentParser(description="nbdev-proc-nbs + stale-output checks")
    a.add_argument("--no-proc", action="store_true"); a.add_argument("--no-stale", action="store_true")
    a = a.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    bin_dir = Path(os.environ.get("NBDEV_BIN", root/".venv"/"bin"))
    with tempfile.TemporaryDirectory(prefix="docs-check-") as tmp:
        tree = Path(tmp)/"tree"; _copy_tree(root, tree)
        probs = ([] if a.no_proc else check_proc(tree, bin_dir)) + ([] if a.no_stale else check_stale(tree, bin_dir))
    for p in probs: print("FAIL:", p, file=sys.stderr)
    if probs: print("docs-check: fix the above (stale outputs: `make docs`, then commit the notebooks)", file=sys.stderr); return 1
    print("docs-check: nbdev-proc-nbs clean, committed outputs up to date")
    return 0

if __name__ == "__main__": sys.exit(main())
