#!/usr/bin/env python
"""Split long exported cells of the chapters so each can be read beside its lesson.

An `#| export` cell that holds several top-level definitions becomes one cell per definition (its decorators and
the comment lines right above it go with it); consecutive top-level statements that are not definitions (constants,
registrations, `__all__`) stay together in their own cell. The code and its order are unchanged, so `nbdev-export`
writes the same statements; only the cell boundaries move. Cells with other directives than `export`/`exports`
are left alone. Idempotent. Usage:

    python tools/split_cells.py [NOTEBOOK ...]     # default: every nbs/*.ipynb; then nbdev-export and nbdev-clean
    python tools/split_cells.py --stats            # the median and the longest exported cells, nothing written
"""
import ast, sys, json, argparse, statistics
from pathlib import Path

EXPORT = ("#| export", "#|export", "#| exports", "#|exports")

def is_export(src:str) -> bool:
    "Is this code cell's first directive an export, and are all its directives exports?"
    dirs = [l.strip() for l in src.splitlines() if l.startswith("#|")]
    return bool(dirs) and all(d in EXPORT for d in dirs)

def code_lines(src:str) -> int:
    "Non-blank lines of a cell, directives left out: the measure of its length."
    return sum(1 for l in src.splitlines() if l.strip() and not l.startswith("#|"))

def pieces(src:str) -> list[str]:
    "The bodies of the cells an exported cell splits into (one element: nothing to split)."
    lines = src.splitlines()
    head = [l for l in lines if l.startswith("#|")]
    body = [l for l in lines if not l.startswith("#|")]
    tree = ast.parse("\n".join(body))
    starts = []   # (first line index, is a definition)
    shows = lambda n: isinstance(n, ast.Expr) and not isinstance(n.value, ast.Constant)   # a bare expression: its value is shown
    for node in tree.body:
        s = (node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno) - 1
        while s > 0 and body[s - 1].lstrip().startswith("#"): s -= 1   # comments above belong to what follows
        starts.append((s, isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))))
    if not starts: return [src]
    cuts = [0]
    for k in range(1, len(starts)):
        if shows(tree.body[k - 1]): continue      # a group must not end in a bare expression (its value would show)
        if starts[k][1] or starts[k - 1][1]: cuts.append(starts[k][0])   # a definition starts or ends a group
    cuts.append(len(body))
    groups = ["\n".join(body[a:b]).strip("\n") for a, b in zip(cuts[:-1], cuts[1:])]
    groups = [g for g in groups if g.strip()]
    if len(groups) < 2: return [src]
    return ["\n".join(head) + "\n" + g for g in groups]

def split_notebook(fn) -> int:
    "Split the exported cells of notebook `fn` in place; the number of cells added."
    fn = Path(fn)
    nb = json.loads(fn.read_text())
    out, added = [], 0
    for c in nb["cells"]:
        src = "".join(c["source"])
        parts = pieces(src) if c["cell_type"] == "code" and is_export(src) else [src]
        if len(parts) == 1:
            out.append(c); continue
        for k, p in enumerate(parts):
            new = {"cell_type": "code", "execution_count": None, "metadata": dict(c.get("metadata", {})),
                   "outputs": c.get("outputs", []) if k == len(parts) - 1 else [], "source": p}
            if "id" in c: new["id"] = c["id"] if k == 0 else f"{c['id'][:8]}-{k}"
            out.append(new)
        added += len(parts) - 1
    if added:
        nb["cells"] = out
        fn.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return added

def exported_lengths(fns) -> list[tuple[int, str]]:
    "(length, notebook) of every exported cell of the notebooks `fns`."
    res = []
    for fn in fns:
        for c in json.loads(Path(fn).read_text())["cells"]:
            src = "".join(c["source"])
            if c["cell_type"] == "code" and is_export(src): res.append((code_lines(src), Path(fn).name))
    return res

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*")
    ap.add_argument("--stats", action="store_true", help="print the median and the longest exported cells, write nothing")
    a = ap.parse_args(argv)
    fns = a.notebooks or sorted(str(p) for p in Path("nbs").glob("*.ipynb"))
    if not a.stats:
        for fn in fns:
            n = split_notebook(fn)
            if n: print(f"{fn}: {n} cell(s) added")
    ls = exported_lengths(fns)
    print(f"{len(ls)} exported cells, median {statistics.median([n for n, _ in ls]) if ls else 0} lines, "
          f"{sum(n > 40 for n, _ in ls)} over 40; longest: {sorted(ls, reverse=True)[:5]}")

if __name__ == "__main__": main()
