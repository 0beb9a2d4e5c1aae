"""Parse teacher / student generations into clean search queries (or category names).

LLM output is untrusted text: it is only split, matched with simple linear regexes and filtered; nothing is ever
evaluated, and only the first :data:`MAX_INPUT_CHARS` characters are read.

Steps of :func:`parse_generated_queries`:

1. Cut at the first stop token: :data:`~skim_assets.lib.prompts.END_MARKER` (``<end>``) or a chat end token
   (``<|im_end|>``, ``</s>``, ``<|eot_id|>``, ...). CRLF / CR become LF.
2. If the output header (``Queries:``, or ``Categories:`` for the wiki style; case-insensitive, possibly
   ``## Queries`` or ``**Queries:**``) occurs on a line, drop everything up to and including its LAST
   occurrence (text after the colon on that line is kept as an item). With no header, a first line that ends
   with ``:`` ("Here are some queries:") is dropped as a preamble.
3. Clean each line: markdown headers, bullets (``-`` ``*`` ``•`` ``+``), numbering (``1.`` ``1)`` ``(1)``
   ``Q1:`` ``Query 2:``), bold / italics / backticks, surrounding straight or curly quotes, trailing ``;`` ``,``
   ``.`` ``:``; whitespace is normalized. Blank lines are skipped silently.
4. Filter, counting each rejection by reason (see :data:`REJECT_REASONS`), in this order:
   ``empty`` (nothing left, or only punctuation), ``too_short`` (< ``min_chars``), ``too_long``
   (> ``max_chars`` characters or > ``max_words`` words), ``copies_title`` (same normalized text as the title,
   or, when the title has >= 2 words, the query contains the title or is contained in it, on word boundaries),
   ``copies_known_query`` (same normalized text as a known query, or >= 80% of the query's distinct tokens
   appear in one known query), ``duplicate`` (normalized text already accepted), ``over_limit`` (beyond
   ``max_queries`` accepted items). Normalized text: lower-cased, punctuation turned into spaces, whitespace
   collapsed; the first spelling is the one kept.

For ``style="wiki-categories"`` the answer is a two-level list: immediate categories, each followed by its parent
categories, marked by deeper indentation (or, when all lines share one indentation, by a leading ``-`` on the
parents only). The result is flat: immediate categories first, in order, then parents, in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from skim_assets.lib.prompts import CATEGORIES_HEADER, END_MARKER, QUERIES_HEADER, check_style
from skim_assets.lib.text import normalise

MAX_INPUT_CHARS = 20_000
KNOWN_QUERY_OVERLAP = 0.8
REJECT_REASONS = (
    "empty",
    "too_short",
    "too_long",
    "duplicate",
    "copies_title",
    "copies_known_query",
    "over_limit",
)
STOP_TOKENS = (
    END_MARKER,
    "<|im_end|>",
    "<|im_start|>",
    "</s>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|end|>",
    "<eos>",
    "<end_of_turn>",
)

_STOP_RE = re.compile("|".join(re.escape(t) for t in STOP_TOKENS), re.IGNORECASE)
_MD_HEADER_RE = re.compile(r"^#{1,6}\s*")
_BULLET_RE = re.compile(r"^(?:[-•·▪‣–—]\s*|[*+]\s+)")
_NUMBER_RE = re.compile(
    r"^(?:\(\d{1,3}\)|\d{1,3}\)|\d{1,3}\.(?=\s|$)|\d{1,3}\s+-\s|"
    r"(?:query|category)\s*#?\d{0,3}\s*[:.)]|q\s*#?\d{1,3}\s*[:.)])\s*",
    re.IGNORECASE,
)
_TRAILING_PUNCT = " \t;,.:"
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "„": "“", "”": "”"}


@dataclass
class ParseResult:
    """Clean queries in output order, and how many candidate lines were dropped for each reason."""

    queries: list[str]
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


def _header_pattern(header: str) -> re.Pattern[str]:
    word = re.escape(header.rstrip(":").strip())
    # "Queries:", "## Queries", "**Queries:**", "**Queries**: rest" ... the rest (after a colon) is group 1.
    return re.compile(rf"^[\s#*_]*{word}(?:[*_ \t]*:(.*))?[*_\s]*$", re.IGNORECASE)


def _cut_at_stop(text: str) -> str:
    match = _STOP_RE.search(text)
    return text[: match.start()] if match else text


def _answer_lines(text: str, header: str) -> list[str]:
    """The lines after the last header line (or after a preamble line ending with ':' when there is none)."""
    lines = text.split("\n")
    pattern = _header_pattern(header)
    last = None
    rest = ""
    for i, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            last, rest = i, (match.group(1) or "").strip(" \t*_")
    if last is not None:
        return ([rest] if rest else []) + lines[last + 1 :]
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    if len(nonblank) > 1 and lines[nonblank[0]].rstrip().rstrip("*_").endswith(":"):
        return lines[nonblank[0] + 1 :]
    return lines


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] in _QUOTE_PAIRS and text[-1] == _QUOTE_PAIRS[text[0]]:
        inner = text[1:-1]
        if text[0] not in inner and text[-1] not in inner:
            return inner.strip()
    return text


def clean_line(line: str) -> str:
    """One answer line without list / markdown decoration, quotes or trailing punctuation."""
    text = line.replace("**", "").replace("`", "").strip()
    for _ in range(4):  # "- 1. **x**", "### 2) x" ...: strip prefixes until stable
        before = text
        text = _MD_HEADER_RE.sub("", text)
        text = _BULLET_RE.sub("", text)
        text = _NUMBER_RE.sub("", text)
        text = text.strip().strip("*_").strip()
        if text == before:
            break
    for _ in range(4):  # '"x";' -> '"x"' -> 'x'
        before = text
        text = text.rstrip(_TRAILING_PUNCT)
        text = _strip_quotes(text).strip()
        if text == before:
            break
    return " ".join(text.split())


def _indent(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def _wiki_order(lines: Sequence[str]) -> list[str]:
    """Immediate categories first, then parents (deeper indentation, or a leading '-' among plain lines)."""
    items = [(line, _indent(line)) for line in lines if line.strip()]
    if not items:
        return []
    base = min(indent for _, indent in items)
    top = [line for line, indent in items if indent == base]
    dashed = {line for line in top if line.lstrip().startswith("-")}
    dash_marks_parent = 0 < len(dashed) < len(top)
    immediate, parents = [], []
    for line, indent in items:
        is_parent = indent > base or (dash_marks_parent and line in dashed)
        (parents if is_parent else immediate).append(line)
    return immediate + parents


def _token_overlap(tokens: set[str], other: set[str]) -> float:
    return len(tokens & other) / len(tokens) if tokens else 0.0


def parse_generated_queries(
    text: str,
    *,
    title: str = "",
    known_queries: Iterable[str] = (),
    max_queries: int = 10,
    min_chars: int = 3,
    max_chars: int = 120,
    max_words: int = 16,
    style: str = "url-queries",
) -> ParseResult:
    """Clean queries (or flat category names for ``style="wiki-categories"``) from one generation.

    See the module docstring for the exact rules. Never raises on odd text; ``None`` counts as empty output.
    """
    check_style(style)
    header = QUERIES_HEADER if style == "url-queries" else CATEGORIES_HEADER
    result = ParseResult(queries=[])
    raw = (text or "")[:MAX_INPUT_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    lines = _answer_lines(_cut_at_stop(raw), header)
    if style == "wiki-categories":
        lines = _wiki_order(lines)

    title_key = normalise(title or "")
    title_padded = f" {title_key} " if len(title_key.split()) >= 2 else None
    known_keys = [normalise(q) for q in known_queries or ()]
    known_keys = [k for k in known_keys if k]
    known_tokens = [set(k.split()) for k in known_keys]
    seen: set[str] = set()

    for line in lines:
        if not line.strip():
            continue
        query = clean_line(line)
        key = normalise(query)
        reason = None
        if not key:
            reason = "empty"
        elif len(query) < min_chars:
            reason = "too_short"
        elif len(query) > max_chars or len(query.split()) > max_words:
            reason = "too_long"
        elif key == title_key or (
            title_padded is not None and (title_padded in f" {key} " or f" {key} " in title_padded)
        ):
            reason = "copies_title"
        elif key in known_keys or any(
            _token_overlap(set(key.split()), tokens) >= KNOWN_QUERY_OVERLAP for tokens in known_tokens
        ):
            reason = "copies_known_query"
        elif key in seen:
            reason = "duplicate"
        elif len(result.queries) >= max_queries:
            reason = "over_limit"
        if reason is None:
            seen.add(key)
            result.queries.append(query)
        else:
            result.rejected[reason] += 1
    return result


def parse_rate(results: Sequence[ParseResult]) -> float:
    """Fraction of outputs that yielded at least one query (0.0 for no outputs)."""
    if not results:
        return 0.0
    return sum(1 for r in results if r.queries) / len(results)
