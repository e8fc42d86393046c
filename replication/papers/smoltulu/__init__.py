"""Alrashed 2024, *SmolTulu* (arXiv 2412.08347): one module per notebook topic (none yet; its claims are in ledger.yaml)."""
