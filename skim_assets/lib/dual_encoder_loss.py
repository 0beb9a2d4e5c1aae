"""The dual encoder's loss: a weighted, decoupled softmax over a batch's documents.

Each training pair (q, d+, w) gets a softmax over the batch's documents (in-batch positives of other pairs plus
mined or shown negatives) in which q's *other* positives are removed from the denominator ("decoupled softmax",
Gupta et al., DEXML, ICLR 2024); its cross-entropy is weighted by w (1 for clicks, the mapping score for SKIM pairs)
and the batch's loss is the weighted mean.
"""

from __future__ import annotations

import numpy as np
import torch


def other_positives_mask(logits: torch.Tensor, pair_queries: np.ndarray, pair_documents: np.ndarray,
                         positives: list[set[int]], column: dict[int, int]) -> torch.Tensor:
    """[pairs, batch documents] bool: True where a batch document is one of the pair's query's positives other
    than the pair's own document (never a negative of that pair)."""
    mask = torch.zeros_like(logits, dtype=torch.bool)
    for row, (qi, di) in enumerate(zip(pair_queries, pair_documents)):
        for pos in positives[qi]:
            if pos != di and pos in column:
                mask[row, column[pos]] = True
    return mask


def decoupled_softmax_loss(
    query_embeddings: torch.Tensor,
    document_embeddings: torch.Tensor,
    batch_documents: list[int],
    pair_queries: np.ndarray,
    pair_documents: np.ndarray,
    pair_weights: np.ndarray,
    positives: list[set[int]],
    temperature: float,
) -> torch.Tensor:
    """The weighted mean over a batch's pairs of the decoupled softmax cross-entropy.

    `query_embeddings` has one row per pair, `document_embeddings` one per entry of `batch_documents` (document
    indices, the pairs' own documents among them); `positives[q]` are query q's positive document indices."""
    column = {d: j for j, d in enumerate(batch_documents)}
    # scores in fp32 (x20 magnifies rounding)
    logits = query_embeddings.float() @ document_embeddings.float().T / temperature
    # decoupled softmax: a query's other positives are not negatives
    mask = other_positives_mask(logits, pair_queries, pair_documents, positives, column)
    logits = logits.masked_fill(mask, float("-inf"))
    targets = torch.tensor([column[int(d)] for d in pair_documents], device=logits.device)
    weights = torch.tensor(pair_weights, device=logits.device)
    per_pair = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return (per_pair * weights).sum() / weights.sum()
