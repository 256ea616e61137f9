"""``dvc plots show`` without a network: DVC's page loads vega, vega-lite and vega-embed from
a CDN, so offline its charts are blank. ``dvc plots show --html-template`` takes a page of our
own instead; this one carries the three libraries inline, bundled by the vl-convert-python
wheel from the package index (``vl_convert.javascript_bundle``), so ``dvc_plots/index.html``
fetches nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sgsr.fsutil import write_text

#: DVC's templates (and ours in .dvc/plots) are Vega-Lite v5 specifications.
VEGA_LITE = "5.21"
#: The page DVC writes when ``-o`` is not given.
OUT_DIR = "dvc_plots"

_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<script type="text/javascript">
%s
</script>
<style>body { font-family: sans-serif; } table { border-spacing: 15px; }</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def offline_page() -> str:
    """An HTML template for ``dvc plots show --html-template`` with vega, vega-lite and
    vega-embed inline (about 0.9 MB)."""
    # vl-convert (a bundled JS engine): only when a page is rendered
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    # inline script: a literal "</script" would end the tag early; DVC fills {placeholders}
    bundle = bundle.replace("</script", "<\\/script")
    if "{plot_divs}" in bundle or "{refresh_tag}" in bundle:
        raise RuntimeError("the vega bundle contains a DVC page placeholder; cannot inline it")
    return _PAGE % bundle


def network_scripts(html: str) -> list[str]:
    """The ``<script src=...>`` / ``<link href=...>`` tags of a page that load from http(s)."""
    return re.findall(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?https?://[^>]*>", html)


def show(
    pipeline: str | os.PathLike[str] = ".",
    out: str | os.PathLike[str] = OUT_DIR,
    targets: Sequence[str] = (),
) -> Path:
    """Run ``dvc plots show`` in `pipeline` with the offline page; returns the index.html.

    Raises RuntimeError (with DVC's message) when DVC fails, or when the page it wrote would
    still load a script from the network.
    """
    pipeline = Path(pipeline)
    with tempfile.TemporaryDirectory(prefix="sgsr-plots-") as tmp:
        template = Path(tmp) / "offline.html"
        write_text(template, offline_page())
        cmd = ["dvc", "plots", "show", "--html-template", str(template), "-o", str(out)]
        done = subprocess.run([*cmd, *targets], cwd=pipeline, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` in {pipeline} failed: {(done.stderr or done.stdout).strip()}"
        )
    index = pipeline / out / "index.html"
    bad = network_scripts(index.read_text(encoding="utf-8"))
    if bad:
        raise RuntimeError(f"{index} would still load from the network: {bad[:2]}")
    return index
