"""Shen et al. 2024, *Power Scheduler* (arXiv 2408.13359): one module per notebook topic (none yet; its claims are in ledger.yaml)."""
