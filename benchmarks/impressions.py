"""What impressions buy, on a dataset already run through the pipeline (mapped_pairs, train_pairs with impressions,
ips_position_train_pairs): SKIM's mapped pairs with the shown-not-clicked filter off, on the first N positions and
on every logged position (at the mapping's tau and click-neighbour floor), their label repair against the
held-back train labels, and the unbiased R@10 / R@100 of one-vs-all heads over frozen features trained on clicks
only (base), clicks re-weighted by estimated position propensities (ips_position), and clicks + each variant's
pairs, per seed; and the estimated position propensities against the true examination probabilities.

    python benchmarks/impressions.py --root /work/nf_root --dataset nfcorpus-dev --seeds 0 1 2 \
        --json benchmarks/results/impressions_nfcorpus-dev.json
"""

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILTERS = {"off": None, "positions 1-10": 10.0, "every position": math.inf}


def filter_rows(clicks, oracle, candidates, written_for, tau, floor, seeds, score) -> list[dict]:
    """Per seed: the `clicks only` row, then one row per shown-not-clicked filter (pairs added, correct, precision,
    recall, R@10, R@100). `score(pairs, seed)` trains and scores a model."""
    from skim_assets.lib.formats import union_pairs
    from skim_assets.lib.mapping import candidates_to_pairs
    from skim_assets.lib.quality import label_repair

    rows = []
    for seed in seeds:
        scores = score(clicks, seed)
        rows.append({"training set": "clicks only (base)", "seed": seed, "pairs_added": 0, "pairs_correct": 0,
                     "repair_precision": None, "repair_recall": None, "R@10": scores["R@10"],
                     "R@100": scores["R@100"]})
        for name, cutoff in FILTERS.items():
            mapped = candidates_to_pairs(candidates, written_for, tau, "skim", floor, cutoff)
            repair = label_repair(mapped, clicks, oracle)
            scores = score(union_pairs(clicks, mapped), seed)
            rows.append({"training set": f"SKIM, shown-not-clicked filter {name}", "seed": seed,
                         "pairs_added": repair["pairs_added"], "pairs_correct": repair["pairs_correct"],
                         "repair_precision": repair["precision"], "repair_recall": repair["recall"],
                         "R@10": scores["R@10"], "R@100": scores["R@100"]})
            print(f"seed {seed} filter {name}: {repair['pairs_added']} pairs, precision {repair['precision']:.3f}, "
                  f"R@100 {100 * scores['R@100']:.2f}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    from benchmarks._common import unbiased_head_scorer
    from skim_assets.assets.common import settings_of
    from skim_assets.lib.mapping import MappingSettings
    from skim_assets.lib.report_tables import metrics_table_markdown
    from skim_assets.resources import Tables

    storage, score = unbiased_head_scorer(args.root, args.dataset)
    spec = storage.dataset_spec(args.dataset)
    tables = lambda asset: Tables(folder=storage.artifact_dir(asset, args.dataset))  # noqa: E731
    read = lambda asset: storage.read_table(asset, args.dataset)  # noqa: E731
    mapped = tables("mapped_pairs")
    mapping = settings_of(mapped, MappingSettings)

    clicks = read("train_pairs")
    rows = filter_rows(clicks, read("oracle_train_pairs"), mapped["candidates"],
                       mapped["synthetic"]["doc_id"].to_list(), mapping.threshold, mapping.click_neighbour_floor,
                       args.seeds, score)
    ips_position = tables("ips_position_train_pairs")
    for seed in args.seeds:
        scores = score(ips_position.data, seed)
        rows.append({"training set": "clicks, position-IPS weights", "seed": seed, "pairs_added": 0,
                     "pairs_correct": 0, "repair_precision": None, "repair_recall": None, "R@10": scores["R@10"],
                     "R@100": scores["R@100"]})
    columns = ["training set", "seed", "pairs_added", "pairs_correct", "repair_precision", "repair_recall", "R@10",
               "R@100"]
    print(metrics_table_markdown(rows, columns))
    propensities = ips_position["propensities"]
    print(propensities.filter(propensities["position"].is_in([1, 2, 3, 5, 10, 20, 50, 100])))
    impressions = tables("train_pairs")["impressions"]
    figures = {
        "dataset": args.dataset, "click_model": spec.click_model, "eta": spec.eta, "exposure_k": spec.exposure_k,
        "tau": mapping.threshold, "click_neighbour_floor": mapping.click_neighbour_floor,
        "impressions": int(impressions["impressions"].sum()), "impressions_clicked": int(impressions["clicks"].sum()),
        "rows": rows, "propensities": propensities.to_dicts(),
        "propensity_mean_abs_error": propensities["error"].mean(),
        "click_rate_mean_abs_error": propensities["click_rate_error"].mean(),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
