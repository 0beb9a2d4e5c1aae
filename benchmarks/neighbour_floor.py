"""SKIM's mapped pairs by click-neighbour floor, on a dataset already run through the pipeline: for each tau (default:
the mapping's) and floor (`none` = the paper's mapping), the pairs it keeps, their label repair against the held-back
train labels, and the unbiased R@10 / R@100 of a one-vs-all head over frozen features trained on clicks + those
pairs (`lib.sweeps.score_training_pairs`, as the sweeps score their points; row `clicks only` is base).

    python benchmarks/neighbour_floor.py --root /tmp/nf --dataset nfcorpus-dev --taus 0.7 0.8 --floors none 0.5 \\
        --seeds 0 1
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def floor_table(clicks, oracle, candidates, synthetic_doc_ids: list[str], taus: list[float],
                floors: list[float | None], seeds: list[int], score) -> list[dict]:
    """Rows (tau, floor, seed, pairs added, correct, precision, recall, R@10, R@100), after a `clicks only` row
    per seed. `score(pairs, seed)` trains and scores a model on `pairs` (the pipeline's one-vs-all head in
    `main`)."""
    from skim_assets.lib.formats import union_pairs
    from skim_assets.lib.mapping import candidates_to_pairs
    from skim_assets.lib.quality import label_repair

    rows = []
    for seed in seeds:
        scores = score(clicks, seed)
        rows.append({"tau": "", "floor": "clicks only", "seed": seed, "pairs_added": 0, "pairs_correct": 0,
                     "repair_precision": None, "repair_recall": None, "R@10": scores["R@10"], "R@100": scores["R@100"]})
        for tau, floor in ((tau, floor) for tau in taus for floor in floors):
            mapped = candidates_to_pairs(candidates, synthetic_doc_ids, tau, "skim", floor)
            repair = label_repair(mapped, clicks, oracle)
            scores = score(union_pairs(clicks, mapped), seed)
            rows.append({"tau": f"{tau:g}", "floor": "none" if floor is None else f"{floor:g}", "seed": seed,
                         "pairs_added": repair["pairs_added"], "pairs_correct": repair["pairs_correct"],
                         "repair_precision": repair["precision"], "repair_recall": repair["recall"],
                         "R@10": scores["R@10"], "R@100": scores["R@100"]})
            print(f"seed {seed} tau {tau:g} floor {rows[-1]['floor']}: {repair['pairs_added']} pairs, precision "
                  f"{repair['precision']:.3f}, R@10 {100 * scores['R@10']:.2f} R@100 {100 * scores['R@100']:.2f}",
                  flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--floors", nargs="+", default=["none", "0.4", "0.5", "0.6"])
    parser.add_argument("--taus", type=float, nargs="+", help="default: the mapping's tau")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    from benchmarks._common import unbiased_head_scorer
    from skim_assets.assets.common import settings_of
    from skim_assets.lib.mapping import MappingSettings
    from skim_assets.lib.report_tables import metrics_table_markdown
    from skim_assets.resources import Tables

    storage, score = unbiased_head_scorer(args.root, args.dataset)
    read = lambda asset: storage.read_table(asset, args.dataset)  # noqa: E731
    mapped = Tables(folder=storage.artifact_dir("mapped_pairs", args.dataset))
    taus = args.taus or [settings_of(mapped, MappingSettings).threshold]

    floors = [None if f == "none" else float(f) for f in args.floors]
    rows = floor_table(read("train_pairs"), read("oracle_train_pairs"), mapped["candidates"],
                       mapped["synthetic"]["doc_id"].to_list(), taus, floors, args.seeds, score)
    print(metrics_table_markdown(rows, ["tau", "floor", "seed", "pairs_added", "pairs_correct", "repair_precision",
                                        "repair_recall", "R@10", "R@100"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
