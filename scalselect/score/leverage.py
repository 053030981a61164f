"""Importance by the dominant subspace: exact rank-k leverage scores (METHOD.md stage 2).

The representations ``R`` (``N x d``) are never loaded whole and ``U`` of the thin SVD is
never formed. Everything follows from the ``d x d`` Gram matrix of the preprocessed rows,
accumulated in float64 over row blocks:

1. *Moments* of each row set (count, column mean, centred scatter matrix
   ``sum (r - mean)(r - mean)^T``), accumulated block by block and merged
   across shards with the pairwise update of Chan et al. This avoids the cancellation of
   ``G - n mu mu^T`` that a raw Gram would suffer when the column means are large.
2. The *transform* (centre, then standardise, then L2-normalise rows — METHOD.md order)
   follows from the merged moments. Without row normalisation the Gram of the
   preprocessed rows follows from the moments alone; with it, a second pass over the rows
   accumulates the Gram of the normalised rows.
3. The *spectrum*: ``G~ = V S^2 V^T`` (``eigh``); ``k`` is the smallest rank whose
   cumulative energy reaches ``sv_threshold``; ``basis = V_k S_k^-1``.
4. *Scores*: ``pi_i = ||r~_i V_k S_k^-1||^2``, the raw rank-k leverage (they sum to k).

Linear algebra runs in float64 with NumPy, or with torch on a GPU when one is present
(``backend="auto"``); both give the same numbers to within float64 rounding.

Degenerate inputs: fewer than 2 rows and non-finite values are errors; a constant column
counts as having standard deviation 1 when standardising; ``k`` never exceeds the
numerical rank (eigenvalues above ``lambda_max * d * eps``), so no direction with a zero
singular value is divided by; all rows identical after preprocessing (zero spectral energy)
is an error, as leverage is undefined.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.io import atomic_write, write_json
from scalselect.progress import Progress
from scalselect.settings import ScoreSettings, value_problems

log = logging.getLogger(__name__)

# Rows per block: a float64 copy of a 4096 x 4096 block is 128 MiB.
BLOCK_ROWS = 4096
# The original tool's output: arrays `representations` [N, d] and `sample_ids` [N].
NPZ_MATRIX, NPZ_IDS = "representations", "sample_ids"


class LeverageError(UserError):
    """The representations cannot be scored (too few rows, non-finite values, no energy)."""


@dataclass(frozen=True)
class Preprocessing:
    """Column centring, column standardisation, row L2 normalisation — applied in this order."""

    center: bool = ScoreSettings.center
    standardize: bool = ScoreSettings.standardize
    l2_normalize: bool = ScoreSettings.l2_normalize


# --------------------------------------------------------------------------- backends


class Backend:
    """Where the float64 linear algebra runs: NumPy on the CPU, or torch on a device.

    Parameters
    ----------
    name : {"auto", "numpy", "torch"}
        ``auto`` picks torch when a CUDA GPU is available (torch is only imported when
        ``/dev/nvidiactl`` exists), NumPy otherwise.
    device : str, optional
        Torch device (default ``cuda`` when available, else ``cpu``).
    """

    def __init__(self, name: str = "auto", device: str | None = None) -> None:
        self.torch = None
        if name not in ("auto", "numpy", "torch"):
            raise ValueError(f"unknown backend {name!r}")
        # Importing torch takes seconds; without an NVIDIA device node there is no GPU.
        if name == "torch" or (name == "auto" and Path("/dev/nvidiactl").exists()):
            try:
                import torch
            except ImportError:
                if name == "torch":
                    raise
            else:
                if name == "torch" or torch.cuda.is_available():
                    self.torch = torch
                    self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.name = "numpy" if self.torch is None else f"torch:{self.device}"

    def array(self, x: np.ndarray) -> Any:
        """``x`` as a float64 array of this backend."""
        if self.torch is None:
            return np.asarray(x, dtype=np.float64)
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.torch.float64)

    def numpy(self, a: Any) -> np.ndarray:
        """A backend array as a NumPy array."""
        return a if self.torch is None else a.cpu().numpy()

    def eigh(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, as NumPy."""
        if self.torch is None:
            return np.linalg.eigh(g)
        values, vectors = self.torch.linalg.eigh(self.array(g))
        return self.numpy(values), self.numpy(vectors)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Block:
    """Rows of representations: dataset indices, sample ids and the float32 matrix."""

    index: np.ndarray
    ids: list[Any]
    matrix: np.ndarray


class ShardSource:
    """The successfully extracted rows of one extraction shard, read block by block.

    Blocks are read through a fresh memory map of just their rows, released after the
    copy, so that reading a shard larger than memory keeps the resident set small.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.name = str(directory)
        rows, matrix = features.open_shard(directory)
        if not matrix.flags.c_contiguous:
            raise LeverageError(f"{self.name}: features are not stored in C order")
        self.dim = int(matrix.shape[1])
        self._file, self._offset, self._dtype = matrix.filename, matrix.offset, matrix.dtype
        self._ok = (rows["status"] == "ok").to_numpy()
        self._index = rows["index"].to_numpy(np.int64)
        self._ids = rows["id"].to_numpy()
        self.rows = int(self._ok.sum())

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[Block]:
        """The ok rows in file order, ``block_rows`` file rows at a time."""
        row_bytes = self._dtype.itemsize * self.dim
        for start in range(0, len(self._ok), block_rows):
            stop = min(start + block_rows, len(self._ok))
            ok = self._ok[start:stop]
            if not ok.any():
                continue
            window = np.memmap(
                self._file, self._dtype, "r", self._offset + start * row_bytes,
                (stop - start, self.dim),
            )
            matrix = np.array(window[ok], dtype=np.float32)
            del window
            yield Block(
                self._index[start:stop][ok],
                [features.decode_id(x) for x in self._ids[start:stop][ok]],
                matrix,
            )


class NpzSource:
    """The original tool's ``all_representations.npz``; the dataset index is the row."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.name = str(path)
        with np.load(path, allow_pickle=False) as archive:
            missing = {NPZ_MATRIX, NPZ_IDS} - set(archive.files)
            if missing:
                raise LeverageError(f"{path}: missing arrays {sorted(missing)}")
            try:
                self._matrix = np.asarray(archive[NPZ_MATRIX], dtype=np.float32)
                self._ids = archive[NPZ_IDS].tolist()
            except ValueError as error:  # an object array: loading it would unpickle
                raise LeverageError(
                    f"{path}: {error} (arrays of Python objects are not read: save the"
                    f" {NPZ_IDS} as an integer or string array)"
                ) from None
        if self._matrix.ndim != 2 or len(self._ids) != len(self._matrix):
            raise LeverageError(
                f"{path}: {NPZ_MATRIX} {self._matrix.shape} does not match "
                f"{len(self._ids)} {NPZ_IDS}"
            )
        self.dim = int(self._matrix.shape[1])
        self.rows = len(self._matrix)

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[Block]:
        """The rows in file order."""
        for start in range(0, self.rows, block_rows):
            stop = min(start + block_rows, self.rows)
            yield Block(
                np.arange(start, stop, dtype=np.int64), self._ids[start:stop],
                self._matrix[start:stop],
            )


Source = ShardSource | NpzSource


def open_sources(paths: Sequence[str | os.PathLike]) -> list[Source]:
    """Feature sources for shard directories, extraction directories or one ``.npz``.

    Raises ``LeverageError`` when the paths mix an ``.npz`` with anything else (its row
    positions and the shards' dataset indices would collide), shards of different
    datasets (:func:`~scalselect.extract.features.dataset_fingerprint`) or dimensions disagree.
    """
    npz = [p for p in paths if str(p).endswith(".npz")]
    if npz and len(paths) > 1:
        raise LeverageError("an .npz of representations must be the only --features path")
    if npz:
        sources: list[Source] = [NpzSource(npz[0])]
    else:
        try:
            shards = [d for p in paths for d in features.shard_dirs(p)]
            features.dataset_fingerprint(shards)
        except (FileNotFoundError, ValueError) as error:
            raise LeverageError(str(error)) from error
        sources = [ShardSource(d) for d in shards]
    dims = {s.dim for s in sources}
    if len(dims) > 1:
        raise LeverageError(f"feature dimensions differ between sources: {sorted(dims)}")
    return sources


def _checked_blocks(
    source: Source, block_rows: int, progress: Progress | None = None
) -> Iterator[Block]:
    """The source's blocks, each counted in ``progress`` once used; raises
    ``LeverageError`` at the first non-finite value."""
    for block in source.blocks(block_rows):
        finite = np.isfinite(block.matrix).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise LeverageError(
                f"{source.name}: non-finite representation for dataset index "
                f"{block.index[row]} (id {block.ids[row]!r})"
            )
        yield block
        if progress is not None:
            progress.update(len(block.matrix))


# --------------------------------------------------------------------------- moments


@dataclass
class Moments:
    """Count, column mean and centred scatter matrix of a set of rows.

    For float32 rows the scatter of a constant column is exactly zero: sums of fewer
    than 2**29 float32 values are exact in float64, so the column mean is the value.
    """

    count: int
    mean: np.ndarray
    scatter: np.ndarray

    def merge(self, other: Moments) -> Moments:
        """The moments of the union of both row sets (pairwise update, exact)."""
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        count = self.count + other.count
        delta = other.mean - self.mean
        weight = self.count * other.count / count
        return Moments(
            count,
            self.mean + delta * (other.count / count),
            self.scatter + other.scatter + np.multiply.outer(delta, delta) * weight,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the moments as ``.npz``, atomically."""
        with atomic_write(path, "wb") as handle:
            np.savez(handle, count=self.count, mean=self.mean, scatter=self.scatter)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Moments:
        """Read moments written by :meth:`save`."""
        with np.load(path) as archive:
            return cls(int(archive["count"]), archive["mean"], archive["scatter"])


def source_moments(
    source: Source, backend: Backend, block_rows: int = BLOCK_ROWS,
    progress: Progress | None = None,
) -> Moments:
    """The moments of a source's rows, streamed block by block in float64 (the rows
    counted in ``progress``)."""
    count, mean, scatter = 0, None, None
    for block in _checked_blocks(source, block_rows, progress):
        rows = backend.array(block.matrix)
        block_mean = rows.mean(0)
        centred = rows - block_mean
        block_scatter = centred.T @ centred
        added = len(block.matrix)
        if count == 0:
            mean, scatter = block_mean, block_scatter
        else:
            total = count + added
            delta = block_mean - mean
            scatter += block_scatter + (delta[:, None] * delta[None, :]) * (count * added / total)
            mean = mean + delta * (added / total)
        count += added
    if count == 0:
        return Moments(0, np.zeros(source.dim), np.zeros((source.dim, source.dim)))
    return Moments(count, backend.numpy(mean), backend.numpy(scatter))


def merge_moments(parts: Sequence[Moments]) -> Moments:
    """The moments of all parts together."""
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


# --------------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class Transform:
    """``r~ = (r - shift) / scale``, then divided by its norm when ``l2_normalize``."""

    shift: np.ndarray
    scale: np.ndarray
    l2_normalize: bool

    def apply(self, matrix: np.ndarray, backend: Backend) -> Any:
        """The preprocessed float64 rows of a float32 block (a backend array)."""
        rows = (backend.array(matrix) - backend.array(self.shift)) / backend.array(self.scale)
        if self.l2_normalize:
            norms = (rows * rows).sum(1) ** 0.5
            # A zero row stays zero (its norm counts as 1).
            norms[norms == 0] = 1.0
            rows = rows / norms[:, None]
        return rows


def make_transform(moments: Moments, prep: Preprocessing) -> Transform:
    """The preprocessing of METHOD.md stage 2.2 fitted to the rows' moments.

    The standard deviation is the population one (``ddof=0``); a constant column (zero
    standard deviation) counts as having standard deviation 1.
    """
    d = len(moments.mean)
    shift = moments.mean.copy() if prep.center else np.zeros(d)
    scale = np.ones(d)
    if prep.standardize:
        std = np.sqrt(np.diag(moments.scatter) / moments.count)
        scale[std > 0] = std[std > 0]
    return Transform(shift, scale, prep.l2_normalize)


def preprocessed_gram(moments: Moments, transform: Transform) -> np.ndarray:
    """``G~ = R~^T R~`` from the moments, for transforms without row normalisation."""
    if transform.l2_normalize:
        raise ValueError("the Gram of L2-normalised rows needs a pass over the rows")
    offset = moments.mean - transform.shift
    gram = moments.scatter + np.multiply.outer(offset, offset) * moments.count
    return gram / np.multiply.outer(transform.scale, transform.scale)


def streamed_gram(
    sources: Sequence[Source], transform: Transform, backend: Backend,
    block_rows: int = BLOCK_ROWS, progress: Progress | None = None,
) -> np.ndarray:
    """``G~ = R~^T R~`` accumulated in float64 over every block of every source."""
    gram = None
    for source in sources:
        for block in _checked_blocks(source, block_rows, progress):
            rows = transform.apply(block.matrix, backend)
            gram = rows.T @ rows if gram is None else gram + rows.T @ rows
    return backend.numpy(gram)


@dataclass(frozen=True)
class Spectrum:
    """Singular values of ``R~``, the chosen rank and the scoring basis ``V_k S_k^-1``."""

    singular_values: np.ndarray
    cumulative_energy: np.ndarray
    k: int
    rank: int
    sv_threshold: float
    basis: np.ndarray


def choose_rank(cumulative_energy: np.ndarray, sv_threshold: float, rank: int) -> int:
    """Smallest ``k`` whose cumulative energy reaches ``sv_threshold``, at most ``rank``.

    Parameters
    ----------
    cumulative_energy : ndarray of shape (d,)
        ``sum_{j<=k} s_j^2 / sum_j s_j^2`` for k = 1..d, non-decreasing.
    sv_threshold : float
        Target fraction of the energy, in (0, 1].
    rank : int
        Numerical rank; ``k`` is capped there (rounding can leave the total just short
        of 1, and directions beyond the rank have no energy).

    Returns
    -------
    k : int
    """
    return int(min(np.searchsorted(cumulative_energy, sv_threshold, side="left") + 1, rank))


def spectrum(gram: np.ndarray, sv_threshold: float, backend: Backend) -> Spectrum:
    """Eigendecomposition of the preprocessed Gram matrix, rank choice and scoring basis."""
    values, vectors = backend.eigh(gram)
    values, vectors = values[::-1], vectors[:, ::-1]
    values = np.clip(values, 0.0, None)
    total = values.sum()
    if not total > 0:
        raise LeverageError(
            "all representations are identical after preprocessing (zero spectral "
            "energy): leverage scores are undefined"
        )
    rank = int((values > values[0] * len(values) * np.finfo(np.float64).eps).sum())
    cumulative = np.cumsum(values) / total
    k = choose_rank(cumulative, sv_threshold, rank)
    singular = np.sqrt(values)
    basis = np.ascontiguousarray(vectors[:, :k] / singular[:k])
    return Spectrum(singular, cumulative, k, rank, sv_threshold, basis)


@dataclass(frozen=True)
class Model:
    """Everything the scorers need: the transform and the spectrum, plus provenance."""

    transform: Transform
    spectrum: Spectrum
    prep: Preprocessing
    count: int

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as ``.npz``, atomically."""
        s = self.spectrum
        with atomic_write(path, "wb") as handle:
            np.savez(
                handle, shift=self.transform.shift, scale=self.transform.scale,
                singular_values=s.singular_values, cumulative_energy=s.cumulative_energy,
                basis=s.basis, k=s.k, rank=s.rank, sv_threshold=s.sv_threshold,
                count=self.count, center=self.prep.center,
                standardize=self.prep.standardize, l2_normalize=self.prep.l2_normalize,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read a model written by :meth:`save`."""
        with np.load(path) as a:
            prep = Preprocessing(bool(a["center"]), bool(a["standardize"]), bool(a["l2_normalize"]))
            s = Spectrum(
                a["singular_values"], a["cumulative_energy"], int(a["k"]), int(a["rank"]),
                float(a["sv_threshold"]), a["basis"],
            )
            return cls(Transform(a["shift"], a["scale"], prep.l2_normalize), s, prep, int(a["count"]))

    def spectrum_record(self) -> dict[str, Any]:
        """The content of ``spectrum.json``."""
        s = self.spectrum
        return {
            "singular_values": s.singular_values.tolist(),
            "cumulative_energy": s.cumulative_energy.tolist(),
            "k": s.k,
            "rank": s.rank,
            "sv_threshold": s.sv_threshold,
            "n": self.count,
            "d": len(s.singular_values),
            "center": self.prep.center,
            "standardize": self.prep.standardize,
            "l2_normalize": self.prep.l2_normalize,
        }


def fit(
    moments: Moments, prep: Preprocessing, sv_threshold: float, backend: Backend,
    sources: Sequence[Source] = (), block_rows: int = BLOCK_ROWS,
    progress: Progress | None = None,
) -> Model:
    """The scoring model from the merged moments (and, for row-L2, a pass over
    ``sources``, counted in ``progress``)."""
    if moments.count < 2:
        raise LeverageError(f"need at least 2 representations to score, got {moments.count}")
    problems = value_problems(ScoreSettings, sv_threshold=sv_threshold)
    if problems:
        raise LeverageError("; ".join(problems))
    transform = make_transform(moments, prep)
    if prep.l2_normalize:
        if not sources:
            raise ValueError("row L2 normalisation needs the sources for a second pass")
        gram = streamed_gram(sources, transform, backend, block_rows, progress)
    else:
        gram = preprocessed_gram(moments, transform)
    model = Model(transform, spectrum(gram, sv_threshold, backend), prep, moments.count)
    s = model.spectrum
    log.info(
        "n=%d d=%d k=%d (energy %.4f >= %.4g), numerical rank %d, backend %s",
        moments.count, len(s.singular_values), s.k, s.cumulative_energy[s.k - 1],
        sv_threshold, s.rank, backend.name,
    )
    return model


# --------------------------------------------------------------------------- scores

SCORE_COLUMNS = ("index", "id", "importance")


def score_source(
    source: Source, model: Model, backend: Backend, block_rows: int = BLOCK_ROWS,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Leverage scores of a source's rows: columns ``index``, ``id`` (JSON), ``importance``
    (the rows counted in ``progress``)."""
    if source.dim != len(model.transform.shift):
        raise LeverageError(
            f"{source.name}: dimension {source.dim} differs from the model's "
            f"{len(model.transform.shift)}"
        )
    basis = backend.array(model.spectrum.basis)
    index, ids, scores = [], [], []
    for block in _checked_blocks(source, block_rows, progress):
        projected = model.transform.apply(block.matrix, backend) @ basis
        scores.append(backend.numpy((projected * projected).sum(1)))
        index.append(block.index)
        ids.extend(features.encode_id(x) for x in block.ids)
    return pd.DataFrame({
        "index": np.concatenate(index) if index else np.empty(0, np.int64),
        "id": pd.Series(ids, dtype=object),
        "importance": np.concatenate(scores) if scores else np.empty(0),
    })


def rank_scores(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """All scores, sorted by importance descending, ties by dataset index; adds ``rank``.

    Raises ``LeverageError`` when a dataset index occurs twice (a shard given twice).
    """
    table = pd.concat(parts, ignore_index=True)
    repeated = table["index"].duplicated()
    if repeated.any():
        raise LeverageError(
            f"dataset index {table['index'][repeated].iloc[0]} is scored twice"
        )
    order = np.lexsort((table["index"].to_numpy(), -table["importance"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1, dtype=np.int64)
    return table


def write_scores(jsonl: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Write ``importance_scores.jsonl`` (the original tool's format) and, next to it,
    ``scores.parquet`` (``index``, ``id``, ``id_type``, ``importance``, ``rank``; ``id``
    as plain text that pandas users compare directly, ``id_type`` ``int``/``str``/``null``
    to keep ``7`` and ``"7"`` apart). ``table`` holds JSON ids (:func:`rank_scores`).
    Returns the parquet path."""
    jsonl = Path(jsonl)
    with atomic_write(jsonl) as handle:
        for sample_id, importance in zip(table["id"], table["importance"]):
            handle.write(f'{{"sample_id": {sample_id}, "importance": {json.dumps(float(importance))}}}\n')
    ids = [features.decode_id(x) for x in table["id"]]
    plain = table.assign(
        id=pd.Series([features.id_text(i) for i in ids], dtype=object),
        id_type=[features.id_type(i) for i in ids],
    )[["index", "id", "id_type", "importance", "rank"]]
    parquet = jsonl.with_name("scores.parquet")
    with atomic_write(parquet, "wb") as handle:
        plain.to_parquet(handle, index=False)
    return parquet


def leverage_scores(
    sources: Sequence[Source], prep: Preprocessing, sv_threshold: float,
    backend: Backend, block_rows: int = BLOCK_ROWS,
) -> tuple[pd.DataFrame, Model]:
    """Ranked leverage scores of all sources in one process (moments, fit, scores),
    reporting the rows of every pass: moments, scores and, for row-L2, the Gram."""
    passes = 3 if prep.l2_normalize else 2
    with Progress(passes * sum(source.rows for source in sources), "rows") as progress:
        moments = merge_moments([source_moments(s, backend, block_rows, progress)
                                 for s in sources])
        model = fit(moments, prep, sv_threshold, backend, sources, block_rows, progress)
        parts = [score_source(s, model, backend, block_rows, progress) for s in sources]
    return rank_scores(parts), model


def write_spectrum(path: str | os.PathLike, model: Model) -> None:
    """Write ``spectrum.json``, atomically."""
    write_json(path, model.spectrum_record())
