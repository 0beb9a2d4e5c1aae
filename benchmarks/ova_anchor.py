"""One-vs-all heads by `anchor` (and seed) on a dataset already run through the pipeline: the clicks', MAR,
oracle and SKIM training pairs, each scored on the unbiased test set (R@10 / R@100) by a head over frozen
features (`lib.sweeps.score_training_pairs`), as the sweeps score their points.

    python benchmarks/ova_anchor.py --root /tmp/nf_root --dataset nfcorpus-dev --anchors 0 0.1 0.2 --seeds 0 1 2
"""

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = {"base": "train_pairs", "mar": "mar_train_pairs", "oracle": "oracle_train_pairs",
         "skim": "augmented_train_pairs", "ips": "ips_train_pairs", "lever": "lever_train_pairs"}


def anchor_table(root: Path, dataset: str, anchors: list[float], seeds: list[int], methods: list[str]) -> list[dict]:
    from skim_assets.assets.sweeps import frozen_features
    from skim_assets.lib.ova_head import OvaHeadConfig
    from skim_assets.lib.sweeps import score_training_pairs
    from skim_assets.resources import EncoderResource, StorageResource, Tables, TrainingView

    storage = StorageResource(root=str(root))
    read = lambda asset: storage.read_table(asset, dataset)  # noqa: E731
    view = TrainingView(Tables(folder=storage.artifact_dir("train_pairs", dataset)))  # every query, click-log ones too
    features = frozen_features(storage, EncoderResource(device="cpu"), dataset, view.queries, read("documents"))
    test = read("unbiased_test_qrels")
    pairs = {m: read(PAIRS[m]) for m in methods}
    rows = []
    for anchor in anchors:
        for seed in seeds:
            for method, training in pairs.items():
                started = time.monotonic()
                scores = score_training_pairs(training, features, test, OvaHeadConfig(anchor=anchor, seed=seed))
                rows.append({"anchor": anchor, "seed": seed, "method": method, "R@10": scores["R@10"],
                             "R@100": scores["R@100"], "seconds": round(time.monotonic() - started, 1)})
                print(f"anchor {anchor} seed {seed} {method}: R@10 {100 * scores['R@10']:.2f} "
                      f"R@100 {100 * scores['R@100']:.2f}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--anchors", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["base", "mar", "oracle", "skim"], choices=list(PAIRS))
    args = parser.parse_args()
    from skim_assets.lib.report_tables import metrics_table_markdown

    rows = anchor_table(Path(args.root), args.dataset, args.anchors, args.seeds, args.methods)
    shown = [row | {"anchor": f"{row['anchor']:g}"} for row in rows]  # a setting, not a share
    print(metrics_table_markdown(shown, ["anchor", "seed", "method", "R@10", "R@100"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
