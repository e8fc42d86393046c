"""Zhang et al. 2024, *How Does Critical Batch Size Scale in Pre-training?* (arXiv 2410.21676): one module per notebook topic (none yet; its claims are in ledger.yaml)."""
