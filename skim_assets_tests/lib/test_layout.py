"""The storage layout: one owner names every place under the root, and what is not an artifact follows from it."""

import pytest

from skim_assets.lib import layout as places
from skim_assets.lib.layout import Layout, is_artifact_folder


def test_only_kinds_of_state_the_layout_names_get_a_folder(tmp_path):
    layout = Layout(tmp_path)
    assert layout.state(places.EMBEDDING_CACHE, "toy", "x") == tmp_path / "embedding_cache" / "toy" / "x"
    assert (layout.state(places.shards_state("synthetic_queries"), "toy")
            == tmp_path / "synthetic_queries_shards" / "toy")
    with pytest.raises(ValueError, match="no kind of step state the layout knows"):
        layout.state("my_cache", "toy")
    with pytest.raises(ValueError, match="no shared store"):
        layout.store("my_store")
    with pytest.raises(ValueError, match="names step state, not an asset"):
        layout.artifact(places.MAPPING_STATE, "toy")


def test_import_replace_calls_only_artifacts_stale(tmp_path):
    """`skim import --replace` lists `artifacts_of`: every asset folder of the dataset, never its state."""
    layout = Layout(tmp_path)
    for folder in ("documents", "mapped_pairs", "skim_models", *places.STEP_STATE, "synthetic_queries_shards",
                   places.INPUTS, places.FIGURES):
        (tmp_path / folder / "toy").mkdir(parents=True)
    for store in places.STORES:
        (tmp_path / store / "toy").mkdir(parents=True)
    (tmp_path / ".staging" / "toy").mkdir(parents=True)
    (tmp_path / "queries" / "other").mkdir(parents=True)  # another dataset's artifact
    assert layout.artifacts_of("toy") == ["documents", "mapped_pairs", "skim_models"]
    assert not any(is_artifact_folder(name) for name in places.NOT_ARTIFACTS)


def test_a_name_that_leaves_the_root_is_refused(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(ValueError, match="outside the storage root"):
        layout.artifact("../elsewhere", "toy")
    with pytest.raises(ValueError, match="dataset name"):
        layout.state(places.MAPPING_STATE, "../toy")
