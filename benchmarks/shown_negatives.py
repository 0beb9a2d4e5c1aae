"""Shown-not-clicked documents as the dual encoder's negatives, on a dataset already run through the pipeline
(train_pairs with impressions): the click-trained dual encoder with `shown_negatives` 0 (in-batch only, the
nfcorpus-dev profile) and N per pair, each scored on the unbiased test set (R@10, R@100, nDCG@10).

    python benchmarks/shown_negatives.py --root /work/nf_root --dataset nfcorpus-dev --shown 0 2 --seeds 0 \
        --json benchmarks/results/shown_negatives_nfcorpus-dev.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--shown", type=int, nargs="+", default=[0, 2], help="shown negatives per pair")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    from skim_assets.lib.dual_encoder import DualEncoderConfig, rank_documents, train_dual_encoder
    from skim_assets.lib.encoders import TextEncoder
    from skim_assets.lib.mapping import unclicked_impressions
    from skim_assets.lib.metrics import evaluate_rankings
    from skim_assets.lib.report_tables import metrics_table_markdown
    from skim_assets.resources import StorageResource, Tables, TrainingView

    storage = StorageResource(root=str(Path(args.root)))
    read = lambda asset: storage.read_table(asset, args.dataset)  # noqa: E731
    train = Tables(folder=storage.artifact_dir("train_pairs", args.dataset))
    queries = TrainingView(train).queries  # every query, click-log ones too
    documents, test = read("documents"), read("unbiased_test_qrels")
    test_queries = queries.join(test.select("query_id").unique(), on="query_id")
    rows = []
    for seed in args.seeds:
        for shown in args.shown:
            config = DualEncoderConfig(epochs=args.epochs, learning_rate=1e-4, hard_negatives=0, shown_negatives=shown,
                                       seed=seed)
            passed_over = unclicked_impressions(train["impressions"], config.shown_negatives_positions)
            encoder = TextEncoder(device="cpu")
            started = time.monotonic()
            train_dual_encoder(encoder, train.data, queries, documents, config, progress=lambda m: None,
                               shown_not_clicked=passed_over)
            seconds = time.monotonic() - started
            metrics = evaluate_rankings(rank_documents(encoder, test_queries, documents, k=100), test, (10, 100))
            rows.append({"shown_negatives": shown, "seed": seed, "passed_over_pairs": passed_over.height,
                         "seconds": round(seconds), "R@10": metrics["R@10"], "R@100": metrics["R@100"],
                         "nDCG@10": metrics["nDCG@10"]})
            print(rows[-1], flush=True)
    print(metrics_table_markdown(rows, list(rows[0])))
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "epochs": args.epochs, "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
