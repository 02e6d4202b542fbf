"""A static website of the executed notebooks: every figure and printed result, readable without running anything.

    python -m ssl3d.site [--profile smoke|full] [--out site/] [--check]
    ./reproduce.sh --html [DIR]      # runs the notebooks that runs/<profile>/ lacks, then builds DIR (site/)

- Input: the executed notebooks ``runs/<profile>/NN_*.ipynb`` that ``./reproduce.sh`` writes, one for each
  notebook in ``notebooks/``; a missing one is an error that says to run ``./reproduce.sh`` first.
- Output: one page per notebook (nbconvert's ``HTMLExporter`` with the stock ``lab`` template; figures are
  embedded as data URIs, so every page is a single self-contained file) with a previous / contents / next bar,
  and ``index.html``, a table of contents listing each notebook's title (its first ``#`` heading) and its ``##``
  sections with links to their anchors. Formulas are typeset by MathJax, which nbconvert loads from a CDN:
  offline they show as TeX source, everything else is unaffected.
- The site is built in a temporary folder next to ``--out`` and moved into place only when complete; an existing
  ``--out`` is replaced only if it is a site built here (it holds the marker file ``.ssl3d-site``).
- ``--check`` then opens every page in headless Chromium (Debian's ``chromium``; ``lib/env/install_browser.sh``
  installs it) and fails unless each page loads, each image decodes, the page shows as many images as the
  notebook has image outputs, and neither the page nor any figure is blank in a screenshot. The browser is driven
  through the Chrome DevTools Protocol with ``websocket-client`` (already in the pinned stack): no browser
  download, no driver binary.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Page", "MissingRunsError", "executed_notebooks", "build_site", "find_chromium", "Chromium",
           "check_page", "check_site", "main"]

MARKER = ".ssl3d-site"
IMAGE_MIMES = ("image/png", "image/jpeg")

# The stock "lab" template plus a navigation bar at the top and bottom of each page and a few lines of CSS.
_PAGE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block extra_css %}<style>{{ resources.ssl3d_css }}</style>{% endblock extra_css %}
{%- block body_header -%}{{ super() }}{{ resources.ssl3d_nav }}{%- endblock body_header -%}
{% block body_footer %}{{ resources.ssl3d_nav }}{{ super() }}{% endblock body_footer %}
"""
_CSS = """
nav.ssl3d-nav { display: flex; justify-content: space-between; gap: 1em; margin: 0.5em 0 1em; padding: 0.5em 0.8em;
  border: 1px solid #ddd; border-radius: 4px; background: #f7f7f9; font-family: system-ui, sans-serif; }
nav.ssl3d-nav a { text-decoration: none; color: #1a5fb4; } nav.ssl3d-nav span { color: #999; }
main.ssl3d-index { max-width: 60em; margin: 2em auto; padding: 0 1em; font-family: system-ui, sans-serif;
  line-height: 1.5; }
main.ssl3d-index ol > li { margin-top: 0.8em; font-weight: 600; } main.ssl3d-index ul { font-weight: normal; }
main.ssl3d-index a { color: #1a5fb4; text-decoration: none; } main.ssl3d-index a:hover { text-decoration: underline; }
"""
_HEADING = re.compile(r'<h([12]) id="([^"]+)">(.*?)<a class="anchor-link"', re.S)
_TAG = re.compile(r"<[^>]+>")


class MissingRunsError(FileNotFoundError):
    """Some notebooks have no executed copy in ``runs/<profile>/``: run ``./reproduce.sh`` first."""


@dataclass
class Page:
    """One notebook's page: where it is, its title, its ``##`` sections (text, anchor id), its image outputs."""

    stem: str
    file: str
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)
    n_images: int = 0


def executed_notebooks(profile: str = "smoke", runs_dir: Path | None = None,
                       stems: list[str] | None = None) -> list[Path]:
    """The executed copies ``runs/<profile>/<stem>.ipynb`` of every notebook, in order.

    ``stems`` defaults to the notebooks in ``notebooks/``; a missing executed copy raises
    :class:`MissingRunsError` naming the notebooks and the command that produces them.
    """
    from ssl3d.utils import list_notebooks, repo_root

    root = repo_root()
    runs = Path(runs_dir) if runs_dir is not None else root / "runs" / profile
    stems = stems if stems is not None else [p.stem for p in list_notebooks(root)]
    if not stems:
        raise MissingRunsError(f"site: no notebooks/NN_*.ipynb under {root}: nothing to build")
    missing = [s for s in stems if not (runs / f"{s}.ipynb").is_file()]
    if missing:
        cmd = "./reproduce.sh" + ("" if profile == "smoke" else f" --profile {profile}")
        raise MissingRunsError(
            f"site: {runs} lacks the executed notebook(s) {', '.join(missing)}. Run `{cmd}` first (it writes "
            f"them there), or `{cmd} --html`, which runs the missing ones and then builds the site.")
    return [runs / f"{s}.ipynb" for s in stems]


def _title(nb, default: str) -> str:
    """The first ``# `` heading of the notebook's markdown cells (markdown markup left as typed)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return default


def _count_images(nb) -> int:
    return sum(any(m in out.get("data", {}) for m in IMAGE_MIMES)
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def _nav(pages: list[Page], i: int) -> str:
    def link(j, arrow_left):
        if not 0 <= j < len(pages):
            return "<span></span>"
        t = html.escape(pages[j].title)
        return f'<a href="{pages[j].file}">{"← " + t if arrow_left else t + " →"}</a>'

    return (f'<nav class="ssl3d-nav">{link(i - 1, True)}<a href="index.html">Contents</a>'
            f"{link(i + 1, False)}</nav>")


def _index(pages: list[Page], heading: str, note: str) -> str:
    items = []
    for p in pages:
        secs = "".join(f'<li><a href="{p.file}#{sid}">{html.escape(text)}</a></li>' for text, sid in p.sections)
        items.append(f'<li><a href="{p.file}">{html.escape(p.title)}</a>' + (f"<ul>{secs}</ul>" if secs else "")
                     + "</li>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
            f"<title>{html.escape(heading)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f'<main class="ssl3d-index">\n<h1>{html.escape(heading)}</h1>\n<p>{note}</p>\n'
            f'<ol class="toc">\n' + "\n".join(items) + "\n</ol>\n</main>\n</body>\n</html>\n")


def _replaceable(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise FileExistsError(f"site: refusing to replace {out}: it is not a site built by ssl3d.site (no {MARKER} "
                              "marker inside). Choose a new or empty folder with --out, or remove it yourself.")


def build_site(notebooks: list[Path], out: Path | str = "site", *, heading: str = "ssl3d — executed notebooks",
               note: str | None = None, source_dir: Path | None = None) -> list[Page]:
    """Render executed ``notebooks`` into a static site at ``out`` (one page each + ``index.html``).

    ``source_dir`` (default ``notebooks/``): the folder markdown images are relative to. Images inside it, and
    cell attachments, are embedded; nbconvert refuses paths outside it (``../figures/x.png``), which stay links
    that :func:`check_site` reports as broken images. Returns the pages, in order. ``out`` is replaced only once
    the new site is complete.
    """
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    from ssl3d.utils import repo_root

    out = Path(out).resolve()
    _replaceable(out)
    if not notebooks:
        raise ValueError("site: no notebooks to build a site from")
    source_dir = Path(source_dir) if source_dir is not None else repo_root() / "notebooks"
    nbs = [nbformat.read(p, as_version=4) for p in notebooks]
    pages = [Page(p.stem, f"{p.stem}.html", _title(nb, p.stem), n_images=_count_images(nb))
             for p, nb in zip(notebooks, nbs)]
    exporter = HTMLExporter(template_name="lab", embed_images=True, template_file="ssl3d_page.html.j2",
                            extra_loaders=[DictLoader({"ssl3d_page.html.j2": _PAGE_TEMPLATE})])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a site is meant to be read
    old = out.with_name(f".{out.name}.old-{os.getpid()}.partial")
    try:
        for i, (page, nb) in enumerate(zip(pages, nbs)):
            resources = {"metadata": {"name": page.title, "path": str(source_dir)},
                         "ssl3d_nav": _nav(pages, i), "ssl3d_css": _CSS}
            body, _ = exporter.from_notebook_node(nb, resources=resources)
            page.sections = [(html.unescape(_TAG.sub("", text)).strip(), sid)
                             for level, sid, text in _HEADING.findall(body) if level == "2"]
            (tmp / page.file).write_text(body, encoding="utf-8")
        if note is None:
            note = (f"{len(pages)} notebooks as executed by <code>./reproduce.sh</code> "
                    f"(<code>runs/{html.escape(Path(notebooks[0]).parent.name)}/</code>), with every figure and "
                    f"printed result in place — {sum(p.n_images for p in pages)} figures in all.")
        (tmp / "index.html").write_text(_index(pages, heading, note), encoding="utf-8")
        (tmp / MARKER).write_text("built by python -m ssl3d.site; safe to delete\n")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if old.exists() and not out.exists():  # put the previous site back
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return pages


# --------------------------------------------------------------------------------------------- headless browser

def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: $SSL3D_CHROMIUM, else chromium, chromium-browser or google-chrome on PATH."""
    env = os.environ.get("SSL3D_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium driven over the Chrome DevTools Protocol (one tab): navigate, evaluate, screenshot.

    Hosts other than this machine are mapped to "not found", so pages load the same, and fast, with or without a network
    (nbconvert's pages reference require.js and MathJax on a CDN). Use as a context manager.
    """

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 900, timeout: float = 60.0):
        try:
            import websocket  # websocket-client, in the pinned stack (a dependency of jupyter_server)
        except ImportError as exc:
            raise ImportError("site: the browser check needs websocket-client (pip install websocket-client==1.9.2, "
                              "pinned in lib/env/requirements-cpu.txt)") from exc

        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("site: no Chromium found (looked for $SSL3D_CHROMIUM, chromium, chromium-browser, "
                                    "google-chrome). Install it with `bash lib/env/install_browser.sh` (Debian's "
                                    "chromium; run as root) or point SSL3D_CHROMIUM at a Chrome binary.")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="ssl3d-chromium-")
        args = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--window-size={width},{height}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                "--remote-debugging-port=0", f"--user-data-dir={self._profile}", "about:blank"]
        self._log = open(Path(self._profile) / "stderr.log", "wb")  # closed in close()
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)
        self._id, self._events = 0, []
        try:
            port = self._wait_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                targets = json.load(r)
            url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
            self._ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True,
                                                   enable_multithread=False)
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _wait_port(self) -> int:
        active = Path(self._profile) / "DevToolsActivePort"
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout:
            if self._proc.poll() is not None:
                raise RuntimeError(f"site: {self.binary} exited with code {self._proc.returncode} at start-up:\n"
                                   + self._stderr_tail())
            lines = active.read_text().splitlines() if active.is_file() else []
            if len(lines) >= 2:
                return int(lines[0])
            time.sleep(0.05)
        raise TimeoutError(f"site: {self.binary} did not open its DevTools port in {self.timeout:.0f}s:\n"
                           + self._stderr_tail())

    def _stderr_tail(self) -> str:
        self._log.flush()
        return (Path(self._profile) / "stderr.log").read_text(errors="replace")[-2000:]

    def call(self, method: str, **params):
        """Send one DevTools command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"site: Chromium rejected {method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def _wait_event(self, name: str):
        t0 = time.monotonic()
        while True:
            for i, ev in enumerate(self._events):
                if ev["method"] == name:
                    return self._events.pop(i)
            if time.monotonic() - t0 > self.timeout:
                raise TimeoutError(f"site: no {name} within {self.timeout:.0f}s")
            msg = json.loads(self._ws.recv())
            if "method" in msg:
                self._events.append(msg)

    def goto(self, url: str) -> None:
        """Navigate and wait for the load event (all images fetched); raises if the page could not be opened."""
        self._events.clear()
        res = self.call("Page.navigate", url=url)
        if res.get("errorText"):
            raise RuntimeError(f"site: Chromium could not open {url}: {res['errorText']}")
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """Evaluate JavaScript in the page (promises awaited) and return its JSON value."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise RuntimeError(f"site: JavaScript error: {d.get('exception', {}).get('description', d.get('text'))}")
        return res["result"].get("value")

    def screenshot(self, scale: float = 1.0, fmt: str = "png", max_height: int = 16000) -> tuple[bytes, float]:
        """The whole page as ``fmt`` (png or jpeg) at ``scale``, at most ``max_height`` pixels high: (bytes, scale)."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        w, h = max(1, int(size["width"])), max(1, int(size["height"]))
        scale = min(scale, max_height / h)
        res = self.call("Page.captureScreenshot", format=fmt, captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": w, "height": h, "scale": scale})
        return base64.b64decode(res["data"]), scale

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Wait for every image to finish loading (or failing), then report what the page shows.
_PAGE_JS = """(async (fragments) => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })));
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const top = window.scrollY;
  const rects = imgs.map(i => {
    const b = i.getBoundingClientRect();
    return [b.left, b.top + top, b.width, b.height];
  });
  const missing = fragments.filter(f => { location.hash = f; return !document.querySelector(':target'); });
  history.replaceState(null, '', location.pathname);
  window.scrollTo(0, 0);
  return {title: document.title, images: imgs.length, rects,
          broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 100)),
          missing_anchors: missing};
})"""


def check_page(browser: Chromium, path: Path | str, fragments: list[str] | tuple[str, ...] = (), *,
               min_std: float = 8.0,
               min_figure_std: float = 2.0) -> dict:
    """Open one page and report: images, broken images, missing anchors, screenshot spread, blank figures.

    ``fragments``: anchor ids that must exist on the page (checked with ``:target``). The result's ``problems`` is a
    list of human-readable failures (empty when the page renders fine).
    """
    import numpy as np
    from PIL import Image

    path = Path(path).resolve()
    browser.goto(path.as_uri())
    info = browser.evaluate(f"{_PAGE_JS}({json.dumps(['#' + f for f in fragments])})")
    shot, scale = browser.screenshot(scale=0.5, fmt="jpeg")  # 4x fewer pixels, no PNG encoding: 4x faster
    gray = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float32)
    info["screenshot_std"] = float(gray.std())
    info["screenshot_size"] = gray.shape[::-1]
    blank = []
    for k, (x, y, w, h) in enumerate(info["rects"]):
        crop = gray[int(y * scale):int((y + h) * scale), int(x * scale):int((x + w) * scale)]
        if crop.size == 0 or crop.std() < min_figure_std:
            blank.append(k)
    info["blank_figures"] = blank
    problems = []
    if info["broken"]:
        problems.append(f"{len(info['broken'])} broken image(s): {info['broken'][:3]}")
    if info["missing_anchors"]:
        problems.append(f"anchors not found: {info['missing_anchors']}")
    if info["screenshot_std"] < min_std:
        problems.append(f"the screenshot is blank (pixel std {info['screenshot_std']:.1f} < {min_std})")
    if blank:
        problems.append(f"figure(s) {blank} are blank in the screenshot")
    info["problems"] = problems
    return info


def check_site(out: Path | str, pages: list[Page], browser: Chromium | None = None) -> dict[str, dict]:
    """Open ``index.html`` and every page in headless Chromium; per file, :func:`check_page`'s report.

    Besides the per-page checks, a page must show exactly as many images as its notebook has image outputs, and
    the index must link every page.
    """
    out = Path(out)
    own = browser is None
    browser = browser or Chromium()
    try:
        reports = {}
        idx = check_page(browser, out / "index.html", min_std=1.0)
        links = browser.evaluate("[...document.links].map(a => a.getAttribute('href'))")
        unlinked = [p.file for p in pages if p.file not in links]
        if unlinked:
            idx["problems"].append(f"index.html does not link {unlinked}")
        reports["index.html"] = idx
        for p in pages:
            rep = check_page(browser, out / p.file, [sid for _, sid in p.sections])
            if rep["images"] != p.n_images:
                rep["problems"].append(f"shows {rep['images']} image(s); the notebook has {p.n_images} image outputs")
            reports[p.file] = rep
        return reports
    finally:
        if own:
            browser.close()


# ------------------------------------------------------------------------------------------------------- the CLI

def main(argv: list[str] | None = None) -> int:
    from ssl3d.utils import repo_root

    ap = argparse.ArgumentParser(prog="python -m ssl3d.site", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=["smoke", "full"], default="smoke", help="which runs/<profile>/ to build")
    ap.add_argument("--out", default=None, help="output folder (default: <repo>/site)")
    ap.add_argument("--check", action="store_true", help="then open every page in headless Chromium and check it")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else repo_root() / "site"
    try:
        nbs = executed_notebooks(args.profile)
        stale = [p.stem for p in nbs if (repo_root() / "notebooks" / p.name).stat().st_mtime > p.stat().st_mtime]
        if stale:
            print(f"site: note — {', '.join(stale)} changed since it was executed; `./reproduce.sh --only "
                  f"{' '.join(stale)}` refreshes it", file=sys.stderr)
        t0 = time.perf_counter()
        pages = build_site(nbs, out)
    except (MissingRunsError, FileExistsError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"site: {len(pages)} pages, {sum(p.n_images for p in pages)} figures → {out / 'index.html'} "
          f"({time.perf_counter() - t0:.1f} s)")
    if args.check:
        try:
            reports = check_site(out, pages)
        except FileNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 1
        bad = {f: r["problems"] for f, r in reports.items() if r["problems"]}
        for f, r in reports.items():
            print(f"  {'FAIL' if r['problems'] else 'ok  '} {f:<34} {r['images']:3d} images  "
                  f"{'; '.join(r['problems'])}")
        if bad:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
