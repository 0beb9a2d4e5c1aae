"""Shared fixtures: a tiny demo world on disk and a storage root per test."""

import os
from pathlib import Path

import pytest

# The bundled models load from site-packages; never reach for a hub during tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_WORLD = dict(n_documents=24, docs_per_fact=3.0, train_phrasings=1, exposure_k=3, seed=5)


@pytest.fixture
def storage_root(tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def tiny_demo(storage_root) -> Path:
    """A 24-document demo world registered as dataset 'tiny' under the storage root."""
    from skim_assets.lib.demo import DemoWorldConfig, write_demo_dataset

    folder = storage_root / "inputs" / "tiny"
    write_demo_dataset(folder, DemoWorldConfig(**TINY_WORLD))
    return folder


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (the shared real datasets are only on development machines)")
    return path


def _tiny_llama(folder: Path, hidden_size: int) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from skim_assets.lib.slm import bundled_smollm2_gguf

    gguf = bundled_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True, initializer_range=0.3)  # big enough for confident logits
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's real tokenizer (and chat template): trains in seconds."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny_lm"), hidden_size=32)


@pytest.fixture(scope="session")
def tiny_causal_lm_wider(tmp_path_factory) -> Path:
    """A second student for the SLM-size sweep: the same tiny Llama, twice as wide."""
    return _tiny_llama(tmp_path_factory.mktemp("tiny_lm_wider"), hidden_size=64)


@pytest.fixture(autouse=True)
def no_stale_definitions_state_storage():
    """Dagster keeps the entered instance's definitions-state storage in a context variable; an instance a test
    entered and never exited (then garbage-collected) must not leak into the next test's `materialize`."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A storage root and Dagster home of the test's own, for the `skim` command."""
    root = tmp_path / "root"
    monkeypatch.setenv("SKIM_DATA_ROOT", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return root


def materialize_selected(assets, **kwargs):
    """`dg.materialize` of `assets` (and any asset checks among them) within the whole graph: their inputs load
    from storage through the IO manager, as in a partial run of the code location."""
    import dagster as dg

    from skim_assets.definitions import ASSETS, build_resources

    kwargs["resources"] = build_resources() | kwargs.get("resources", {})  # unselected assets need theirs too
    checks = [a for a in assets if isinstance(a, dg.AssetChecksDefinition)]
    selection = [key for a in assets if not isinstance(a, dg.AssetChecksDefinition) for key in a.keys]
    return dg.materialize([*ASSETS, *checks], selection=selection, **kwargs)


def pytest_collection_modifyitems(items):
    """A test that reads the whole graph's run on the tiny world (`tiny_run`) shares its minutes: slow."""
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
