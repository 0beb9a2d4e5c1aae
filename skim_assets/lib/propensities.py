"""Position propensities estimated from an impression log, and clicks weighted by them (position-based IPS).

Under the position-based click model a shown document is clicked when it is examined (probability theta_p, by
position p alone) and relevant (gamma_qd, by the pair alone): P(click) = theta_p * gamma_qd. Click rates per
position confound the two, because a ranker puts relevant documents on top; regression-EM (Wang et al., WSDM
2018) separates them: the E-step infers, for every shown-and-unclicked document, how likely it went unexamined
versus irrelevant; the M-step re-estimates theta per position and fits gamma as a logistic regression on features
of the pair (here: its cosine in the pretrained encoder's space, which a real log can compute too). Propensities
are reported relative to position 1 (theta_p / theta_1): only ratios matter for weights, and a log cannot tell an
engine whose top result is examined half the time from one whose top result is always examined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import Field

from .formats import PAIRS_SCHEMA
from .settings import Settings

PROPENSITY_SCHEMA = {"position": pl.Int64, "impressions": pl.Int64, "clicks": pl.Int64, "click_rate": pl.Float64,
                     "click_rate_propensity": pl.Float64, "propensity": pl.Float64}


class PropensitySettings(Settings):
    """Regression-EM's iterations and the weights' clip."""

    iterations: int = Field(default=200, ge=1, description="EM iterations (it converges slowly where few shown "
                            "documents go unclicked).")
    tolerance: float = Field(default=1e-5, gt=0, description="Stop when no position's propensity moves more.")
    max_weight: float = Field(default=50.0, gt=0, description="Clip of an inverse propensity before the weights are "
                              "rescaled to mean 1 (IPS' variance control).")
    min_impressions: int = Field(default=20, ge=1, description="Positions shown fewer times borrow the propensity "
                                 "of the nearest better-sampled position above them (too few to estimate).")


@dataclass
class PropensityEstimate:
    table: pl.DataFrame  # PROPENSITY_SCHEMA, one row per position
    iterations: int
    relevance_coefficients: list[float]  # gamma's logistic regression: intercept, then one per feature

    def of(self, positions: np.ndarray) -> np.ndarray:
        """The estimated propensity of each position (positions deeper than the table take the deepest's)."""
        table = self.table.sort("position")
        known = table["position"].to_numpy()
        index = np.clip(np.searchsorted(known, positions, side="right") - 1, 0, len(known) - 1)
        return table["propensity"].to_numpy()[index]


def position_click_rates(impressions: pl.DataFrame) -> pl.DataFrame:
    """Impressions, clicks and click rate per recorded position (rows without a position are left out)."""
    return (impressions.filter(pl.col("position").is_not_null())
            .group_by("position").agg(pl.col("impressions").sum(), pl.col("clicks").sum())
            .sort("position")
            .with_columns((pl.col("clicks") / pl.col("impressions")).alias("click_rate")))


def _logistic_fit(features: np.ndarray, targets: np.ndarray, weights: np.ndarray, coefficients: np.ndarray,
                  steps: int = 3, l2: float = 1e-4) -> np.ndarray:
    """A few Newton steps of weighted logistic regression with soft targets (IRLS), from `coefficients`."""
    design = np.hstack([np.ones((len(features), 1)), features])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ coefficients, -30, 30)))
        gradient = design.T @ (weights * (p - targets)) + l2 * coefficients
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + l2 * np.eye(design.shape[1])
        coefficients = coefficients - np.linalg.solve(hessian, gradient)
    return coefficients


def regression_em(impressions: pl.DataFrame, features: np.ndarray, settings: PropensitySettings = PropensitySettings(),
                  progress: Callable[[str], None] = lambda _: None) -> PropensityEstimate:
    """Position propensities by regression-EM from impression rows (position, impressions, clicks) with one feature
    row each (`features`, aligned with `impressions`; rows without a position are left out). Positions with fewer than
    `settings.min_impressions` impressions take the estimate of the nearest better-sampled position above."""
    rows = impressions.with_row_index("_row").filter(pl.col("position").is_not_null())
    if rows.height == 0:
        raise ValueError("no impression records a position: position propensities cannot be estimated")
    x = np.asarray(features, dtype=np.float64)[rows["_row"].to_numpy()]
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)
    positions = rows["position"].to_numpy()
    shown = rows["impressions"].to_numpy().astype(np.float64)
    clicked = rows["clicks"].to_numpy().astype(np.float64)
    levels, position_index = np.unique(positions, return_inverse=True)
    per_position_shown = np.bincount(position_index, weights=shown)
    theta = np.full(len(levels), 0.5)
    coefficients = np.zeros(x.shape[1] + 1)
    iteration = 0
    for iteration in range(1, settings.iterations + 1):
        gamma = 1.0 / (1.0 + np.exp(-np.clip(coefficients[0] + x @ coefficients[1:], -30, 30)))
        t = theta[position_index]
        unclicked = shown - clicked
        denominator = np.maximum(1.0 - t * gamma, 1e-12)
        examined = clicked + unclicked * t * (1.0 - gamma) / denominator  # E[examined impressions]
        relevant = clicked + unclicked * (1.0 - t) * gamma / denominator  # E[relevant impressions]
        new_theta = np.clip(np.bincount(position_index, weights=examined) / per_position_shown, 1e-6, 1.0)
        coefficients = _logistic_fit(x, relevant / shown, shown, coefficients)
        moved = float(np.max(np.abs(new_theta - theta)))
        theta = new_theta
        if moved < settings.tolerance:
            break
        if iteration % 10 == 0:
            progress(f"regression-EM iteration {iteration}: largest propensity change {moved:.2e}")
    rates = position_click_rates(impressions)
    relative = _borrow_sparse(theta / theta[0], per_position_shown, settings.min_impressions)
    first_rate = rates["click_rate"][0] if rates.height and rates["click_rate"][0] > 0 else None
    table = rates.with_columns(
        (pl.col("click_rate") / first_rate if first_rate else pl.lit(None, pl.Float64)).alias("click_rate_propensity"),
        pl.Series("propensity", relative, pl.Float64),
    ).cast(PROPENSITY_SCHEMA)
    return PropensityEstimate(table, iteration, coefficients.tolist())


def _borrow_sparse(theta: np.ndarray, shown: np.ndarray, minimum: int) -> np.ndarray:
    theta = theta.copy()
    for i in range(1, len(theta)):
        if shown[i] < minimum:
            theta[i] = theta[i - 1]
    return theta


def position_ips_pairs(clicks: pl.DataFrame, impressions: pl.DataFrame, estimate: PropensityEstimate,
                       max_weight: float = 50.0, source: str = "ips_position") -> pl.DataFrame:
    """Click pairs weighted by their inverse position propensity: a pair clicked at several positions takes the
    click-weighted mean of 1 / propensity; a pair whose clicks carry no position takes the mean inverse propensity
    of those that do (neither favoured nor penalised). Clipped at `max_weight`, rescaled to mean weight 1."""
    clicked = impressions.filter((pl.col("clicks") > 0) & pl.col("position").is_not_null())
    inverse = 1.0 / estimate.of(clicked["position"].to_numpy()) if clicked.height else np.zeros(0)
    per_pair = (clicked.with_columns(pl.Series("inverse", inverse) * pl.col("clicks"))
                .group_by("query_id", "doc_id").agg(pl.col("inverse").sum() / pl.col("clicks").sum()))
    weighted = clicks.join(per_pair, on=["query_id", "doc_id"], how="left")
    fallback = float(per_pair["inverse"].mean()) if per_pair.height else 1.0
    weight = weighted["inverse"].fill_null(fallback).clip(upper_bound=max_weight)
    return weighted.select("query_id", "doc_id", (weight / weight.mean()).alias("weight"),
                           pl.lit(source).alias("source")).cast(PAIRS_SCHEMA)


def propensity_errors(table: pl.DataFrame, true_propensity: np.ndarray | None) -> pl.DataFrame:
    """`table` with the true relative propensity per position and the absolute error of both estimates (null
    where the truth is unknown: a real log, or the sigmoid click model)."""
    if true_propensity is None:
        truth = pl.lit(None, pl.Float64)
    else:
        truth = pl.Series(np.asarray(true_propensity, dtype=np.float64) / max(float(true_propensity[0]), 1e-12))
    return table.with_columns(truth.alias("true_propensity")).with_columns(
        (pl.col("propensity") - pl.col("true_propensity")).abs().alias("error"),
        (pl.col("click_rate_propensity") - pl.col("true_propensity")).abs().alias("click_rate_error"))
