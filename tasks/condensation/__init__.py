"""Condensation methods behind `tasks/condense.py` (the stage): one module per concern.

    embeddings.py  LSA (TF-IDF + SVD, default) or all-MiniLM-L6-v2 sentence embeddings
    dedup.py       exact and MinHash-LSH near-duplicate removal (Broder 1997; Lee et al. 2022)
    scoring.py     per-row priorities: IFD / Superfiltering (Li et al. 2023, 2024), teacher uncertainty,
                   prototypicality (Sorscher et al. 2022)
    ccs.py         coverage-centric coreset selection over a difficulty score (Zheng et al. 2023)
    gradmatch.py   CRAIG facility location on sketched last-layer gradients (Mirzasoleiman et al. 2020)
    augment.py     teacher-written records for under-represented strata, de-identified, marked synthetic
    report.py      the report plot

The quota/selection core (k-center, quotas, repair) lives in tasks/condense.py.
"""
