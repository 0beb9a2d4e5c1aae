"""Metadata-augmented retrieval (the paper's Table 4) on a dataset already run through `skim_core` (e.g. by
`make demo`): materializes the RA models of the full pipeline (`ra_models`, `skim_ra_models`: a dual encoder and a
one-vs-all head each) with the demo profile's dual-encoder settings, then re-evaluates every model and prints the
report.

    python benchmarks/metadata_augmented.py --root data --dataset demo
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RA_MODELS = ["ra_models", "skim_ra_models"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--dataset", default="demo")
    args = parser.parse_args()
    from skim_assets.cli import _use_root, demo_run_config, print_report

    root = _use_root(args.root)  # before the definitions are imported: resources and instance under the root
    import dagster as dg

    from skim_assets.definitions import ASSETS, all_checks, build_resources

    selection = [*RA_MODELS, "retrieval_metrics", "comparison_report", "html_report", "duckdb_catalogue"]
    config = {"ops": {k: v for k, v in demo_run_config("skim_pipeline")["ops"].items() if k in RA_MODELS}}
    checks = [c for c in all_checks if any(k.asset_key.path[-1] in RA_MODELS for k in c.check_keys)]
    result = dg.materialize([*ASSETS, *checks], selection=[dg.AssetKey(s) for s in selection],
                            partition_key=args.dataset, resources=build_resources(),
                            instance=dg.DagsterInstance.get(), run_config=config)
    if not result.success:
        return 1
    return print_report(root, args.dataset)


if __name__ == "__main__":
    sys.exit(main())
