import dagster as dg
from pydantic import Field


class GeneratorResource(dg.ConfigurableResource):
    """The small LM that is distilled and then writes queries for every document."""

    base_model_path: str = Field(default="", description="Local HF causal-LM folder; empty = bundled "
                                 "SmolLM2-135M-Instruct.")
    backend: str = Field(default="auto", description="'auto' (vLLM when installed), 'vllm' or 'transformers'.")
    device: str = Field(default="auto", description="Device for transformers generation and LoRA training.")
    batch_size: int = Field(default=128, description="Prompts decoded together by the transformers backend "
                            "(BENCHMARKS.md measures the choice).")
    dtype: str = Field(default="auto", description="Generation precision: 'auto' = bf16 where the hardware has it "
                       "(CUDA, or CPUs with AVX512-BF16/AMX), else fp32; or 'bfloat16' / 'float32'.")
    tensor_parallel_size: int = Field(default=1, description="vLLM tensor parallelism (GPUs per engine).")
    gpu_memory_utilization: float = Field(default=0.85, description="vLLM GPU memory fraction.")
