"""Words of a text, the one normal form in which texts are compared, and the function words that say nothing.

A query is compared to another (duplicates, set agreement, the parser's echo filter) in its normal form: lower
case, words only (letters and digits; punctuation and underscores split words), one space between them.
"""

from __future__ import annotations

import re

import polars as pl

# Function words of queries and of the prompt scaffolding: a query made only of these says nothing.
STOP_WORDS = frozenset(
    """a an the of to in on for and or is are was were be been being it its this that these those with by from as
    at what which who whom how why when where does do did done can could should would will shall may might must
    about into over under than then there their they them you your i me my we our he she his her him if so such
    any some more most other very also just only use used using get gets make made not no yes all each per via
    has have had""".split()
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NOT_WORD = r"[\W_]+"


def words(text: str) -> list[str]:
    """The lower-cased words of `text`, in order."""
    return _WORD.findall((text or "").lower())


def normalise(text: str) -> str:
    """`text` in normal form: its words, lower case, one space apart."""
    return " ".join(words(text))


def normalised(column: pl.Expr) -> pl.Expr:
    """`normalise` of every text in a polars column."""
    return column.str.to_lowercase().str.replace_all(_NOT_WORD, " ").str.strip_chars()
