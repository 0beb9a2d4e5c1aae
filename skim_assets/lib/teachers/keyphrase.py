"""`KeyphraseTeacher`: the offline, deterministic teacher (KeyBERT-style keyphrases of the metadata picked with
MMR, or YAKE-style statistics without an encoder), with its tokenisation and candidate scoring."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skim_assets.lib.prompts import QUERIES_HEADER, output_header  # the output headers shared with the prompts
from skim_assets.lib.text import STOP_WORDS

from .protocol import ProgressFn, Teacher, TeacherRequest, TeacherResponse, _Progress, estimate_tokens

# Words a key phrase never ends on (or starts with, but for a leading preposition): the function words of
# `lib.text` and the pronouns, adverbs and quantifiers a document's prose adds.
STOPWORDS = STOP_WORDS | frozenset(
    """
    above across after again against almost along although always am among another anyone anything around became
    because before below between both but cannot doing down during either else enough etc even ever every few
    further got having here hers herself himself however itself least less like makes many much myself neither
    nor now off often once one others ours ourselves out own perhaps please quite rather really same several
    since something theirs themselves though through thus too until up upon us uses well whether while whose
    within without yet yours yourself yourselves
    """.split()
)

_TOKEN = re.compile(r"[^\W_]+(?:['’\-.&+][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?\n]")
# A connector ("containing", "ease", "built") is a word the corpus always continues within its clause: a phrase
# ending on it is a fragment. Judged only where clauses end often enough to tell (punctuated text).
PLACEHOLDER_MIN_SHARE = 0.5  # a word in over half the documents never belongs in a phrase...
PLACEHOLDER_MIN_DOCUMENTS = 50  # ...of a corpus large enough to tell (in a tiny one, half may share a category)
CONNECTOR_MIN_CONTINUED = 0.95
CONNECTOR_MIN_COUNT = 3
PUNCTUATED_MAX_CONTINUED = 0.9
_LEADING_PREPOSITIONS = frozenset({"against", "for", "with", "from", "in", "by", "without", "near", "about", "on"})


def _norm(token: str) -> str:
    """A crude singular form used only to compare phrases for diversity."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def _is_number(token: str) -> bool:
    return bool(re.fullmatch(r"[\d.,'’\-+&]+", token))


def _title_tokens(title: str) -> set[str]:
    return {t.lower() for t in _TOKEN.findall(title or "") if t.lower() not in STOPWORDS}


@dataclass
class _Candidate:
    phrase: str
    tokens: tuple[str, ...]
    content: frozenset[str]  # normalised non-stopword tokens (diversity)
    count: int = 0
    first: int = 0  # index of the first occurrence (token position)
    score: float = 0.0  # YAKE-style: lower is better


@dataclass
class _Analysis:
    candidates: list[_Candidate] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)  # metadata split into encoder-sized pieces


def _analyse(metadata: str, title: str, ngram_range: tuple[int, int]) -> _Analysis:
    """Tokenise, find candidate n-grams inside punctuation-free segments and score them YAKE-style."""
    matches = list(_TOKEN.finditer(metadata or ""))
    if not matches:
        return _Analysis()
    tokens = [m.group(0) for m in matches]
    lower = [t.lower() for t in tokens]
    layout = _layout(metadata, matches)
    term_score = _term_scores(tokens, lower, layout)
    if not term_score:
        return _Analysis(chunks=_chunks(tokens, layout.sentence))
    candidates = _candidate_ngrams(lower, layout.segment, _title_tokens(title), ngram_range)
    for cand in candidates:
        scores = [term_score[t] for t in cand.tokens if t in term_score]
        product = float(np.prod(scores)) if scores else 1.0
        cand.score = product / (cand.count * (1.0 + sum(scores)))
    candidates.sort(key=lambda c: (c.score, c.first, c.phrase))
    return _Analysis(candidates=candidates, chunks=_chunks(tokens, layout.sentence))


@dataclass
class _Layout:
    """Where each token sits: its punctuation-free segment, its sentence, and whether it starts a sentence."""

    segment: list[int]
    sentence: list[int]
    sentence_start: list[bool]

    @property
    def n_sentences(self) -> int:
        return self.sentence[-1] + 1


def _layout(metadata: str, matches: list[re.Match]) -> _Layout:
    """A new segment after any punctuation between two tokens, a new sentence after a sentence end."""
    n = len(matches)
    layout = _Layout(segment=[0] * n, sentence=[0] * n, sentence_start=[True] * n)
    seg = sen = 0
    for i in range(1, n):
        gap = metadata[matches[i - 1].end() : matches[i].start()]
        if gap.strip():
            seg += 1
        if _SENTENCE_END.search(gap):
            sen += 1
        else:
            layout.sentence_start[i] = False
        layout.segment[i], layout.sentence[i] = seg, sen
    return layout


def _term_scores(tokens: list[str], lower: list[str], layout: _Layout) -> dict[str, float]:
    """Term statistics (YAKE, Campos et al. 2020): casing, position, frequency, relatedness, spread; lower is
    better. Stop words and numbers are no terms (empty when the text has none)."""
    segment, sentence = layout.segment, layout.sentence
    tf: Counter = Counter()
    upper: Counter = Counter()
    positions: dict[str, list[int]] = defaultdict(list)
    left: dict[str, list[str]] = defaultdict(list)
    right: dict[str, list[str]] = defaultdict(list)
    for i, (token, low) in enumerate(zip(tokens, lower)):
        if low in STOPWORDS or _is_number(low):
            continue
        tf[low] += 1
        if (token[:1].isupper() and not layout.sentence_start[i]) or (len(token) > 1 and token.isupper()):
            upper[low] += 1
        positions[low].append(sentence[i])
        if i > 0 and segment[i - 1] == segment[i]:
            left[low].append(lower[i - 1])
        if i + 1 < len(tokens) and segment[i + 1] == segment[i]:
            right[low].append(lower[i + 1])
    if not tf:
        return {}
    counts = np.array(list(tf.values()), dtype=np.float64)
    mean_tf, std_tf, max_tf = counts.mean(), counts.std(), counts.max()
    term_score: dict[str, float] = {}
    for term, count in tf.items():
        casing = upper[term] / (1.0 + math.log(count))
        position = math.log(math.log(3.0 + float(np.median(positions[term]))))
        frequency = count / (mean_tf + std_tf)
        wl = len(set(left[term])) / len(left[term]) if left[term] else 0.0
        wr = len(set(right[term])) / len(right[term]) if right[term] else 0.0
        related = 1.0 + (wl + wr) * count / max_tf
        spread = len(set(positions[term])) / layout.n_sentences
        term_score[term] = (related * position) / (casing + frequency / related + spread / related)
    return term_score


def _candidate_ngrams(lower: list[str], segment: list[int], banned: set[str],
                      ngram_range: tuple[int, int]) -> list[_Candidate]:
    """Candidate n-grams in order of first occurrence, counted: within one segment, no stop word at either end
    (but a leading preposition), no numbers, no `banned` (title) token."""
    lo, hi = ngram_range
    found: dict[tuple[str, ...], _Candidate] = {}
    for start in range(len(lower)):
        for n in range(lo, hi + 1):
            end = start + n
            if end > len(lower) or segment[end - 1] != segment[start]:
                break
            gram = tuple(lower[start:end])
            # no stop word at the end; at the start only a preposition that makes a query of a lone fact
            # ("against migraine", "from vellamo labs")
            if gram[-1] in STOPWORDS or (gram[0] in STOPWORDS and (n < 2 or gram[0] not in _LEADING_PREPOSITIONS)):
                continue
            if any(_is_number(t) or t in banned for t in gram):
                continue
            if any(len(t) < 2 for t in gram if t not in STOPWORDS):
                continue
            cand = found.get(gram)
            if cand is None:
                content = frozenset(_norm(t) for t in gram if t not in STOPWORDS)
                cand = found[gram] = _Candidate(" ".join(gram), gram, content, first=start)
            cand.count += 1
    return list(found.values())


def _chunks(tokens: list[str], sentence: list[int], max_words: int = 24) -> list[str]:
    """Sentences (split further at `max_words`) so a short-context encoder sees the whole document."""
    out: list[str] = []
    current: list[str] = []
    for i, token in enumerate(tokens):
        if current and (sentence[i] != sentence[i - 1] or len(current) >= max_words):
            out.append(" ".join(current))
            current = []
        current.append(token)
    if current:
        out.append(" ".join(current))
    return out


def _mmr(
    candidates: list[_Candidate], relevance: np.ndarray, similarity: np.ndarray, k: int, diversity: float
) -> list[int]:
    """Maximal Marginal Relevance: argmax (1 - d) * rel - d * max sim to selected; candidates with the same
    content tokens as a selected one are skipped (they would be the same query)."""
    selected: list[int] = []
    available = list(range(len(candidates)))
    while available and len(selected) < k:
        if selected:
            penalty = similarity[np.ix_(available, selected)].max(axis=1)
        else:
            penalty = np.zeros(len(available))
        scores = (1.0 - diversity) * relevance[available] - diversity * penalty
        best = available[int(np.argmax(scores))]  # argmax: first of ties, and candidates are in a stable order
        selected.append(best)
        chosen = candidates[best].content
        available = [
            i
            for i in available
            if i != best and candidates[i].content != chosen
        ]
    return selected


def _connectors(corpus: Sequence[str]) -> frozenset[str]:
    """Words that (nearly) always continue within their clause, in a corpus whose clauses end often enough."""
    seen: Counter = Counter()
    continued: Counter = Counter()
    for text in corpus:
        text = text or ""
        matches = list(_TOKEN.finditer(text))
        for i, match in enumerate(matches):
            token = match.group(0).lower()
            seen[token] += 1
            if i + 1 < len(matches) and not text[match.end() : matches[i + 1].start()].strip():
                continued[token] += 1
    total = sum(seen.values())
    if not total or sum(continued.values()) / total > PUNCTUATED_MAX_CONTINUED:
        return frozenset()  # unpunctuated text (e.g. preprocessed corpora): every word continues
    return frozenset(t for t, n in seen.items()
                     if n >= CONNECTOR_MIN_COUNT and continued[t] / n >= CONNECTOR_MIN_CONTINUED and t not in STOPWORDS)


def _encoder_name(encoder: Any) -> str:
    """The encoder's folder name (its parent's too when the folder is just `model`, as in the bundled MiniLM)."""
    path = getattr(encoder, "path", None)
    if not path:
        return type(encoder).__name__
    path = Path(str(path))
    if path.name.lower() in {"model", "models", "snapshot"} and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


def format_queries(queries: Sequence[str], header: str = QUERIES_HEADER) -> str:
    """The teacher output format: the prompt style's header, then one query (or category) per line."""
    return "\n".join([header, *queries])


class KeyphraseTeacher(Teacher):
    """Offline teacher: up to `max_queries` diverse, query-like phrases from each request's `metadata`.

    Candidates are n-grams of the metadata (`ngram_range` words, no stop word at either end, no number, no title
    token: the student must learn knowledge that the title does not carry). After `adapt_to_dataset`:

    - *boilerplate* is dropped: a candidate whose content words occur together in more than
      `max_document_frequency` of the corpus's documents ("available in three sizes", "key ingredient") says
      nothing about one document;
    - candidates are scored by how close they sit to the dataset's own train queries (`query_affinity` weight),
      as the paper's LLM prompt shows the teacher real queries: the phrases a user of *this* dataset would type
      rank first ("taken for migraine" next to "remedy for migraine"; a study's "basis analysis yielded" last).

    With an `encoder` (an object with `.encode(list[str]) -> unit-norm rows`, e.g. `TextEncoder`), KeyBERT-style:
    the `candidates` best n-grams by YAKE-style statistics are ranked by cosine to the document embedding (mean
    of its sentence embeddings), blended with the train-query affinity, and picked with MMR over their embedding
    similarities. Without an encoder, YAKE-style statistics alone, with MMR over token-overlap (Jaccard)
    similarity. Deterministic either way.
    """

    backend = "keyphrase"

    def __init__(
        self,
        encoder: Any = None,
        max_queries: int = 10,
        ngram_range: tuple[int, int] = (2, 5),
        diversity: float = 0.5,
        candidates: int = 60,
        max_document_frequency: float = 0.1,
        query_affinity: float = 0.5,
        batch_docs: int = 64,
        progress_every_s: float = 5.0,
    ):
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must satisfy 1 <= min <= max, got {ngram_range}")
        if not 0.0 <= diversity <= 1.0:
            raise ValueError(f"diversity must be in [0, 1], got {diversity}")
        if not 0.0 <= query_affinity <= 1.0:
            raise ValueError(f"query_affinity must be in [0, 1], got {query_affinity}")
        if not 0.0 < max_document_frequency <= 1.0:
            raise ValueError(f"max_document_frequency must be in (0, 1], got {max_document_frequency}")
        self.encoder = encoder
        self.max_queries = int(max_queries)
        self.ngram_range = (int(lo), int(hi))
        self.diversity = float(diversity)
        self.candidates = int(candidates)
        self.max_document_frequency = float(max_document_frequency)
        self.query_affinity = float(query_affinity)
        self.batch_docs = max(1, int(batch_docs))
        self.progress_every_s = float(progress_every_s)
        self.postings: dict[str, set[int]] = {}
        self.corpus_size = 0
        self.connectors: frozenset[str] = frozenset()
        self.reference_vectors: np.ndarray | None = None
        self.model = "yake-mmr" if encoder is None else f"keybert-mmr:{_encoder_name(encoder)}"

    def __repr__(self) -> str:
        return (
            f"KeyphraseTeacher(model={self.model!r}, max_queries={self.max_queries}, ngram_range={self.ngram_range}, "
            f"diversity={self.diversity}, candidates={self.candidates})"
        )

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "model": self.model,
            "max_queries": self.max_queries,
            "ngram_range": list(self.ngram_range),
            "diversity": self.diversity,
            "candidates": self.candidates,
            "max_document_frequency": self.max_document_frequency,
            "query_affinity": self.query_affinity,
            "corpus_documents": self.corpus_size,
            "connector_words": len(self.connectors),
            "reference_queries": 0 if self.reference_vectors is None else len(self.reference_vectors),
        }

    def adapt_to_dataset(self, corpus: Sequence[str], reference_queries: Sequence[str] = ()) -> None:
        """Index the corpus's words (to tell boilerplate phrases by their document frequency) and, with an
        encoder, embed the dataset's train queries that candidates are scored against."""
        postings: dict[str, set[int]] = defaultdict(set)
        for doc, text in enumerate(corpus):
            for token in {t.lower() for t in _TOKEN.findall(text or "")}:
                if token not in STOPWORDS:
                    postings[token].add(doc)
        self.postings = dict(postings)
        self.corpus_size = len(corpus)
        self.connectors = _connectors(corpus)
        texts = sorted({" ".join(str(q).split()) for q in reference_queries if str(q).strip()})
        if self.encoder is not None and texts:
            self.reference_vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)

    def document_frequency(self, phrase_tokens: Sequence[str]) -> int:
        """Documents of the adapted corpus holding every content word of the phrase (0 before adapting)."""
        content = sorted({t for t in phrase_tokens if t not in STOPWORDS},
                         key=lambda t: len(self.postings.get(t, ())))
        if not content or not self.corpus_size:
            return 0
        docs = set(self.postings.get(content[0], ()))
        for token in content[1:]:
            docs &= self.postings.get(token, set())
            if not docs:
                break
        return len(docs)

    def keyphrases(self, metadata: str, title: str = "") -> list[str]:
        """The phrases for one document (what `complete` formats)."""
        return self._select_batch([(metadata, title)])[0]

    def complete(self, requests: list[TeacherRequest], progress: ProgressFn | None = None) -> list[TeacherResponse]:
        requests = list(requests)
        tracker = _Progress(progress, f"teacher {self.backend}:{self.model}", len(requests), self.progress_every_s)
        out: list[TeacherResponse] = []
        for start in range(0, len(requests), self.batch_docs):
            batch = requests[start : start + self.batch_docs]
            phrases = self._select_batch([(r.metadata, r.title) for r in batch])
            for request, chosen in zip(batch, phrases):
                text = format_queries(chosen, output_header(request.style))
                response = TeacherResponse(
                    key=request.key,
                    text=text,
                    prompt_tokens=estimate_tokens(request.metadata),
                    completion_tokens=estimate_tokens(text),
                    cached=False,
                )
                out.append(response)
                tracker.add(response)
        tracker.emit()
        return out

    def _informative(self, candidate: _Candidate) -> bool:
        """Not boilerplate: its content words occur together in at most `max_document_frequency` of the corpus
        (a phrase such as "available in three sizes" or "key ingredient" says nothing about one document), and it
        does not end on a connector ("spray containing" is a fragment, not a query)."""
        if not any(t not in STOPWORDS for t in candidate.tokens):
            return False
        if candidate.tokens[-1] in self.connectors:
            return False
        if self.corpus_size >= PLACEHOLDER_MIN_DOCUMENTS and any(
                len(self.postings.get(t, ())) > PLACEHOLDER_MIN_SHARE * self.corpus_size
                                    for t in candidate.tokens if t not in STOPWORDS):
            return False  # a word in most documents is a placeholder ("num" in preprocessed corpora), not content
        df = self.document_frequency(candidate.tokens)
        return df < 3 or df <= self.max_document_frequency * self.corpus_size

    def _select_batch(self, docs: list[tuple[str, str]]) -> list[list[str]]:
        analyses = [_analyse(metadata, title, self.ngram_range) for metadata, title in docs]
        for analysis in analyses:
            analysis.candidates = [c for c in analysis.candidates if self._informative(c)][: self.candidates]
        if self.encoder is None:
            return [self._select_statistical(a) for a in analyses]
        # One encode call for every distinct text of the batch: candidates and document chunks.
        texts = sorted({t for a in analyses for t in [*(c.phrase for c in a.candidates), *a.chunks]})
        index = {t: i for i, t in enumerate(texts)}
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32) if texts else np.zeros((0, 1), np.float32)
        affinity = None
        if self.reference_vectors is not None and len(texts):
            affinity = np.zeros(len(texts), dtype=np.float64)
            for start in range(0, len(texts), 1024):  # bounded memory for large query sets
                block = vectors[start : start + 1024] @ self.reference_vectors.T
                affinity[start : start + 1024] = block.max(axis=1)
        return [self._select_embedded(a, vectors, index, affinity) for a in analyses]

    def _select_statistical(self, analysis: _Analysis) -> list[str]:
        cands = analysis.candidates
        if not cands:
            return []
        strength = -np.log(np.array([c.score for c in cands], dtype=np.float64) + 1e-12)
        spread = strength.max() - strength.min()
        relevance = (strength - strength.min()) / spread if spread > 0 else np.ones(len(cands))
        sets = [frozenset(c.content) for c in cands]
        similarity = np.array(
            [[len(a & b) / len(a | b) if a | b else 0.0 for b in sets] for a in sets], dtype=np.float64
        )
        return [cands[i].phrase for i in _mmr(cands, relevance, similarity, self.max_queries, self.diversity)]

    def _select_embedded(self, analysis: _Analysis, vectors: np.ndarray, index: dict[str, int],
                         affinity: np.ndarray | None) -> list[str]:
        cands = analysis.candidates
        if not cands or not analysis.chunks:
            return []
        doc = vectors[[index[t] for t in analysis.chunks]].mean(axis=0)
        doc = doc / max(float(np.linalg.norm(doc)), 1e-12)
        rows = [index[c.phrase] for c in cands]
        emb = vectors[rows].astype(np.float64)
        relevance = emb @ doc
        if affinity is not None:
            relevance = (1.0 - self.query_affinity) * relevance + self.query_affinity * affinity[rows]
        similarity = emb @ emb.T
        return [cands[i].phrase for i in _mmr(cands, relevance, similarity, self.max_queries, self.diversity)]
