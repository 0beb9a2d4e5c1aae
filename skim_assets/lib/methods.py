"""The training-data methods the comparison ranks: the one registry every asset, check, evaluation row, job
selection and profile derives from.

A method is a training set (the asset of its pairs) and a way of reading the texts; each method's two base models
(the dual encoder and the one-vs-all head) are trained in asset `<method>_models` and evaluated as
`<method>_retriever` and `<method>_ova_head`. Adding a baseline method: write its pairs asset (in
`assets/baselines.py`, its science in `lib/baselines.py`), then add one `Method` here.
"""

from __future__ import annotations

from dataclasses import dataclass

# The names of a method's two models in the metrics, by base model: `<method><suffix>`.
BASE_MODELS = {"dual_encoder": "_retriever", "ova_head": "_ova_head"}


@dataclass(frozen=True)
class Method:
    """One training-data method of the comparison."""

    name: str
    pairs: str  # the asset of its training pairs
    description: str
    # Metadata-augmented retrieval (the paper's Table 4): the model reads the metadata beside the short text at
    # train and test time (the document's for queries_for_documents, the query's for documents_for_queries).
    metadata_input: bool = False
    # In the `skim_core` job (and so the demo); False: left to the whole pipeline (texts four times as long).
    core: bool = True

    @property
    def models(self) -> str:
        """The asset holding the method's trained models."""
        return models_asset(self.name)

    @property
    def model_names(self) -> dict[str, str]:
        """The names of its two models in the metrics (`skim_retriever`, `skim_ova_head`), by base model."""
        return {base_model: f"{self.name}{suffix}" for base_model, suffix in BASE_MODELS.items()}

    @property
    def judged_by_label_repair(self) -> bool:
        """Whether label repair judges its training set: it adds pairs the clicks lack, which no other method's
        row already judges (a metadata-input method reads another's pairs; IPS only re-weights the clicks)."""
        return not self.metadata_input and self.pairs != "train_pairs" and self.name not in REWEIGHTS_CLICKS


def models_asset(method: str) -> str:
    """The asset holding a method's trained models."""
    return f"{method}_models"


# Methods whose pairs are the clicks, re-weighted: they add no label.
REWEIGHTS_CLICKS = ("ips", "ips_position")

_METHODS = (
    Method("base", "train_pairs", "Click-log pairs only: what click logs alone can teach."),
    Method("oracle", "oracle_train_pairs", "Every train label: the ceiling label repair could reach."),
    Method("mar", "mar_train_pairs", "A random sample of labels as large as the clicks (missing at random)."),
    Method("ips", "ips_train_pairs", "Clicks re-weighted by inverse propensities (IPS)."),
    Method("ips_position", "ips_position_train_pairs", "Clicks re-weighted by inverse position propensities "
           "estimated from the impressions (regression-EM)."),
    Method("lever", "lever_train_pairs", "Clicks plus LEVER's siamese-teacher soft labels."),
    Method("lever_ips", "lever_ips_train_pairs", "LEVER's soft labels plus IPS-weighted clicks."),
    Method("gandalf", "gandalf_train_pairs", "Clicks plus Gandalf's label-text points with co-occurrence targets."),
    Method("udapdr", "augmented_train_pairs_udapdr", "Clicks plus UDAPDR-style pairs (generation without metadata)."),
    Method("skim_no_metadata", "augmented_train_pairs_no_metadata", "Ablation: SKIM without the metadata."),
    Method("skim", "augmented_train_pairs", "Clicks plus SKIM's mapped pairs (knowledge infusion)."),
    Method("ra", "train_pairs", "Click-log pairs, the model reading the metadata beside the short text (RA).",
           metadata_input=True, core=False),
    Method("skim_ra", "augmented_train_pairs", "SKIM's training set, the model reading the metadata too (SKIM + RA).",
           metadata_input=True, core=False),
)
METHODS: dict[str, Method] = {method.name: method for method in _METHODS}  # in the comparison's order

# Pairs simulated from the complete labels rather than derived from the click log: they carry no training view.
SIMULATED_PAIRS = ("oracle_train_pairs", "mar_train_pairs")
