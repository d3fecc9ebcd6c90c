"""The HTML building blocks of palm's pages: the page template, embedded images (base64
`data:` URIs, so a page can be mailed or opened offline), tables and notes."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from string import Template
from typing import Any

import cv2
import numpy as np

TEMPLATE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1150px; padding: 0 16px 40px;
       color: #222; }
h1 { border-bottom: 3px solid #c0392b; padding-bottom: 6px; }
h2 { margin-top: 36px; border-bottom: 1px solid #ccc; }
/* nothing scrolls sideways: long names, paths and JSON wrap anywhere, wide tables squeeze */
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: left; overflow-wrap: anywhere; }
p, code, figcaption { overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; }
.wide table { table-layout: fixed; width: 100%; }
.summary { font-size: 17px; font-weight: 600; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.figs > * { min-width: 0; max-width: 100%; }
.figs figure { margin: 0; }
.figs img { max-width: min(540px, 100%); border: 1px solid #eee; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(260px, 100%), 1fr));
           gap: 12px; }
.case { border: 1px solid #ddd; border-radius: 6px; padding: 6px; font-size: 13px; }
.case img { width: 124px; }
.case.error { border-color: #c0392b; }
.note { color: #777; font-style: italic; }
.caption { color: #555; font-size: 13px; }
.warn { background: #fdecea; border-left: 4px solid #c0392b; padding: 6px 10px; }
.figs h3 { margin-top: 0; }
figcaption { font-size: 13px; color: #555; }
</style>
</head>
<body>
<h1>$title</h1>
<p>Generated $generated from <code>$run_dir</code>$eval_note.</p>
$sections
</body>
</html>
""")


def data_uri(data: bytes, mime: str) -> str:
    """`data` as a base64 `data:` URI of type `mime`."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_data_uri(path: Path) -> str:
    """A PNG or JPEG file as a `data:` URI."""
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}[path.suffix.lower()]
    return data_uri(path.read_bytes(), mime)


def rgb_data_uri(rgb: np.ndarray, quality: int = 88) -> str:
    """A uint8 RGB array as an embedded JPEG (photos; far smaller than PNG)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data_uri(buf.tobytes(), "image/jpeg")


def figure(uri: str, alt: str, caption: str | None = None) -> str:
    """An embedded image with its caption."""
    tag = f'<img src="{uri}" alt="{html.escape(alt)}">'
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{tag}{cap}</figure>"


def table(rows: list[tuple[str, Any]], header: tuple[str, str] | None = None) -> str:
    """A two-column table of (name, value) rows, numbers right-aligned."""
    head = f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>" if header else ""
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td{_num_class(v)}>{html.escape(fmt(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table>{head}{body}</table>"


def _num_class(v: Any) -> str:
    return ' class="num"' if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else ""


def fmt(v: Any) -> str:
    """A value as the report shows it: 4 decimals, JSON for lists and dicts, a dash for null."""
    if v is None:  # unset config values; metrics.json stores undefined metrics (NaN) as null
        return "\u2014"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def note(text: str) -> str:
    """Something the report could not show (a missing file, a redrawn plot)."""
    return f'<p class="note">{html.escape(text)}</p>'


def caption(text: str) -> str:
    """How the figures above were obtained."""
    return f'<p class="caption">{html.escape(text)}</p>'


def flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict -> (dotted key, value) rows."""
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def interval_text(ci: Any) -> str:
    """A [low, high] interval as "(low-high)", a dash when it is missing."""
    if not isinstance(ci, list) or len(ci) != 2 or None in ci:
        return "\u2014"
    return f"({ci[0]:.3f}\u2013{ci[1]:.3f})"
