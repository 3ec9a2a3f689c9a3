"""crossmodal: reproducible image-text pipelines as one Snakemake DAG over one package."""

__version__ = "0.1.0"
