"""Beyond the four papers: the published batch-size and learning-rate laws side by side (laws.yaml, published.py)
and `python -m replication advise`, which prints what each recommends for a model and budget (advise.py); every law's form
fitted to one grid of runs and tested on the cells it was not fitted on (compare.py, notebook `laws_compare`)."""
