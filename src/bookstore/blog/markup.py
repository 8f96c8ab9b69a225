"""Markdown to safe HTML: markdown-it renders (raw HTML off), nh3 sanitises what comes out."""

from __future__ import annotations

import html
import re
from typing import Final

import nh3
from markdown_it import MarkdownIt

# Raw HTML in Markdown is shown as text, never passed through: `<script>` in a body reads as `<script>`.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)

# Everything markdown-it emits for the syntax above, and nothing that can run or restyle the page.
ALLOWED_TAGS: Final = frozenset(
    {
        "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "img",
        "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: Final = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
    "code": {"class"},
}
# Relative URLs stay (they point into this site); of absolute ones only these schemes.
URL_SCHEMES: Final = frozenset({"http", "https", "mailto"})
_ALIGN = re.compile(r"text-align:(left|right|center)")
EXCERPT_CHARS: Final = 280


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    # Table cells carry alignment as a style: keep exactly that, drop any other style.
    if attribute == "style":
        return value if _ALIGN.fullmatch(value.replace(" ", "")) else None
    if tag == "code" and attribute == "class":
        return value if re.fullmatch(r"language-[A-Za-z0-9_+-]{1,40}", value) else None
    return value


def sanitise(fragment: str) -> str:
    """`fragment` with every tag, attribute and URL scheme outside the allow-lists removed."""
    return nh3.clean(
        fragment,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_attribute_filter,
        url_schemes=set(URL_SCHEMES),
        link_rel="nofollow noopener noreferrer",
        strip_comments=True,
    )


def render(markdown: str) -> str:
    """The safe HTML of a Markdown text: no script, no event handler, no javascript: (or data:) URL."""
    return sanitise(_MARKDOWN.render(markdown))


def plain_text(safe_html: str) -> str:
    """The text of rendered HTML, tags dropped and entities decoded, whitespace collapsed."""
    text = nh3.clean(safe_html, tags=set(), strip_comments=True)
    return " ".join(html.unescape(text).split())


def excerpt(safe_html: str, limit: int = EXCERPT_CHARS) -> str:
    """The first `limit` characters of the text, cut at a word boundary with an ellipsis when longer."""
    text = plain_text(safe_html)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(" ,.;:") + "\u2026"
