"""The `catalogue` demo world: the `products` world's knowledge structure at any size (160 to 1,000,000+ products).

Same shape as `products` (lib/demo.py): wellness products with opaque unique short titles ("Orvana 4471", at
`title_category_rate` followed by the product category) and a metadata paragraph stating five facts (category,
maker, place, condition, ingredient) plus filler, from `METADATA_TEMPLATES`; facts appear only in the metadata,
except the category in some titles. Queries phrase one fact value in user words (`QUERY_TEMPLATES`): one train query
per train phrasing and, for a seeded `test_fraction` of the fact values, one held-out test phrasing that differs
from the train ones; a product is relevant to a query when it has the fact.

What changes with scale:

- Vocabularies grow with the corpus. Condition, ingredient, place and maker have V = n / `catalogue_docs_per_fact`
  values each: the real-word lists of lib/demo.py first, then generated, pronounceable names (syllables plus a
  kind-specific ending and head: "Kestrava", "Dunmoor"; "Vellorin Labs"; "velmo extract"; "tarrow fever"). The
  category vocabulary grows slower, `catalogue_category_growth` * sqrt(n): the bare product types while they
  suffice, then "modifier + type" ("organic herbal tea"), capped at `category_capacity()`.
- Label frequencies are long-tailed as in extreme-classification data: each product draws each fact from
  p(rank r) ∝ (r + zipf_offset) ** -zipf_exponent over its kind's values, so a few facts are shared by thousands of
  products and most by a handful; fact values no product drew get no query.

Names are kept apart so that relevance is exactly "the metadata states the value": values are distinct within and
across kinds, no value is a run of whole words of another value (generated words are unique across kinds and never a
title stem, a template or filler word, or a word of a real value), and no value other than a category can occur in a
title. At scale the categories are all "modifier + type", so no category name is inside another either.

Everything is vectorised (numpy draws, polars string building, a sort-and-repeat expansion of the qrels): no Python
loop over products or facts, memory linear in n, deterministic by seed. Written with polars in the same BEIR layout
and dataset.json as `write_demo_dataset` writes for `products`.
"""

from __future__ import annotations

import math
import re
import string

import numpy as np
import polars as pl

from .demo import (
    CATEGORIES,
    CONDITIONS,
    FILLER,
    INGREDIENTS,
    MAKER_HEADS,
    MAKER_TAILS,
    METADATA_TEMPLATES,
    NAME_SYLLABLES,
    PLACES,
    QUERY_TEMPLATES,
    DemoWorldConfig,
    _maker_names,
    world_record,
)
from .storage import atomic_directory, write_json_atomic

# the kinds in the order queries are numbered (as in the products world)
KINDS = ("category", "condition", "ingredient", "place", "maker")
FACT_KINDS = KINDS[1:]  # the kinds whose vocabulary is n / catalogue_docs_per_fact

# Product types beyond the products world's 20 (which come first), and modifiers that make "organic herbal tea".
# One modifier per category at scale, none a word of a real fact value, so no category name is inside another.
EXTRA_CATEGORIES = ["hand cream", "sunscreen", "toothpaste", "face mask", "body wash", "hair serum",
                    "soft capsules", "bath oil", "foot soak", "wellness shot"]
CATEGORY_MODIFIERS = [
    "organic", "vegan", "sugar-free", "extra strength", "gentle", "sensitive", "travel size", "family size",
    "daytime", "kids", "adult", "unscented", "fragrance-free", "cooling", "warming", "soothing", "fast-acting",
    "long-lasting", "classic", "premium", "everyday", "intensive", "mild", "pure", "sport", "refill", "value pack",
    "mini", "deluxe", "clinical", "hypoallergenic", "alcohol-free", "gluten-free", "concentrated", "light",
    "whipped", "maximum strength", "slow-release", "effervescent", "dissolvable", "wild", "fresh", "ultra",
    "advanced", "original", "gold", "baby", "senior", "men's", "women's", "bedtime", "morning", "winter",
    "summer", "alpine", "coastal", "nordic", "botanical", "professional", "limited edition",
]

# Generated words: an onset, k middle syllables (k = 0, 1, 2, ... as the vocabulary needs more) and a kind-specific
# ending; then a kind-specific head or tail ("Labs", "extract", "fever"). Places are the bare word.
ONSETS = ["kes", "vel", "dun", "tar", "mor", "brad", "sel", "fen", "hal", "tor", "lin", "quen", "ros", "gar",
          "pel", "wen", "cal", "drav", "mer", "sor", "thal", "bel", "nor", "ves", "kel", "ard", "bren", "cor",
          "dal", "el", "fal", "gren", "hel", "isk", "jor", "kal", "lor", "mal", "nes", "os", "pran", "ril", "sten",
          "tal", "ul", "var", "wil", "yar"]  # each ends in a consonant, each middle is vowel + consonant
MIDDLES = ["ar", "el", "or", "in", "an", "om", "ur", "es", "il", "ot", "am", "en", "ir", "os", "ul", "et", "ak",
           "em", "on", "is"]
ENDINGS = {
    "place": ["va", "moor", "holm", "stad", "wick", "dal", "mere", "ford", "by", "ness", "ton", "burg", "vik",
              "rin", "gate", "haven"],
    "maker": ["in", "ex", "ara", "on", "ia", "ium", "ell", "ix", "ora", "en", "ant", "ys"],
    "ingredient": ["mo", "wort", "bane", "ella", "ine", "ac", "ula", "ose", "ane", "umi", "el", "ish"],
    "condition": ["row", "sic", "ite", "oma", "usk", "id", "ent", "ash", "ic", "ary", "el", "ow"],
}
HEADS = {  # the word after a generated word: "{word} Labs", "{word} extract", "{word} fever"; places have none
    "place": [""],
    "maker": MAKER_TAILS + ["Remedies", "Wellness", "Organics", "Health", "Herbals", "Laboratories"],
    "ingredient": ["root", "extract", "leaf", "seed", "bark", "flower", "berry", "resin", "oil", "moss"],
    "condition": ["fever", "rash", "syndrome", "itch", "cough", "ache", "tremor", "flush", "spots", "palsy"],
}
NUMBER_LOW, NUMBERS = 1000, 9000  # title numbers 1000..9999
TITLE_STEMS = len(NAME_SYLLABLES) ** 3  # three title syllables, as in the products world ("Orvana")
MAX_DOCUMENTS = TITLE_STEMS * NUMBERS  # every title is a distinct (stem, number)
ID_DIGITS = 8  # doc and query ids are zero-padded to at least this many digits


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _spans(value: str) -> list[str]:
    """Every run of whole words of `value` (itself included), lower-case."""
    tokens = value.lower().split()
    return [" ".join(tokens[i:j]) for i in range(len(tokens)) for j in range(i + 1, len(tokens) + 1)]


def contained_values(values) -> list[tuple[str, str]]:
    """(value, other value it contains as a run of whole words) for a collection of fact values (any kinds)."""
    known = {v.lower() for v in values}
    return [(v, s) for v in values for s in _spans(v) if s != v.lower() and s in known]


def _title_stems() -> list[str]:
    n = len(NAME_SYLLABLES)
    return ["".join(NAME_SYLLABLES[i // n**p % n] for p in (2, 1, 0)).capitalize() for i in range(TITLE_STEMS)]


def _real_values() -> dict[str, list[str]]:
    """The products world's real-word values per kind, less any that holds another real value ("low iron")."""
    real = {"category": [], "condition": list(CONDITIONS), "ingredient": list(INGREDIENTS), "place": list(PLACES),
            "maker": _maker_names()}
    containing = {v for v, _ in contained_values([v for values in real.values() for v in values])}
    return {kind: [v for v in values if v not in containing] for kind, values in real.items()}


REAL_VALUES = _real_values()


def _forbidden_words() -> set[str]:
    """Words a generated fact word must not be: title stems and every word of templates, filler, real values,
    categories, modifiers, heads and tails."""
    texts = [*METADATA_TEMPLATES, *FILLER, *CATEGORIES, *EXTRA_CATEGORIES, *CATEGORY_MODIFIERS, *MAKER_HEADS,
             *CONDITIONS, *INGREDIENTS, *PLACES, *_maker_names(),
             *(t for ts in QUERY_TEMPLATES.values() for t in ts), *(h for hs in HEADS.values() for h in hs)]
    words = set().union(*(_words(t) for t in texts))
    return words | {s.lower() for s in _title_stems()}


def category_capacity() -> int:
    return len(CATEGORY_MODIFIERS) * (len(CATEGORIES) + len(EXTRA_CATEGORIES))


def vocabulary_sizes(config: DemoWorldConfig) -> dict[str, int]:
    """How many values each kind has at this size (not all of them need a product)."""
    n = config.n_documents
    fact = max(2, round(n / config.catalogue_docs_per_fact))
    category = int(np.clip(round(config.catalogue_category_growth * math.sqrt(n)), 2, category_capacity()))
    return {"category": category, **dict.fromkeys(FACT_KINDS, fact)}


def _category_vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """The bare product types while they suffice; then only "modifier + type" names, in a seeded order."""
    bases = CATEGORIES + EXTRA_CATEGORIES
    if size <= len(bases):
        return bases[:size]
    order = rng.permutation(category_capacity())[:size]
    return [f"{CATEGORY_MODIFIERS[i // len(bases)]} {bases[i % len(bases)]}" for i in order.tolist()]


def _generated_words(kind: str, count: int, taken: pl.Series, rng: np.random.Generator) -> pl.Series:
    """`count` distinct lower-case words for `kind`, none in `taken`; shorter words first, seeded order within a
    length. Loops over word lengths only (a handful), never over words."""
    onsets, middles, endings = pl.Series(ONSETS), pl.Series(MIDDLES), pl.Series(ENDINGS[kind])
    found = pl.Series("word", [], dtype=pl.String)
    k = 0
    while found.len() < count:
        size = len(ONSETS) * len(MIDDLES) ** k * len(ENDINGS[kind])
        need = count - found.len()
        # the whole length class in seeded order, or a seeded sample of it when it is far larger than needed
        take = size if size <= 4 * need + 1024 else 2 * need + 1024
        code = rng.choice(size, size=take, replace=False) if take < size else rng.permutation(size)
        parts = [onsets.gather(code // (len(MIDDLES) ** k * len(ENDINGS[kind])))]
        for p in range(k - 1, -1, -1):
            parts.append(middles.gather(code // (len(MIDDLES) ** p * len(ENDINGS[kind])) % len(MIDDLES)))
        parts.append(endings.gather(code % len(ENDINGS[kind])))
        words = pl.DataFrame({f"s{i}": part for i, part in enumerate(parts)}).select(
            word=pl.concat_str(pl.all()))["word"]
        words = words.filter(~words.is_in(taken.implode()) & ~words.is_in(found.implode())).unique(maintain_order=True)
        found = pl.concat([found, words.head(need)])
        if take >= size:
            k += 1  # this length class is used up
    return found


def _fact_vocabulary(kind: str, size: int, taken: pl.Series, rng: np.random.Generator) -> tuple[list, pl.Series]:
    """The kind's `size` values (real ones first, then generated) and the generated words it used."""
    real = REAL_VALUES[kind][:size]
    words = _generated_words(kind, size - len(real), taken, rng)
    heads = pl.Series(HEADS[kind]).gather(rng.integers(len(HEADS[kind]), size=words.len()))
    frame = pl.DataFrame({"word": words, "head": heads})
    if kind in ("place", "maker"):
        frame = frame.with_columns(pl.col("word").str.to_titlecase())
    generated = frame.select(v=pl.concat_str("word", "head", separator=" ").str.strip_chars())["v"]
    return real + generated.to_list(), words


def build_vocabularies(config: DemoWorldConfig, rng: np.random.Generator) -> dict[str, list[str]]:
    """Every kind's values, rank order (rank 1 is the most frequent)."""
    sizes = vocabulary_sizes(config)
    vocabularies = {"category": _category_vocabulary(sizes["category"], rng)}
    taken = pl.Series(sorted(_forbidden_words()), dtype=pl.String)
    for kind in FACT_KINDS:
        vocabularies[kind], words = _fact_vocabulary(kind, sizes[kind], taken, rng)
        taken = pl.concat([taken, words])
    return vocabularies


def zipf_probabilities(size: int, exponent: float, offset: float) -> np.ndarray:
    p = (np.arange(1, size + 1, dtype=np.float64) + offset) ** -exponent
    return p / p.sum()


def _format(template: str) -> pl.Expr:
    """A str.format template as a polars expression over the columns its fields name."""
    pieces = []
    for literal, field, _, _ in string.Formatter().parse(template):
        if literal:
            pieces.append(pl.lit(literal))
        if field is not None:
            pieces.append(pl.col(field))
    return pl.concat_str(pieces)


def _ids(prefix: str, count: int) -> pl.Series:
    digits = max(ID_DIGITS, len(str(max(count - 1, 0))))
    return pl.select(pl.concat_str(pl.lit(prefix), pl.int_range(count, dtype=pl.Int64).cast(pl.String)
                                   .str.zfill(digits)).alias("id"))["id"]


def _validate(config: DemoWorldConfig) -> None:
    n_templates = min(len(t) for t in QUERY_TEMPLATES.values())
    problems = [
        (not 1 <= config.n_documents <= MAX_DOCUMENTS, f"n_documents must be 1..{MAX_DOCUMENTS}"),
        (config.catalogue_docs_per_fact <= 0, "catalogue_docs_per_fact must be > 0"),
        (config.catalogue_category_growth <= 0, "catalogue_category_growth must be > 0"),
        (config.zipf_exponent < 0, "zipf_exponent must be >= 0"),
        (config.zipf_offset <= -1, "zipf_offset must be > -1"),
        (not 0 <= config.test_fraction <= 1, "test_fraction must be within [0, 1]"),
        (not 0 <= config.title_category_rate <= 1, "title_category_rate must be within [0, 1]"),
        (not 1 <= config.train_phrasings < n_templates, f"train_phrasings must be 1..{n_templates - 1}"),
    ]
    bad = [message for failed, message in problems if failed]
    if bad:
        raise ValueError(f"catalogue world config: {'; '.join(bad)} (got {config})")


def generate_catalogue_world(config: DemoWorldConfig) -> dict[str, pl.DataFrame]:
    """The catalogue world as polars frames.

    documents   _id, title, text (the metadata paragraph)
    facts       _id and one column per kind (the product's value of that fact)
    vocabulary  kind, rank (1 = most frequent by design), value, documents (how many products have it)
    queries     _id, text, kind, value, template (the phrasing), split ('train' / 'test')
    train_qrels, test_qrels   query_id, doc_id (sorted by query, then document)
    """
    _validate(config)
    n = config.n_documents
    rng = np.random.default_rng(config.seed)
    vocabularies = build_vocabularies(config, rng)

    # titles: distinct (stem, number) codes, a seeded sample of the code space without replacement
    code = rng.choice(MAX_DOCUMENTS, size=n, replace=False)
    names = pl.DataFrame({"stem": pl.Series(_title_stems()).gather(code // NUMBERS),
                          "number": code % NUMBERS + NUMBER_LOW}).select(
        name=pl.concat_str("stem", pl.col("number").cast(pl.String), separator=" "))["name"]
    del code

    ranks = {kind: rng.choice(len(values), size=n, p=zipf_probabilities(
        len(values), config.zipf_exponent, config.zipf_offset)).astype(np.int32)
        for kind, values in vocabularies.items()}
    shows_category = rng.random(n) < config.title_category_rate
    template = rng.integers(len(METADATA_TEMPLATES), size=n).astype(np.int8)
    pair = rng.integers(len(FILLER) * (len(FILLER) - 1), size=n)  # two different filler sentences, in order
    first, second = pair // (len(FILLER) - 1), pair % (len(FILLER) - 1)
    second = second + (second >= first)
    del pair

    doc_ids = _ids("D", n)
    facts = pl.DataFrame({"_id": doc_ids, **{kind: pl.Series(vocabularies[kind]).gather(ranks[kind])
                                             for kind in KINDS}})
    fillers = pl.Series(FILLER)
    parts = facts.with_columns(name=names, template=template, shows=shows_category,
                               filler=pl.concat_str(fillers.gather(first), fillers.gather(second), separator=" "))
    del names, first, second, template, shows_category
    text = _format(METADATA_TEMPLATES[-1])
    for i in range(len(METADATA_TEMPLATES) - 2, -1, -1):  # a when/then chain, one branch per template
        text = pl.when(pl.col("template") == i).then(_format(METADATA_TEMPLATES[i])).otherwise(text)
    documents = parts.select(
        "_id",
        title=pl.when("shows").then(pl.concat_str("name", "category", separator=" ")).otherwise("name"),
        # the templates say "a {category}"; a category that starts with a vowel sound reads "an" ("an organic ...")
        text=pl.concat_str(text, "filler", separator=" ").str.replace_all(r"\b([Aa]) ([aeiouAEIOU])", "${1}n $2"),
    )
    del parts

    vocabulary, queries, qrels = _queries_and_qrels(config, vocabularies, ranks, rng)
    query_ids = _ids("Q", queries.height)
    queries = queries.select(pl.Series("_id", query_ids), "text", "kind", "value", "template", "split")
    frames = {"documents": documents, "facts": facts, "vocabulary": vocabulary, "queries": queries}
    for split, (query_index, doc_index) in qrels.items():
        frames[f"{split}_qrels"] = pl.DataFrame({"query_id": query_ids.gather(query_index),
                                                 "doc_id": doc_ids.gather(doc_index)})
    return frames


def _queries_and_qrels(config: DemoWorldConfig, vocabularies: dict, ranks: dict, rng: np.random.Generator):
    """Queries numbered kind by kind, fact by fact (rank order), test phrasing before train phrasings; qrels as
    (query index, document index) arrays per split, expanded by sorting documents by fact value (no join)."""
    tables, vocabulary_frames = [], []
    qrels_parts = {"train": [], "test": []}
    offset = 0
    for kind in KINDS:
        values = vocabularies[kind]
        counts = np.bincount(ranks[kind], minlength=len(values))
        vocabulary_frames.append(pl.DataFrame({"kind": kind, "rank": np.arange(1, len(values) + 1),
                                               "value": values, "documents": counts}))
        used = np.flatnonzero(counts)
        templates = QUERY_TEMPLATES[kind]
        # per fact a seeded order of the phrasings: the first is the test one, the next train_phrasings train
        order = np.argsort(rng.random((used.size, len(templates))), axis=1)[:, : 1 + config.train_phrasings]
        has_test = rng.random(used.size) < config.test_fraction
        keep = np.ones(order.shape, dtype=bool)
        keep[:, 0] = has_test
        fact = np.repeat(used, order.shape[1]).reshape(order.shape)[keep]
        phrasing = order[keep]
        split = np.where(np.tile(np.arange(order.shape[1]) == 0, (used.size, 1))[keep], "test", "train")
        prefix = pl.Series([t.split("{v}")[0] for t in templates]).gather(phrasing)
        suffix = pl.Series([t.split("{v}")[1] for t in templates]).gather(phrasing)
        value = pl.Series(values).gather(fact)
        tables.append(pl.DataFrame({"value": value, "prefix": prefix, "suffix": suffix,
                                    "template": pl.Series(templates).gather(phrasing), "split": split})
                      .select(text=pl.concat_str("prefix", "value", "suffix"), kind=pl.lit(kind), value="value",
                              template="template", split="split"))
        # documents grouped by fact value (stable: ascending document index within a value)
        by_value = np.argsort(ranks[kind], kind="stable").astype(np.int32)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        query_index = offset + np.arange(fact.size)
        for name in ("train", "test"):
            chosen = split == name
            q, f = query_index[chosen], fact[chosen]
            repeat = counts[f]
            total = int(repeat.sum())
            first_row = np.repeat(np.cumsum(repeat) - repeat, repeat)
            position = np.arange(total) - first_row + np.repeat(starts[f], repeat)
            qrels_parts[name].append((np.repeat(q, repeat), by_value[position]))
        offset += fact.size
    queries = pl.concat(tables)
    qrels = {name: tuple(np.concatenate([p[i] for p in parts]) if parts else np.empty(0, np.int64)
                         for i in (0, 1)) for name, parts in qrels_parts.items()}
    return pl.concat(vocabulary_frames), queries, qrels


def write_catalogue_dataset(folder, config: DemoWorldConfig) -> dict:
    """Write the catalogue world in BEIR layout plus its dataset.json (as `write_demo_dataset` does for
    `products`); returns summary counts. Atomic and idempotent."""
    world = generate_catalogue_world(config)
    with atomic_directory(folder) as tmp:
        world["documents"].write_ndjson(tmp / "corpus.jsonl")
        world["queries"].select("_id", "text", metadata=pl.struct("kind")).write_ndjson(tmp / "queries.jsonl")
        (tmp / "qrels").mkdir()
        for split in ("train", "test"):
            (world[f"{split}_qrels"]
             .select(pl.col("query_id").alias("query-id"), pl.col("doc_id").alias("corpus-id"), score=pl.lit(1))
             .write_csv(tmp / "qrels" / f"{split}.tsv", separator="\t"))
        write_json_atomic(
            {"format": "beir", "source": ".", "exposure_k": config.exposure_k, "simulate_bias": True,
             "prompt_style": "url-queries", "demo_world": world_record(config)},
            tmp / "dataset.json",
        )
    return {
        "documents": world["documents"].height,
        "queries": world["queries"].height,
        "train_pairs": world["train_qrels"].height,
        "test_pairs": world["test_qrels"].height,
    }


def label_statistics(world: dict[str, pl.DataFrame]) -> dict:
    """Vocabulary sizes and label frequencies of a generated catalogue world (for reports and tests)."""
    used = world["vocabulary"].filter(pl.col("documents") > 0)
    per_kind = used.group_by("kind", maintain_order=True).agg(
        vocabulary=pl.len(), median_docs=pl.col("documents").median(), max_docs=pl.col("documents").max())
    labels = pl.concat([world["train_qrels"], world["test_qrels"]]).group_by("query_id").len()["len"]
    return {
        "documents": world["documents"].height,
        "vocabulary": {r["kind"]: r["vocabulary"] for r in per_kind.iter_rows(named=True)},
        "vocabulary_all": dict(world["vocabulary"].group_by("kind", maintain_order=True).len().iter_rows()),
        "median_docs_per_fact": float(used["documents"].median()),
        "max_docs_per_fact": int(used["documents"].max()),
        "per_kind": {r["kind"]: {"median_docs": r["median_docs"], "max_docs": r["max_docs"]}
                     for r in per_kind.iter_rows(named=True)},
        "facts_with_one_or_two_docs": float((used["documents"] <= 2).mean()),
        "mean_labels_per_query": float(labels.mean()),
        "train_queries": int((world["queries"]["split"] == "train").sum()),
        "test_queries": int((world["queries"]["split"] == "test").sum()),
        "train_qrels": world["train_qrels"].height,
        "test_qrels": world["test_qrels"].height,
    }
