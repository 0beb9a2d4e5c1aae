"""Prompts for the SKIM teacher (a large chat LLM) and the compact prompt of the distilled student (a small LM).

Structure follows appendix E.1 of Prakash et al. (arXiv 2408.09585); the wording is our own.

Two styles (a dataset folder's config picks one):

``url-queries``
    Web pages, ad keywords, products. The teacher sees the document's id / URL / short title, a few of its
    known relevant train queries (possibly none) and its metadata text (capped at ~750 tokens, i.e. about
    560 words), and writes up to ``n_queries`` targeted, diverse search queries that the text answers, one per
    line under :data:`QUERIES_HEADER`.
``wiki-categories``
    Wikipedia-like title -> category labels. The teacher sees a title and its article text (~1,000 tokens,
    about 750 words) and lists immediate categories, each followed by its parent categories indented by two
    spaces with a leading ``-``, under :data:`CATEGORIES_HEADER`.

:func:`teacher_messages` returns OpenAI chat messages: one system message with the instruction, worked
examples as user / assistant turns, and the real input last as a user message.

The student is trained and run with :func:`student_prompt` (document, known queries, capped metadata, then
the output header on its own line) and learns to answer with :func:`student_target` (one query per line,
then :data:`END_MARKER`). After distillation the task lives in the weights, so the prompt carries no
instruction. :func:`skim_assets.lib.parsing.parse_generated_queries` reads both teacher and student outputs.

Everything here is deterministic: the same inputs give the same text (the teacher response cache keys on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PROMPT_STYLES = ("url-queries", "wiki-categories")

QUERIES_HEADER = "Queries:"
CATEGORIES_HEADER = "Categories:"
END_MARKER = "<end>"

#: Metadata caps in words for the teacher (~750 tokens / ~1,000 tokens at ~0.75 words per token).
DEFAULT_METADATA_WORDS = {"url-queries": 560, "wiki-categories": 750}
#: Known queries shown to the teacher / student: the first few, after cleaning.
MAX_KNOWN_QUERIES = 3  # a document's known queries shown in its prompts: the paper shows a few
#: Titles are short identifiers; a pathological one is cut to this many words.
MAX_TITLE_WORDS = 48


def check_style(style: str) -> str:
    """Return ``style`` if it is one of :data:`PROMPT_STYLES`, else raise ``ValueError`` naming them."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {', '.join(PROMPT_STYLES)}")
    return style


def output_header(style: str) -> str:
    """The fixed line that precedes the answer in ``style``."""
    return QUERIES_HEADER if check_style(style) == "url-queries" else CATEGORIES_HEADER


def cap_words(text: str, max_words: int) -> str:
    """Whitespace-normalize ``text`` and keep its first ``max_words`` words (nothing is appended)."""
    if max_words <= 0:
        return ""
    return " ".join(str(text or "").split()[:max_words])


def clean_known_queries(known_queries: Iterable[str] | None, limit: int = MAX_KNOWN_QUERIES) -> list[str]:
    """Whitespace-normalized, non-empty, case-insensitively unique known queries, first ``limit`` in order."""
    out: list[str] = []
    seen: set[str] = set()
    for q in known_queries or ():
        text = " ".join(str(q).split())
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
        if len(out) >= limit:
            break
    return out


# --------------------------------------------------------------------------------------------------------------
# Teacher prompts
# --------------------------------------------------------------------------------------------------------------

_URL_SYSTEM = """\
You write search queries for a search engine's training data. You are given one document: its \
identifier (a URL, a product id or a short title), possibly a few search queries that already lead to it, and \
its metadata text.

Write up to {n} search queries that real users might type and that this document's metadata text answers.
Rules:
- Use only facts stated in the metadata text. Do not add outside knowledge or guess.
- Each query targets one specific fact, need or use from the text; together they cover different facts.
- Use words other than those in the identifier; do not just restate the URL or title.
- Do not repeat, rephrase or overlap the known queries; find what they miss.
- Keep queries short and natural (2 to 10 words), lower case, without numbering or quotes.
Answer with the line "{header}" followed by one query per line and nothing else."""

_WIKI_SYSTEM = """\
You label encyclopedia articles with categories. You are given an article title and its text, and possibly \
a few categories it already has.

List up to {n} immediate categories of the article and, under each, its parent categories.
Rules:
- Use only what the article text states. Do not add outside knowledge or guess.
- Categories must be relevant and as specific as the text allows, written like real encyclopedia \
category names (for example "Rivers of Chile", "1998 novels", "People from Ghent").
- Do not repeat the known categories.
- Put each immediate category on its own line; put each of its parent categories on the following lines, \
indented by two spaces and starting with "- ".
Answer with the line "{header}" followed by the list and nothing else."""

_URL_EXAMPLES = (
    {
        "title": "https://shop.example.com/p/KT-2291",
        "known_queries": ["cast iron skillet"],
        "metadata": (
            "Forgeline 26 cm cast iron skillet, pre-seasoned with flaxseed oil. Works on gas, electric, "
            "induction and campfire; oven safe to 260 C. Helper handle on the side for lifting. "
            "Hand wash only, dry and oil after use. Made in Portugal. Weight 2.4 kg."
        ),
        "queries": [
            "pan that works on induction and campfire",
            "pre-seasoned frying pan flaxseed oil",
            "oven safe skillet 260 c",
            "heavy skillet with helper handle",
            "how to clean a seasoned iron pan",
            "cookware made in portugal",
        ],
    },
    {
        "title": "www.gardenletters.org/winter/geraniums-indoors",
        "known_queries": [],
        "metadata": (
            "Keeping geraniums through the winter. Before the first frost, cut the stems back by a third and "
            "pot the plants up. Keep them in a bright, cool room around 10 C and water only when the soil is "
            "dry. Alternatively hang bare-root plants upside down in paper bags in a frost-free cellar. "
            "Replant outdoors in late May."
        ),
        "queries": [
            "overwintering pelargoniums indoors",
            "storing bare root plants in paper bags",
            "how much to prune geraniums before frost",
            "watering potted plants in a cool room",
            "when to replant geraniums outside",
        ],
    },
)

_WIKI_EXAMPLE = {
    "title": "Hallstatt",
    "known_queries": [],
    "metadata": (
        "Hallstatt is a village on the western shore of Lake Hallstatt in the Salzkammergut region of Upper "
        "Austria. Salt has been mined in the mountain above the village since prehistoric times, and the "
        "finds from its burial ground gave the Hallstatt culture its name. The village is part of the "
        "Hallstatt-Dachstein / Salzkammergut Cultural Landscape, a UNESCO World Heritage Site since 1997, and "
        "receives large numbers of tourists."
    ),
    "categories": [
        ("Villages in Upper Austria", ["Populated places in Upper Austria", "Villages in Austria"]),
        ("Salt mines in Austria", ["Mines in Austria", "Salt mining"]),
        ("World Heritage Sites in Austria", ["World Heritage Sites in Europe", "Tourist attractions in Austria"]),
        ("Salzkammergut", ["Regions of Upper Austria", "Lake regions of Austria"]),
    ],
}


def _bulleted(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _url_user(title: str, metadata: str, known: Sequence[str], n_queries: int) -> str:
    parts = [f"Document: {title}"]
    if known:
        parts.append("Known queries:\n" + _bulleted(known))
    parts.append(f"Metadata text:\n{metadata}")
    parts.append(f"Write up to {n_queries} new search queries.")
    return "\n\n".join(parts)


def _wiki_user(title: str, metadata: str, known: Sequence[str], n_queries: int) -> str:
    parts = [f"Title: {title}"]
    if known:
        parts.append("Known categories:\n" + _bulleted(known))
    parts.append(f"Article text:\n{metadata}")
    parts.append(f"List up to {n_queries} immediate categories with their parent categories.")
    return "\n\n".join(parts)


def _wiki_answer(categories: Sequence[tuple[str, Sequence[str]]]) -> str:
    lines = [CATEGORIES_HEADER]
    for name, parents in categories:
        lines.append(name)
        lines.extend(f"  - {parent}" for parent in parents)
    return "\n".join(lines)


def teacher_messages(
    title: str,
    metadata: str,
    known_queries: list[str],
    style: str,
    max_metadata_words: int | None = None,
    n_queries: int = 10,
) -> list[dict]:
    """OpenAI chat messages asking the teacher for queries (or categories) of one document.

    System instruction first, then worked examples (user input / assistant answer), then the real input as the
    last user message. The metadata is whitespace-normalized and capped at ``max_metadata_words`` words
    (default per style: :data:`DEFAULT_METADATA_WORDS`); the first :data:`MAX_KNOWN_QUERIES` known queries are
    shown, and the section is omitted when there are none.
    """
    check_style(style)
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    cap = DEFAULT_METADATA_WORDS[style] if max_metadata_words is None else max_metadata_words
    title_text = cap_words(title, MAX_TITLE_WORDS)
    meta_text = cap_words(metadata, cap)
    known = clean_known_queries(known_queries)

    if style == "url-queries":
        messages = [{"role": "system", "content": _URL_SYSTEM.format(n=n_queries, header=QUERIES_HEADER)}]
        for ex in _URL_EXAMPLES:
            messages.append({"role": "user", "content": _url_user(ex["title"], ex["metadata"], ex["known_queries"],
                                                                   n_queries)})
            messages.append({"role": "assistant", "content": "\n".join([QUERIES_HEADER, *ex["queries"]])})
        messages.append({"role": "user", "content": _url_user(title_text, meta_text, known, n_queries)})
    else:
        ex = _WIKI_EXAMPLE
        messages = [
            {"role": "system", "content": _WIKI_SYSTEM.format(n=n_queries, header=CATEGORIES_HEADER)},
            {"role": "user", "content": _wiki_user(ex["title"], ex["metadata"], ex["known_queries"], n_queries)},
            {"role": "assistant", "content": _wiki_answer(ex["categories"])},
            {"role": "user", "content": _wiki_user(title_text, meta_text, known, n_queries)},
        ]
    return messages


# --------------------------------------------------------------------------------------------------------------
# Student (distilled SLM) prompt and target
# --------------------------------------------------------------------------------------------------------------


def student_prompt(
    title: str,
    metadata: str,
    known_queries: list[str],
    style: str,
    max_metadata_words: int = 200,
) -> str:
    """The compact prompt the student is trained and run with; ends with the output header and a newline.

    ``url-queries``::

        Document: <title>
        Known queries: <q1> | <q2>          (only when there are known queries)
        Text: <metadata, capped>
        Queries:

    ``wiki-categories`` uses ``Title:``, ``Known categories:``, ``Text:`` and ``Categories:``.
    Every field is whitespace-normalized to one line, so the header is the only line equal to it.
    """
    check_style(style)
    known = clean_known_queries(known_queries)
    label, known_label = ("Document", "Known queries") if style == "url-queries" else ("Title", "Known categories")
    lines = [f"{label}: {cap_words(title, MAX_TITLE_WORDS)}"]
    if known:
        lines.append(f"{known_label}: " + " | ".join(known))
    lines.append(f"Text: {cap_words(metadata, max_metadata_words)}")
    lines.append(output_header(style))
    return "\n".join(lines) + "\n"


def student_target(queries: list[str]) -> str:
    """What the student should write after :func:`student_prompt`: one query per line, then :data:`END_MARKER`.

    Queries are whitespace-normalized; empty ones are dropped.
    """
    lines = [" ".join(str(q).split()) for q in queries]
    return "\n".join([*(line for line in lines if line), END_MARKER])
