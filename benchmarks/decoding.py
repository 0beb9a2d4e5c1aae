"""Decoding settings of the student, compared on what it writes (issue 10): greedy, extra sampled outputs, and
sampling restricted to the prompt's words, with one adapter on one dataset.

    python benchmarks/decoding.py --root data --dataset demo     # after `make demo`: the demo's adapter

Reads the training view that `train_pairs` carries (documents, every query, click-log ones included, and the click
pairs), the `base_slm` and the `lora_adapter` of a storage root, writes for every source with each setting below,
and prints per setting: seconds, grounded and junk shares and distinct queries per document of what was written
(parsed and judged as `synthetic_queries` does), and distinct per document after the quality filter.
"""

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl

from benchmarks._common import machine_line, markdown_table
from skim_assets.lib.demonstrations import merge_samples, parse_outputs, student_prompts
from skim_assets.lib.generation import SamplingSettings, TransformersBackend, sample_settings
from skim_assets.lib.quality import judge_queries, judged_quality, keep_grounded
from skim_assets.lib.student import LORA_FOLDER, base_model_folder
from skim_assets.resources import StorageResource, Tables, TrainingView

GREEDY = SamplingSettings(max_new_tokens=80)
SETTINGS = {
    "1 output, greedy": GREEDY,
    "1 output, greedy, prompt's words only": GREEDY.with_(prompt_words_only=True),
    "2 outputs, + sampled at 0.5": GREEDY.with_(samples=2, diversity_temperature=0.5, samples_prompt_words_only=False),
    "2 outputs, + sampled at 0.5 from the prompt's words": GREEDY.with_(samples=2, diversity_temperature=0.5),
    "2 outputs, + sampled at 0.7 from the prompt's words (default)": GREEDY.with_(samples=2),
    "2 outputs, + sampled at 0.8 from the prompt's words": GREEDY.with_(samples=2, diversity_temperature=0.8),
    "2 outputs, + sampled at 1.0 from the prompt's words": GREEDY.with_(samples=2, diversity_temperature=1.0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data", help="storage root with a materialized lora_adapter")
    parser.add_argument("--dataset", default="demo")
    args = parser.parse_args()
    storage, name = StorageResource(root=args.root), args.dataset
    spec = storage.dataset_spec(name)
    # the training view's documents, every query (click-log ones included) and click pairs
    view = TrainingView(Tables(folder=storage.artifact_dir("train_pairs", name)))
    documents, known = view.generation_sources(spec.direction)
    documents = documents.sort("doc_id")
    prompts = student_prompts(documents, known, spec.prompt_style)
    backend = TransformersBackend(base_model_folder(storage.artifact_dir("base_slm", None)),
                                  storage.artifact_dir("lora_adapter", name) / LORA_FOLDER)
    ids = documents["doc_id"].to_list()
    print(machine_line())
    rows = []
    for label, sampling in SETTINGS.items():
        started, frames = time.monotonic(), []
        for sample in range(sampling.samples):
            outputs = backend.generate(prompts, sample_settings(sampling, sample))
            parsed, _ = parse_outputs(ids, [o.text for o in outputs], documents, known, spec.prompt_style, 10)
            frames.append(parsed)
        judged = judge_queries(merge_samples(pl.concat(frames), 10), documents)
        written = judged_quality(judged, documents.height)
        kept = judged_quality(keep_grounded(judged, judged.columns)[0], documents.height)  # the quality filter
        rows.append({"setting": label, "seconds": round(time.monotonic() - started),
                     "grounded %": round(100 * written["grounded_share"], 1),
                     "junk %": round(100 * written["junk_share"], 1),
                     "distinct per doc": round(written["distinct_queries_per_document"], 2),
                     "kept distinct per doc": round(kept["distinct_queries_per_document"], 2)})
        print(rows[-1], flush=True)
    print(markdown_table(list(rows[0]), [list(r.values()) for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
