#!/usr/bin/env python
"""An offline preview of the documentation site, without Quarto (`make docs-preview`).

Runs `nbdev-proc-nbs` (what `nbdev-docs` does before Quarto renders), then converts each processed notebook in
`_proc/` to static HTML with nbconvert into `_docs_preview/`: one page per chapter, a navigation bar linking every
chapter on every page, `index.html` = the home page (nbs/index.ipynb). Figures are embedded in the pages.
Open `_docs_preview/index.html` in a browser.
"""
import os, re, sys, json, html, shutil, argparse, subprocess, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def proc_nbs(bin_dir:Path):
    "Run `nbdev-proc-nbs` in the repository (writes `_proc/`); a `sudo` shim keeps nbdev from fetching Quarto."
    with tempfile.TemporaryDirectory() as shim:
        Path(shim, "sudo").write_text("#!/bin/sh\nexit 1\n"); Path(shim, "sudo").chmod(0o755)
        env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
        subprocess.run([str(bin_dir/"nbdev-proc-nbs"), "--n-workers", "2"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)

def frontmatter(nb:dict) -> dict:
    "title / description / output-file from the raw frontmatter cell nbdev writes first."
    c = next((c for c in nb["cells"] if c["cell_type"] == "raw"), None)
    if c is None: return {}
    import yaml
    src = "".join(c["source"]).strip()
    return (yaml.safe_load(src.strip("-")) or {}) if src.startswith("---") else {}

_CELL_KEYS = {"code": {"cell_type", "id", "metadata", "source", "outputs", "execution_count"},
              "markdown": {"cell_type", "id", "metadata", "source", "attachments"}}
_DIRECTIVE = re.compile(r"^\s*#\|.*\n?", re.M)

def prepare(nb:dict) -> dict:
    "The notebook as the site shows it: no frontmatter cell, no `#|` lines, inputs hidden where `echo: false`."
    cells = []
    for c in nb["cells"]:
        if c["cell_type"] == "raw": continue
        c = {k: v for k, v in c.items() if k in _CELL_KEYS[c["cell_type"]]}   # nbdev adds keys of its own (`has_sd`)
        src = "".join(c["source"])
        c.get("metadata", {}).pop("execution", None)                            # execnb's timings (not nbformat's schema)
        if c["cell_type"] == "code":
            tags = c.setdefault("metadata", {}).setdefault("tags", [])
            if re.search(r"^\s*#\|\s*echo:\s*false", src, re.M) or not _DIRECTIVE.sub("", src).strip(): tags.append("no_input")
            c["source"] = _DIRECTIVE.sub("", src)
        cells.append(c)
    nb["cells"] = cells
    return nb

CSS = """<style>
nav.segcook { position: sticky; top: 0; z-index: 10; background: #1f3b57; padding: .5em 1em; font: 14px sans-serif; }
nav.segcook a { color: #fff; margin-right: 1em; text-decoration: none; white-space: nowrap; }
nav.segcook a.here { font-weight: bold; text-decoration: underline; }
header.segcook { max-width: 1100px; margin: 1.5em auto 0 auto; padding: 0 1em; font-family: sans-serif; }
header.segcook p { font-style: italic; opacity: .75; font-size: 1.2em; }
</style>"""

def page_html(body:str, title:str, desc:str, nav:str) -> str:
    "nbconvert's page with the navigation bar and the chapter's title inserted, and Quarto-only markup removed."
    body = re.sub(r'\{target="_blank"[^}]*\}', "", body)                        # Quarto link attributes in show_doc
    body = re.sub(r'href="https://segcook\.github\.io/segcook/([\w.-]+\.html)', r'href="\1', body)  # site links -> local
    body = re.sub(r'href="([\w.-]+)\.ipynb', r'href="\1.html', body)
    head = f'{nav}<header class="segcook"><h1>{html.escape(title)}</h1><p>{html.escape(desc)}</p></header>'
    body = re.sub(r"<title>.*?</title>", f"<title>segcook - {html.escape(title)}</title>", body, count=1, flags=re.S)
    body = body.replace("</head>", CSS + "</head>", 1)
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + head, body, count=1)

def build(out:Path, proc:Path) -> list[Path]:
    "Write the preview of every notebook in `proc` into `out`; the pages written."
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    import nbformat
    cfg = Config(); cfg.TagRemovePreprocessor.remove_input_tags = {"no_input"}
    cfg.TagRemovePreprocessor.enabled = True
    ex = HTMLExporter(config=cfg, template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True)
    nbs = sorted(proc.glob("*.ipynb"), key=lambda p: (p.name != "index.ipynb", p.name))
    metas = {p: frontmatter(json.loads(p.read_text())) for p in nbs}
    names = {p: "index.html" if p.stem == "index" else metas[p].get("output-file", p.stem + ".html") for p in nbs}
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    pages = []
    for p in nbs:
        nav = '<nav class="segcook">' + "".join(
            f'<a href="{names[q]}"{" class=here" if q == p else ""}>{html.escape("Home" if q.stem == "index" else metas[q].get("title", q.stem).replace("`", ""))}</a>'
            for q in nbs) + "</nav>"
        nb = nbformat.reads(json.dumps(prepare(json.loads(p.read_text()))), as_version=4)
        body, _ = ex.from_notebook_node(nb)
        m = metas[p]
        (out/names[p]).write_text(page_html(body, m.get("title", p.stem), m.get("description", ""), nav))
        pages.append(out/names[p])
    return pages

def main(argv=None) -> int:
    a = argparse.ArgumentParser(description="static HTML preview of the docs, without Quarto")
    a.add_argument("--out", default=str(ROOT/"_docs_preview"))
    a.add_argument("--no-proc", action="store_true", help="reuse _proc/ as it is")
    a = a.parse_args(argv)
    bin_dir = Path(os.environ.get("NBDEV_BIN", Path(sys.executable).parent))
    if not a.no_proc: proc_nbs(bin_dir)
    pages = build(Path(a.out), ROOT/"_proc")
    print(f"docs preview: {len(pages)} pages in {a.out}; open {Path(a.out)/'index.html'}")
    return 0

if __name__ == "__main__": sys.exit(main())
