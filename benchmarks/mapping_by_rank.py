"""SKIM's mapping on a dataset already run through the pipeline, by neighbour rank: of the candidates that pass tau,
how many are held-back train labels at each rank among their synthetic query's k nearest train queries
(`lib.mapping.repair_by_neighbour_rank`), and the label repair of the paper's rule (every neighbour above tau)
beside keeping only the nearest one. It reads `mapped_pairs`' stored candidates: no search, no model.

    python benchmarks/mapping_by_rank.py --root /work/scale_runs/100000 --dataset catalogue-100000 [--tau 0.8] \
        [--json benchmarks/results/mapping_by_rank.json]
"""

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="storage root of a run")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--tau", type=float, default=None, help="default: the tau the mapping ran with")
    parser.add_argument("--json", help="merge this dataset's figures into this JSON file")
    args = parser.parse_args(argv)

    import polars as pl

    from benchmarks._common import markdown_table
    from skim_assets.lib.mapping import MappingSettings, candidates_to_pairs, repair_by_neighbour_rank
    from skim_assets.lib.quality import label_repair
    from skim_assets.resources import StorageResource

    storage = StorageResource(root=args.root)
    candidates = storage.read_table("mapped_pairs", args.dataset, "candidates")
    synthetic_ids = storage.read_table("mapped_pairs", args.dataset, "synthetic")["doc_id"].to_list()
    settings = MappingSettings.model_validate_json(
        storage.read_table("mapped_pairs", args.dataset, "settings")["config_json"][0])
    tau = args.tau if args.tau is not None else settings.threshold
    clicks = storage.read_table("train_pairs", args.dataset)
    oracle = storage.read_table("oracle_train_pairs", args.dataset)

    table = repair_by_neighbour_rank(candidates, synthetic_ids, tau, clicks, oracle)
    print(f"{args.dataset}: candidates above tau {tau:g} by neighbour rank (k = {settings.k})\n")
    print(markdown_table(["neighbour rank", "candidates", "beyond clicks", "correct", "precision"],
                         [[r["neighbour_rank"], r["candidates"], r["beyond_clicks"], r["correct"],
                           f"{r['precision']:.3f}"] for r in table.iter_rows(named=True)]))
    nearest = candidates.filter(pl.col("cosine").rank("ordinal", descending=True).over("synthetic") == 1)
    rules = {}
    for rule, frame in (("every neighbour above tau (paper)", candidates), ("nearest neighbour only", nearest)):
        repair = label_repair(candidates_to_pairs(frame, synthetic_ids, tau, "skim"), clicks, oracle)
        rules[rule] = {k: repair[k] for k in ("pairs_added", "pairs_correct", "precision", "recall")}
    print("\n" + markdown_table(["rule", "pairs added", "correct", "precision", "recall"],
                                [[rule, r["pairs_added"], r["pairs_correct"], f"{r['precision']:.3f}",
                                  f"{r['recall']:.4f}"] for rule, r in rules.items()]))
    if args.json:
        path = Path(args.json)
        figures = json.loads(path.read_text()) if path.exists() else {}
        figures[args.dataset] = {"tau": tau, "k": settings.k, "documents": storage.read_table(
            "documents", args.dataset).height, "by_rank": table.to_dicts(), "rules": rules}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
