"""Checks of a report page that do not need a browser: Python's html.parser reads it, Pillow
decodes every image, and the numbers it shows are compared with metrics.json. The browser test
(tests/browser.py) reads the same facts from a real page and goes through the same checks."""

from __future__ import annotations

import base64
import io
import math
from html.parser import HTMLParser

from PIL import Image

ACTIVE_TAGS = {"script", "iframe", "object", "embed", "link", "base", "form", "frame", "applet"}


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.numbers: list[dict] = []
        self.text_parts: list[str] = []
        self._open_number: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "data-metric" in attrs:
            run = attrs.get("data-run")
            self._open_number = {"key": attrs["data-metric"], "run": None if run is None else int(run), "text": ""}
            self.numbers.append(self._open_number)

    def handle_endtag(self, tag):
        if tag in ("td", "span"):
            self._open_number = None

    def handle_data(self, data):
        self.text_parts.append(data)
        if self._open_number is not None:
            self._open_number["text"] += data


def decode_data_uri(src: str) -> dict:
    if not src.startswith("data:image/png;base64,"):
        return {"ok": False, "error": f"not an inlined PNG: {src[:40]!r}"}
    try:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as image:
            image.load()
            width, height = image.size
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": repr(exc)}
    return {"ok": width > 0 and height > 0, "width": width, "height": height}


def page_facts(html_text: str) -> dict:
    """The facts the browser test reads, read by html.parser and Pillow instead."""
    parser = PageParser()
    parser.feed(html_text)
    parser.close()
    tags = parser.tags
    return {
        "images": [decode_data_uri(a.get("src", "")) for t, a in tags if t == "img"],
        "numbers": parser.numbers,
        "scripts": sum(t == "script" for t, _ in tags),
        "svgs": sum(t == "svg" for t, _ in tags),
        "polylines": sum(t == "polyline" for t, _ in tags),
        "text": "".join(parser.text_parts),
        "tags": tags,
    }


def assert_self_contained(html_text: str) -> None:
    """No script, no handler attribute, nothing fetched: every src is a data: URI, no href
    leaves the page, and the Content-Security-Policy forbids scripts and the network."""
    facts = page_facts(html_text)
    csp = [a.get("content", "") for t, a in facts["tags"] if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0], csp
    for tag, attrs in facts["tags"]:
        assert tag not in ACTIVE_TAGS, f"<{tag}> in the page"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"<{tag} {name}=...> in the page"
            if name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
                assert (value or "").startswith(("data:", "#")), f"<{tag} {name}={value!r}> leaves the page"
    assert "http://" not in html_text.replace("http://www.w3.org", "") and "https://" not in html_text


def assert_images_decode(facts: dict, at_least: int = 1) -> None:
    assert len(facts["images"]) >= at_least, facts["images"]
    bad = [i for i in facts["images"] if not i.get("ok")]
    assert not bad, bad


def shown_value(text: str) -> float | int:
    text = text.strip()
    if text in ("nan", "inf", "-inf"):
        return float(text)
    if "." in text or "e" in text:
        return float(text)
    return int(text.replace(",", ""))


def assert_numbers_match(numbers: list[dict], metrics_by_run: list[dict]) -> int:
    """Every number shown equals metrics.json (to the 6 significant digits shown; integers
    exactly), and every number of metrics.json is shown. Returns how many were compared."""
    seen = set()
    for number in numbers:
        run = number["run"] or 0
        key, expected = number["key"], metrics_by_run[run].get(number["key"])
        assert isinstance(expected, (int, float)) and not isinstance(expected, bool), (number, expected)
        shown = shown_value(number["text"])
        if isinstance(expected, int):
            assert shown == expected, (number, expected)
        elif math.isfinite(expected):
            assert abs(shown - expected) <= 5e-6 * abs(expected) + 1e-300, (number, expected)
        else:
            assert str(shown) == str(expected), (number, expected)
        seen.add((run, key))
    for run, metrics in enumerate(metrics_by_run):
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert (run, key) in seen, f"run {run}: {key} = {value} is not shown"
    return len(numbers)
