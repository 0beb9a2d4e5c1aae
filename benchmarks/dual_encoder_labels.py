"""Dual encoders trained on the clicks and on a missing-at-random sample of the labels, on a dataset already
imported and simulated by the pipeline: for each training set, the share of its in-batch negatives that are
unlabelled positives (judged by every train label), and per learning rate the unbiased test R@10 / R@100 of a
dual encoder trained on it (`lib.dual_encoder`), with zero-shot as the first row. `--mask-held-back` adds, per
training set, a model whose softmax leaves out every train label: a diagnostic of what the false negatives cost
(it reads the held-back labels, which no method may).

    python benchmarks/dual_encoder_labels.py --root /tmp/nf --dataset nfcorpus-dev --learning-rates 1e-4 2e-5 \
        --epochs 1 --hard-negatives 0 --mask-held-back
"""

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = {"clicks": "train_pairs", "mar": "mar_train_pairs", "oracle": "oracle_train_pairs"}


def label_table(pairs: dict, queries, documents, test_qrels, all_train_labels, learning_rates: list[float],
                mask_held_back: bool, encoder_factory, training: dict, batches: int = 200) -> list[dict]:
    """Rows of (training set, learning rate, masked, false-negative share, R@10, R@100, seconds). `pairs` maps a
    name to (query_id, doc_id, weight) pairs; `training` holds `DualEncoderConfig` fields shared by every model."""
    from skim_assets.lib.dual_encoder import (
        DualEncoderConfig,
        in_batch_false_negative_share,
        rank_documents,
        train_dual_encoder,
    )
    from skim_assets.lib.metrics import evaluate_rankings

    test_queries = queries.join(test_qrels.select("query_id").unique(), on="query_id")

    def scored(encoder) -> dict:
        return evaluate_rankings(rank_documents(encoder, test_queries, documents, k=100), test_qrels, (10, 100))

    zero_shot = scored(encoder_factory())
    rows = [{"pairs": "none (zero-shot)", "learning_rate": "", "masked": "", "false_negative_share": None,
             "R@10": zero_shot["R@10"], "R@100": zero_shot["R@100"], "seconds": 0}]
    config = DualEncoderConfig(**training)
    for name, frame in pairs.items():
        share = in_batch_false_negative_share(frame, all_train_labels, config.batch_size, batches, config.seed)
        print(f"{name}: {frame.height} pairs, in-batch negatives that are relevant: {100 * share:.1f}%", flush=True)
        for rate in learning_rates:
            for masked in ([False, True] if mask_held_back else [False]):
                encoder = encoder_factory()
                started = time.monotonic()
                train_dual_encoder(encoder, frame, queries, documents,
                                   config.model_copy(update={"learning_rate": rate}), progress=lambda _: None,
                                   known_positives=all_train_labels if masked else None)
                scores = scored(encoder)
                rows.append({"pairs": name, "learning_rate": f"{rate:g}", "masked": "yes" if masked else "no",
                             "false_negative_share": share, "R@10": scores["R@10"], "R@100": scores["R@100"],
                             "seconds": int(round(time.monotonic() - started))})
                print(f"{name} lr {rate:g}{' masked' if masked else ''}: R@10 {100 * scores['R@10']:.2f} "
                      f"R@100 {100 * scores['R@100']:.2f} ({rows[-1]['seconds']} s)", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--pairs", nargs="+", default=["clicks", "mar"], choices=list(PAIRS))
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-4])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hard-negatives", type=int, default=0)
    parser.add_argument("--mask-held-back", action="store_true")
    args = parser.parse_args()
    from skim_assets.lib.encoders import TextEncoder
    from skim_assets.lib.report_tables import metrics_table_markdown
    from skim_assets.resources import StorageResource

    storage = StorageResource(root=args.root)
    read = lambda asset: storage.read_table(asset, args.dataset)  # noqa: E731
    rows = label_table({name: read(PAIRS[name]) for name in args.pairs}, read("queries"), read("documents"),
                       read("unbiased_test_qrels"), read("oracle_train_pairs"), args.learning_rates,
                       args.mask_held_back, lambda: TextEncoder(device="cpu"),
                       {"epochs": args.epochs, "hard_negatives": args.hard_negatives})
    print(metrics_table_markdown(rows, ["pairs", "learning_rate", "masked", "false_negative_share", "R@10", "R@100",
                                        "seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
