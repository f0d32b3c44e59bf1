#!/usr/bin/env python3
"""Reference sentence vectors for all-MiniLM-L6-v2, computed once and stored as
test data (tests/data/minilm_reference.json) for tests/kb.rs.

Why a separate implementation: the Rust encoder (src/kb/embed.rs) must agree with
the model as sentence-transformers runs it. sentence-transformers needs torch,
which this machine cannot install from its registries without gigabytes of CUDA
packages, so this script is an independent reading of the same computation in
float64 numpy (BertModel forward, mean pooling over the attention mask, L2
normalisation, as the model's 1_Pooling/config.json says), tokenized by
Hugging Face's own `tokenizers` package from the model's tokenizer.json.

Usage (needs numpy, tokenizers, safetensors):
    python3 scripts/minilm_reference.py models/minilm > tests/data/minilm_reference.json
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    # sentence-transformers' documented example; its vector starts 0.0677, 0.0635, 0.0487.
    "This is an example sentence",
    "What time does the bakery open on Saturday?",
    "The sourdough loaf costs six euros and fifty cents.",
    "Orders for birthday cakes must be placed 48 hours in advance!",
    "Crème brûlée, café au lait — naïve façade; résumé?",
    "How do I reset my password if I forgot it",
    "hello",
    # Longer than the 256-token window, so truncation is checked too.
    " ".join(["The quick brown fox jumps over the lazy dog."] * 40),
]
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    # BERT's "gelu" is the exact erf form.
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def encode(w, ids):
    n = len(ids)
    g = lambda k: w[k].astype(np.float64)  # noqa: E731
    x = g("embeddings.word_embeddings.weight")[ids]
    x = x + g("embeddings.position_embeddings.weight")[:n]
    x = x + g("embeddings.token_type_embeddings.weight")[0]
    x = layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
    heads, d = 12, 384 // 12
    for i in range(6):
        p = f"encoder.layer.{i}."
        lin = lambda h, name: h @ g(p + name + ".weight").T + g(p + name + ".bias")  # noqa: E731
        q = lin(x, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, 384)
        x = layer_norm(lin(a, "attention.output.dense") + x,
                       g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias"))
        h = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(lin(h, "output.dense") + x,
                       g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"))
    v = x.mean(0)
    return v / np.linalg.norm(v)


def main():
    d = Path(sys.argv[1])
    w = load_file(str(d / "model.safetensors"))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    out = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        out.append({"text": s, "ids": ids, "vector": [round(float(f), 7) for f in encode(w, ids)]})
    json.dump({"model": "all-MiniLM-L6-v2", "max_tokens": MAX_TOKENS, "sentences": out}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
