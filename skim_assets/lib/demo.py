"""A generated demo world with systematically missing knowledge (deterministic, seeded, license-free).

Documents are wellness products with opaque short titles ("Orvana 4471", sometimes followed by the product
category) and a metadata paragraph that states five facts: category, maker, place of making, the condition it
treats and its key ingredient. Every fact value (a knowledge item) is shared by a few products. Queries phrase one
fact in user words ("remedy for migraine", "made in Lyon"); a product is relevant to a query when it has the fact.

Clicks are simulated later (Algorithm 1) with a retriever that sees only titles and queries: category facts that
show in a title surface in the exposure window and get clicks, while maker, place, condition and ingredient never
do, so whole kinds of knowledge are missing from the click-log train pairs. The metadata still states them, which
is what SKIM's teacher and generator read to bring them back; the unbiased test set (all labels) shows it.

The world is written in BEIR layout (corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv) so the demo goes through
the same importer as real data.

The `categories` variant turns the world around, as the paper's LF-WikiTitlesHierarchy setting does: the products
are the *queries* (their short title as text, their description as query-side metadata in a `description` field)
and the documents are categories with no metadata ("migraine remedies", "made in Lyon", "Vellamo Labs"). A
product is relevant to the five categories of its facts. Clicks again only find what the title shows, and the
rest of a product's categories is stated only in its description: SKIM must write categories for each train
query (`generate: documents_for_queries`) and map them onto the real category documents. Each product is asked
about twice: its train query is its title, its test query another phrasing of it ("Orvana 4471 reviews").

The `catalogue` variant (lib/catalogue_world.py) is the `products` world at any size, 160 to 1,000,000+ products:
the fact vocabularies grow with the corpus (generated names such as "Vellorin Labs", "Kestrava", "velmo extract",
"tarrow fever" after the real-word lists below), each product draws its facts from a Zipf-like distribution so label
frequencies are long-tailed as in extreme-classification data, and it is built vectorised (numpy / polars frames).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .storage import atomic_directory, write_json_atomic

CATEGORIES = [
    "herbal tea", "face cream", "vitamin tablets", "throat lozenges", "bath salts", "hair oil", "energy bar",
    "eye drops", "nasal spray", "foot balm", "protein powder", "lip balm", "body lotion", "cough syrup",
    "sleep spray", "muscle gel", "chewable gummies", "mouthwash", "shampoo", "massage oil",
]
CONDITIONS = [
    "migraine", "insomnia", "joint pain", "dry skin", "acne", "heartburn", "sore throat", "hay fever",
    "back pain", "muscle cramps", "dandruff", "cold sores", "sunburn", "bloating", "nausea", "anxiety",
    "fatigue", "eczema", "chapped lips", "motion sickness", "snoring", "jet lag", "hangover", "toothache",
    "bleeding gums", "hair loss", "brittle nails", "restless legs", "athlete's foot", "dry eyes", "earache",
    "constipation", "indigestion", "period cramps", "tension headache", "poor circulation", "low iron",
    "bad breath", "oily skin", "insect bites", "blisters", "stiff neck", "chesty cough", "blocked nose",
    "teething pain", "warts", "hiccups", "varicose veins", "cold feet", "itchy scalp", "dark circles",
    "puffy eyes", "rosacea", "psoriasis", "night sweats", "gout", "shin splints", "tennis elbow",
    "hot flushes", "low mood",
]
INGREDIENTS = [
    "lavender", "zinc", "ginger", "chamomile", "turmeric", "peppermint", "magnesium", "aloe vera",
    "eucalyptus", "manuka honey", "green tea", "vitamin c", "melatonin", "arnica", "tea tree oil",
    "shea butter", "echinacea", "ginseng", "valerian root", "collagen", "elderberry", "fennel",
    "liquorice root", "sage", "rosemary", "coconut oil", "oatmeal", "calendula", "witch hazel", "cranberry",
    "beeswax", "spirulina", "iron", "biotin", "capsaicin", "menthol", "camphor", "lemon balm", "hibiscus",
    "propolis", "clove oil", "marshmallow root", "nettle", "hyaluronic acid", "argan oil", "cocoa butter",
    "sea salt", "activated charcoal", "rosehip", "jojoba oil", "ashwagandha", "cinnamon", "garlic",
    "fish oil", "vitamin d", "saffron", "blackcurrant", "thyme", "sandalwood", "evening primrose",
]
PLACES = [
    "Lyon", "Porto", "Bergen", "Graz", "Tampere", "Krakow", "Valencia", "Leipzig", "Ghent", "Bologna",
    "Aarhus", "Brno", "Cork", "Seville", "Turin", "Utrecht", "Nantes", "Bilbao", "Malmo", "Basel",
    "Salzburg", "Gdansk", "Lille", "Genoa", "Tartu", "Ljubljana", "Bruges", "Coimbra", "Split", "Trieste",
    "Uppsala", "Dresden", "Lucerne", "Marseille", "Antwerp", "Bremen", "Kaunas", "Plovdiv", "Cluj", "Padua",
    "Oulu", "Innsbruck", "Galway", "Granada", "Verona", "Rotterdam", "Bordeaux", "Zaragoza", "Gothenburg",
    "Geneva", "Linz", "Wroclaw", "Toulouse", "Palermo", "Tromso", "Riga", "Odense", "Limerick", "Malaga",
    "Nuremberg",
]
MAKER_HEADS = ["Vellamo", "Nordwind", "Solberg", "Amberly", "Kestrel", "Marlowe", "Quillon", "Brightwater",
               "Halden", "Oakhurst", "Larkspur", "Tiverton"]
MAKER_TAILS = ["Labs", "Apothecary", "Naturals", "Pharma", "Botanicals"]
NAME_SYLLABLES = ["or", "va", "na", "li", "ke", "zu", "ta", "mi", "ro", "sa", "ne", "do", "ka", "xi", "lu", "pe"]

# How users phrase a fact; one phrasing per fact is held out for the test set.
QUERY_TEMPLATES = {
    "category": ["{v}", "buy {v}", "best {v}", "{v} online"],
    "condition": ["remedy for {v}", "what helps with {v}", "{v} relief", "treatment for {v}"],
    "ingredient": ["products with {v}", "contains {v}", "{v} based remedy", "made with {v}"],
    "place": ["products made in {v}", "goods from {v}", "{v} made products", "manufactured in {v}"],
    "maker": ["{v} products", "items by {v}", "{v} range", "made by {v}"],
}
METADATA_TEMPLATES = [
    "{name} is a {category} from {maker}, produced in {place}. It is taken for {condition}, and its key "
    "ingredient is {ingredient}.",
    "Made in {place} by {maker}, {name} is a {category}. Its formula is built around {ingredient} and it is "
    "meant to ease {condition}.",
    "{name}: a {category} containing {ingredient}. People use it against {condition}. Manufacturer: {maker}, "
    "{place}.",
]
FILLER = [
    "Store in a cool, dry place.", "Available in three sizes.", "Not tested on animals.",
    "Keep out of reach of children.", "Recyclable packaging.", "Suitable for daily use.",
    "Ask a pharmacist if unsure.", "Launched after two years of trials.",
]


WORLDS = ("products", "categories", "catalogue")
# the category documents of the `categories` world: one per fact value
CATEGORY_TITLES = {"category": "{v}", "condition": "{v} remedies", "ingredient": "{v} products",
                   "place": "made in {v}", "maker": "{v}"}
PRODUCT_TEST_PHRASINGS = ["{t} reviews", "where to buy {t}", "{t} price", "is {t} any good"]


@dataclass(frozen=True)
class DemoWorldConfig:
    """Size and shape of the demo world. Defaults keep the whole graph to a few minutes on 2 CPU cores."""

    n_documents: int = 160  # products (in the `categories` world: products asked about as queries)
    # "categories": the reverse direction; "catalogue": `products` at any size (see the module docstring)
    world: str = "products"
    # mean number of products sharing one condition / ingredient / place / maker (the catalogue world reads
    # catalogue_docs_per_fact instead)
    docs_per_fact: float = 4.0
    title_category_rate: float = 0.6  # fraction of titles that show the product category
    train_phrasings: int = 1  # phrasings per fact in the train split (plus one held-out test phrasing)
    exposure_k: int = 10  # Algorithm 1's window for this world (small corpus)
    seed: int = 13
    # The fields below shape only the `catalogue` world; the other worlds ignore them (and leave them out of
    # dataset.json's `demo_world`, which stays as it was).
    # condition / ingredient / place / maker vocabulary size V = n_documents / catalogue_docs_per_fact, so the
    # mean number of products per fact value is about this (the median is a few: the frequencies are long-tailed)
    catalogue_docs_per_fact: float = 16.0
    # category vocabulary size = catalogue_category_growth * sqrt(n_documents): categories are broad labels
    catalogue_category_growth: float = 1.0
    # each product draws each fact's value from p(rank r) ∝ (r + zipf_offset) ** -zipf_exponent over its kind's V
    # values (r = 1 is the most frequent); a larger exponent gives a heavier head and a longer tail, the offset
    # flattens the head so the largest fact stays a small share of the corpus
    zipf_exponent: float = 1.0
    zipf_offset: float = 10.0
    # share of the fact values (seeded draw) that get a held-out test query; every fact value with a product keeps
    # its train phrasings. Lower it to keep the test split small at scale.
    test_fraction: float = 1.0


# DemoWorldConfig fields only the `catalogue` world reads (kept out of the other worlds' dataset.json)
CATALOGUE_FIELDS = ("catalogue_docs_per_fact", "catalogue_category_growth", "zipf_exponent", "zipf_offset",
                    "test_fraction")


def world_record(config: DemoWorldConfig) -> dict:
    """The config as dataset.json's `demo_world` records it: every field the world reads."""
    record = asdict(config)
    if config.world != "catalogue":
        record = {k: v for k, v in record.items() if k not in CATALOGUE_FIELDS}
    return record


def _values(pool: list[str], n_documents: int, docs_per_fact: float) -> list[str]:
    n = int(np.clip(round(n_documents / docs_per_fact), 2, len(pool)))
    return pool[:n]


def _maker_names() -> list[str]:
    return [f"{h} {t}" for t in MAKER_TAILS for h in MAKER_HEADS]


def generate_demo_world(config: DemoWorldConfig = DemoWorldConfig()) -> dict:
    """The world as plain records: documents, queries (with split) and qrels.

    The `catalogue` world, built for sizes where records would not do, comes back as polars frames instead
    (see `catalogue_world.generate_catalogue_world`)."""
    if config.world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {config.world!r}")
    if config.world == "catalogue":
        from .catalogue_world import generate_catalogue_world

        return generate_catalogue_world(config)
    rng = np.random.default_rng(config.seed)
    attribute_values = {
        "category": CATEGORIES[: max(2, min(len(CATEGORIES), config.n_documents // 12))],
        "condition": _values(CONDITIONS, config.n_documents, config.docs_per_fact),
        "ingredient": _values(INGREDIENTS, config.n_documents, config.docs_per_fact),
        "place": _values(PLACES, config.n_documents, config.docs_per_fact),
        "maker": _values(_maker_names(), config.n_documents, config.docs_per_fact),
    }
    documents, facts_of_doc, names = [], [], set()
    for i in range(config.n_documents):
        while True:
            stem = "".join(rng.choice(NAME_SYLLABLES, size=3)).capitalize()
            name = f"{stem} {rng.integers(1000, 9999)}"
            if name not in names:
                names.add(name)
                break
        # Cycle through values so every value is used; shuffle which document gets which.
        facts = {attr: values[int(rng.integers(len(values)))] if i >= len(values) else values[i]
                 for attr, values in attribute_values.items()}
        title = f"{name} {facts['category']}" if rng.random() < config.title_category_rate else name
        template = METADATA_TEMPLATES[int(rng.integers(len(METADATA_TEMPLATES)))]
        filler = " ".join(rng.choice(FILLER, size=2, replace=False))
        metadata = template.format(name=name, **facts) + " " + filler
        documents.append({"_id": f"D{i:05d}", "title": title, "text": metadata})
        facts_of_doc.append(facts)
    if config.world == "categories":
        return _categories_world(documents, facts_of_doc, attribute_values, rng)

    queries, qrels = [], {"train": [], "test": []}
    for attr, values in attribute_values.items():
        for value in values:
            relevant = [d["_id"] for d, f in zip(documents, facts_of_doc) if f[attr] == value]
            if not relevant:
                continue
            templates = list(QUERY_TEMPLATES[attr])
            order = rng.permutation(len(templates))
            test_template = templates[order[0]]
            train_templates = [templates[j] for j in order[1 : 1 + config.train_phrasings]]
            for split, chosen in (("test", [test_template]), ("train", train_templates)):
                for template in chosen:
                    query_id = f"Q{len(queries):05d}"
                    queries.append({"_id": query_id, "text": template.format(v=value), "kind": attr, "split": split})
                    qrels[split].extend((query_id, doc_id) for doc_id in relevant)
    return {"documents": documents, "queries": queries, "qrels": qrels}


def _categories_world(products: list[dict], facts_of_product: list[dict], attribute_values: dict,
                      rng: np.random.Generator) -> dict:
    """The products as queries with their description as metadata; one category document per fact value."""
    documents, category_of = [], {}
    for attr, values in attribute_values.items():
        for value in values:
            doc_id = f"C{len(documents):05d}"
            category_of[(attr, value)] = doc_id
            documents.append({"_id": doc_id, "title": CATEGORY_TITLES[attr].format(v=value), "text": ""})
    used = {category_of[(a, v)] for facts in facts_of_product for a, v in facts.items()}
    documents = [d for d in documents if d["_id"] in used]  # a category no product has is never relevant
    queries, qrels = [], {"train": [], "test": []}
    for product, facts in zip(products, facts_of_product):
        relevant = [category_of[(attr, value)] for attr, value in facts.items()]
        test_text = PRODUCT_TEST_PHRASINGS[int(rng.integers(len(PRODUCT_TEST_PHRASINGS)))].format(t=product["title"])
        for split, text in (("train", product["title"]), ("test", test_text)):
            query_id = f"Q{len(queries):05d}"
            queries.append({"_id": query_id, "text": text, "kind": "product", "split": split,
                            "description": product["text"]})
            qrels[split].extend((query_id, doc_id) for doc_id in relevant)
    return {"documents": documents, "queries": queries, "qrels": qrels}


def write_demo_dataset(folder: str | Path, config: DemoWorldConfig = DemoWorldConfig()) -> dict:
    """Write the demo world in BEIR layout plus its dataset.json; returns summary counts. Atomic and idempotent."""
    if config.world == "catalogue":
        from .catalogue_world import write_catalogue_dataset

        return write_catalogue_dataset(folder, config)
    world = generate_demo_world(config)
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as out:
            for doc in world["documents"]:
                out.write(json.dumps(doc) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as out:
            for q in world["queries"]:
                record = {"_id": q["_id"], "text": q["text"], "metadata": {"kind": q["kind"]}}
                out.write(json.dumps(record | ({"description": q["description"]} if "description" in q else {}))
                          + "\n")
        (tmp / "qrels").mkdir()
        for split, rows in world["qrels"].items():
            with open(tmp / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as out:
                out.write("query-id\tcorpus-id\tscore\n")
                out.writelines(f"{q}\t{d}\t1\n" for q, d in rows)
        reverse = config.world == "categories"  # products as queries: write categories for them
        write_json_atomic(
            {"format": "beir", "source": ".", "exposure_k": config.exposure_k, "simulate_bias": True,
             "prompt_style": "wiki-categories" if reverse else "url-queries",
             **({"generate": "documents_for_queries", "query_metadata_field": "description"} if reverse else {}),
             "demo_world": world_record(config)},
            tmp / "dataset.json",
        )
    return {
        "documents": len(world["documents"]),
        "queries": len(world["queries"]),
        "train_pairs": len(world["qrels"]["train"]),
        "test_pairs": len(world["qrels"]["test"]),
    }
