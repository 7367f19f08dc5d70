"""Data sets: classic synthetic tasks, small real data sets, and the IDX (MNIST) format.

Contract: every data set is a function returning `(x, t)` as JAX arrays, with
`x` float32 of shape `(m, features)` (also when `jax_enable_x64` is on;
cast for float64 work) and one row of `t` per example:

| task | `t` | functions |
| --- | --- | --- |
| binary, exhaustive | float32 `(m, 1)` of 0 / 1 | `xor`, `parity`, `mirror_symmetry` |
| binary, sampled | float32 `(m, 1)` of 0 / 1 | `noisy_xor`, `two_spirals`, `moons`, `circles` |
| multi-label | float32 `(m, L)` of 0 / 1 | `multi_label` |
| multi-class | int32 `(m,)` in `[0, C)` | `digits`, `iris`, `wine`, `breast_cancer`, `load_mnist` |
| regression | float32 `(m, 1)` | `noisy_sine`, `diabetes` |

Binary targets are columns so that they match a network with one sigmoid
output; class labels are integers (`purenet.data.one_hot` makes rows).
`breast_cancer` has two classes but keeps integer labels like the other
real data sets: `t[:, None].astype(jnp.float32)` gives the binary column.

* Synthetic generators take an explicit `jax.random` key first (the
  exhaustive tasks `xor`, `parity` and `mirror_symmetry` need none):
  same key, same data. `n` is the total number of examples; the rows are
  ordered by class (`purenet.data.split` and `batches` shuffle them), and
  the classes of a binary task have `n - n // 2` and `n // 2` examples.
* Real data sets are the ones bundled inside the scikit-learn wheel: they are
  read from files installed with the package, never downloaded. scikit-learn
  is imported only when one of them is called. Feature scaling is left to the
  caller (`purenet.data.standardize_fit`), except `digits`, whose pixels
  are divided by 16 to lie in [0, 1] like `load_mnist`'s.
* `family_trees` is the one exception to `(x, t)`: the relational task of
  Rumelhart, Hinton and Williams (1986) has two input groups (person 1 and
  relationship), so it returns a `FamilyTrees` NamedTuple of people,
  relationships, triples, one-hot inputs, multi-hot targets and per-person
  attributes; `family_trees_split` draws its train / test partitions.
* `read_idx` / `write_idx` read and write the IDX format of MNIST and
  Fashion-MNIST, gzipped or raw; `load_mnist` reads the four standard files.

Example:

```python
import jax
from purenet import datasets

x, t = datasets.two_spirals(jax.random.key(0), n=400, noise=0.05)  # (400, 2), (400, 1)
x, labels = datasets.load("digits")                                 # (1797, 64), (1797,)
x, labels = datasets.load_mnist("~/data/mnist", kind="t10k")        # (10000, 784), (10000,)
```
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import all_finite, fail, number_in, one_of, positive_int
from purenet.data import _check_key

__all__ = [
    "FamilyTrees",
    "breast_cancer",
    "circles",
    "diabetes",
    "digits",
    "family_trees",
    "family_trees_split",
    "iris",
    "load",
    "load_mnist",
    "mirror_symmetry",
    "moons",
    "multi_label",
    "noisy_sine",
    "noisy_xor",
    "parity",
    "read_idx",
    "two_spirals",
    "wine",
    "write_idx",
    "xor",
]


# ------------------------------------------------------------ exhaustive boolean tasks


def _bit_patterns(n_bits: int) -> jax.Array:
    """All `2**n_bits` patterns as rows of 0/1, in binary counting order (MSB first)."""
    integers = jnp.arange(2**n_bits)[:, None]
    return ((integers >> jnp.arange(n_bits - 1, -1, -1)) & 1).astype(jnp.float32)


def _n_bits(value) -> int:
    # 2**20 rows of 20 floats is 80 MB; anything larger is almost surely a mistake.
    n_bits = positive_int("n_bits", value)
    if n_bits > 20:
        fail("n_bits", "an integer in [1, 20]", repr(value))
    return n_bits


def _column(condition) -> jax.Array:
    return condition.astype(jnp.float32)[:, None]


def xor() -> tuple[jax.Array, jax.Array]:
    """The four XOR patterns (Minsky and Papert's counter-example for perceptrons).

    Returns:
      `x` of shape (4, 2) (rows 00, 01, 10, 11) and `t` of shape (4, 1):
      1 when exactly one input is 1.
    """
    x = _bit_patterns(2)
    return x, _column(x[:, 0] != x[:, 1])


def parity(n_bits: int = 4) -> tuple[jax.Array, jax.Array]:
    """All `2**n_bits` bit patterns; target 1 when the number of ones is odd.

    Half the patterns (`2**(n_bits - 1)`) are positive. Flipping any one bit
    flips the target, which is why a single layer cannot learn it.

    Returns:
      `x` of shape `(2**n_bits, n_bits)` and `t` of shape `(2**n_bits, 1)`.
    """
    x = _bit_patterns(_n_bits(n_bits))
    return x, _column(jnp.sum(x, axis=1) % 2 == 1)


def mirror_symmetry(n_bits: int = 6) -> tuple[jax.Array, jax.Array]:
    """All `2**n_bits` patterns; target 1 when the pattern reads the same reversed.

    The symmetry task of Rumelhart, Hinton and Williams (1986), "Learning
    representations by back-propagating errors", Nature 323, with 6 bits: 8 of
    the 64 patterns are symmetric about their centre (in general
    `2**ceil(n_bits / 2)`).

    Returns:
      `x` of shape `(2**n_bits, n_bits)` and `t` of shape `(2**n_bits, 1)`.
    """
    x = _bit_patterns(_n_bits(n_bits))
    return x, _column(jnp.all(x == x[:, ::-1], axis=1))


# ------------------------------------------------------------------ keyed generators


def _noise(value) -> float:
    return number_in("noise", value, 0.0, math.inf, high_open=True)


def _class_sizes(n) -> tuple[int, int]:
    n = positive_int("n", n)
    if n < 2:
        fail("n", "an integer >= 2 (one example of each class at least)", repr(n))
    return n - n // 2, n // 2


def _add_noise(key, x, noise: float):
    return x + noise * jax.random.normal(key, x.shape, x.dtype)


def _binary_labels(n0: int, n1: int) -> jax.Array:
    return jnp.concatenate([jnp.zeros((n0, 1)), jnp.ones((n1, 1))]).astype(jnp.float32)


def noisy_xor(key: jax.Array, n: int = 200, noise: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """XOR with noise: each example is one of the four corners plus Gaussian noise.

    Args:
      key: a `jax.random` key.
      n: number of examples.
      noise: standard deviation of the noise added to each coordinate.

    Returns:
      `x` of shape (n, 2) and `t` of shape (n, 1), the XOR of the corner.
    """
    _check_key("key", key)
    n, noise = positive_int("n", n), _noise(noise)
    corner_key, noise_key = jax.random.split(key)
    corners = jax.random.bernoulli(corner_key, 0.5, (n, 2)).astype(jnp.float32)
    return _add_noise(noise_key, corners, noise), _column(corners[:, 0] != corners[:, 1])


def two_spirals(
    key: jax.Array, n: int = 200, noise: float = 0.0, turns: float = 1.5
) -> tuple[jax.Array, jax.Array]:
    """Two interleaved spirals (after Lang and Witbrock, 1988), one per class.

    A point at distance `s` from the centre lies at angle `2 pi turns s`;
    class 1 is class 0 turned by 180 degrees. `s = sqrt(u)` with `u`
    uniform in [0.01, 1] spreads the points evenly along the arms and keeps
    them away from the centre, where the two arms meet.

    Args:
      key: a `jax.random` key.
      n: number of examples (`n - n // 2` of class 0, `n // 2` of class 1).
      noise: standard deviation of Gaussian noise added to each coordinate.
      turns: how many times each spiral goes around the centre.

    Returns:
      `x` of shape (n, 2) inside roughly [-1, 1]^2 and `t` of shape (n, 1).
    """
    _check_key("key", key)
    (n0, n1), noise = _class_sizes(n), _noise(noise)
    turns = number_in("turns", turns, 0.0, math.inf, low_open=True, high_open=True)
    radius_key, noise_key = jax.random.split(key)
    u = jax.random.uniform(radius_key, (n0 + n1,), jnp.float32, minval=0.01, maxval=1.0)
    s = jnp.sqrt(u)
    angle = 2 * jnp.pi * turns * s
    sign = jnp.where(jnp.arange(n0 + n1) < n0, 1.0, -1.0)
    x = (sign * s)[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return _add_noise(noise_key, x, noise), _binary_labels(n0, n1)


def moons(key: jax.Array, n: int = 200, noise: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """Two interleaving half circles, as scikit-learn's `make_moons`.

    Class 0 is the upper half of the unit circle, class 1 the lower half
    shifted to `(1, 0.5)`; angles are drawn uniformly (`make_moons` spaces
    them evenly).

    Args:
      key: a `jax.random` key.
      n: number of examples (`n - n // 2` of class 0, `n // 2` of class 1).
      noise: standard deviation of Gaussian noise added to each coordinate.

    Returns:
      `x` of shape (n, 2) and `t` of shape (n, 1).
    """
    _check_key("key", key)
    (n0, n1), noise = _class_sizes(n), _noise(noise)
    angle_key, noise_key = jax.random.split(key)
    angle = jax.random.uniform(angle_key, (n0 + n1,), jnp.float32, maxval=jnp.pi)
    upper = jnp.stack([jnp.cos(angle[:n0]), jnp.sin(angle[:n0])], axis=1)
    lower = jnp.stack([1 - jnp.cos(angle[n0:]), 0.5 - jnp.sin(angle[n0:])], axis=1)
    x = jnp.concatenate([upper, lower])
    return _add_noise(noise_key, x, noise), _binary_labels(n0, n1)


def circles(
    key: jax.Array, n: int = 200, noise: float = 0.05, factor: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """A circle inside a circle, as scikit-learn's `make_circles`.

    Args:
      key: a `jax.random` key.
      n: number of examples (`n - n // 2` on the outer circle, class 0, and
        `n // 2` on the inner one, class 1).
      noise: standard deviation of Gaussian noise added to each coordinate.
      factor: radius of the inner circle (the outer one has radius 1), in (0, 1).

    Returns:
      `x` of shape (n, 2) and `t` of shape (n, 1).
    """
    _check_key("key", key)
    (n0, n1), noise = _class_sizes(n), _noise(noise)
    factor = number_in("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
    angle_key, noise_key = jax.random.split(key)
    angle = jax.random.uniform(angle_key, (n0 + n1,), jnp.float32, maxval=2 * jnp.pi)
    radius = jnp.where(jnp.arange(n0 + n1) < n0, 1.0, factor)
    x = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return _add_noise(noise_key, x, noise), _binary_labels(n0, n1)


def noisy_sine(key: jax.Array, n: int = 100, noise: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """One-dimensional regression: `t = sin(x) + noise * eps` with x uniform in [-pi, pi].

    Args:
      key: a `jax.random` key.
      n: number of examples.
      noise: standard deviation of the Gaussian noise `eps` on the target.

    Returns:
      `x` of shape (n, 1) and `t` of shape (n, 1).
    """
    _check_key("key", key)
    n, noise = positive_int("n", n), _noise(noise)
    x_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(x_key, (n, 1), jnp.float32, minval=-jnp.pi, maxval=jnp.pi)
    return x, _add_noise(noise_key, jnp.sin(x), noise)


def multi_label(key: jax.Array, n: int = 200, noise: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Points in the plane with three independent binary labels.

    Labels, in column order: `x1 > 0`, `x2 > 0`, `x1**2 + x2**2 < 1`.
    Each label is its own sigmoid output (the multi-label sum of binary
    cross-entropies), not one class out of three.

    Args:
      key: a `jax.random` key.
      n: number of examples.
      noise: standard deviation of Gaussian noise added to the points after
        labelling, which blurs the three boundaries.

    Returns:
      `x` of shape (n, 2), uniform in [-1.5, 1.5]^2 before noise, and `t`
      of shape (n, 3) of 0 / 1.
    """
    _check_key("key", key)
    n, noise = positive_int("n", n), _noise(noise)
    x_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(x_key, (n, 2), jnp.float32, minval=-1.5, maxval=1.5)
    t = jnp.stack([x[:, 0] > 0, x[:, 1] > 0, jnp.sum(x**2, axis=1) < 1], axis=1)
    return _add_noise(noise_key, x, noise), t.astype(jnp.float32)


# ------------------------------------------------------- real data bundled in sklearn


def _sklearn_load(name: str, **kwargs):
    try:
        from sklearn import datasets as sklearn_datasets
    except ImportError as error:
        raise ImportError(
            f"purenet.datasets.{name}() needs scikit-learn: pip install 'purenet[experiments]'"
        ) from error
    x, t = getattr(sklearn_datasets, f"load_{name}")(return_X_y=True, **kwargs)
    all_finite(name, x)
    return jnp.asarray(x, jnp.float32), t


def digits() -> tuple[jax.Array, jax.Array]:
    """scikit-learn's handwritten digits: 1797 images of 8x8 pixels, 10 classes.

    The pixel counts (0 to 16) are divided by 16, so `x` lies in [0, 1].

    Returns:
      `x` float32 (1797, 64), row-major 8x8 images, and int32 labels (1797,).
    """
    x, t = _sklearn_load("digits")
    return x / 16, jnp.asarray(t, jnp.int32)


def iris() -> tuple[jax.Array, jax.Array]:
    """Fisher's iris: 150 flowers, 4 measurements in cm, 3 species.

    Returns:
      `x` float32 (150, 4) and int32 labels (150,) in {0, 1, 2}.
    """
    x, t = _sklearn_load("iris")
    return x, jnp.asarray(t, jnp.int32)


def breast_cancer() -> tuple[jax.Array, jax.Array]:
    """Wisconsin diagnostic breast cancer: 569 tumours, 30 features, 2 classes.

    Returns:
      `x` float32 (569, 30) and int32 labels (569,): 0 malignant, 1 benign.
    """
    x, t = _sklearn_load("breast_cancer")
    return x, jnp.asarray(t, jnp.int32)


def wine() -> tuple[jax.Array, jax.Array]:
    """Wine recognition: 178 wines, 13 chemical measurements, 3 cultivars.

    Returns:
      `x` float32 (178, 13) and int32 labels (178,) in {0, 1, 2}.
    """
    x, t = _sklearn_load("wine")
    return x, jnp.asarray(t, jnp.int32)


def diabetes() -> tuple[jax.Array, jax.Array]:
    """Diabetes progression: 442 patients, 10 raw baseline measurements.

    The features are unscaled (scikit-learn's `scaled=False`: age in years,
    sex coded 1 / 2, ...); the target is a measure of progression one year later.

    Returns:
      `x` float32 (442, 10) and `t` float32 (442, 1).
    """
    x, t = _sklearn_load("diabetes", scaled=False)
    return x, jnp.asarray(t, jnp.float32)[:, None]


# ----------------------------------------------------------------------- IDX files

# IDX type codes (http://yann.lecun.com/exdb/mnist/): data is big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIMS = 32  # numpy's limit before 2.0; no IDX data set comes near it


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format) into a NumPy array.

    Layout: two zero bytes; a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64); the number of dimensions `d`;
    `d` big-endian uint32 sizes; then the data, big-endian, row-major. The
    file is gunzipped first when its name ends in `.gz` or it starts with
    the gzip magic bytes. Values are returned as stored (no NaN check: this is
    a file reader; `load_mnist` checks what it loads).

    Args:
      path: file name (`str` or `os.PathLike`).

    Returns:
      Array of the stored shape and dtype, in native byte order.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not gzip although named `.gz`, bad magic number, unknown
        type code, or a length that does not match the header.
    """
    path = os.fspath(path)
    name = f"IDX file {path!r}"
    with open(path, "rb") as file:
        raw = file.read()
    if path.endswith(".gz") or raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            fail(name, "gzip-compressed data", f"{type(error).__name__}: {error}")
    if len(raw) < 4:
        fail(name, "a 4-byte magic number at least", f"{len(raw)} bytes")
    if raw[:2] != b"\x00\x00":
        fail(name, "a magic number starting with two zero bytes", f"0x{raw[:4].hex()}")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        fail(name, f"a type code in ({codes})", f"0x{code:02X}")
    if ndim > _MAX_DIMS:
        fail(name, f"at most {_MAX_DIMS} dimensions", ndim)
    header = 4 + 4 * ndim
    if len(raw) < header:
        fail(name, f"a header of {header} bytes for {ndim} dimensions", f"{len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else f"{len(raw) - expected} extra bytes"
        fail(name, f"{expected} bytes for shape {shape} of {dtype.name}", f"{len(raw)} ({problem})")
    data = np.frombuffer(raw, dtype, count=math.prod(shape), offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped when `path` ends in `.gz`.

    Args:
      path: file name (`str` or `os.PathLike`).
      array: array-like of dtype uint8, int8, int16, int32, float32 or float64
        (other dtypes have no IDX code: cast first).
    """
    path = os.fspath(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("=")) if array.dtype.kind in "uif" else None
    if code is None:
        fail("array", "dtype uint8, int8, int16, int32, float32 or float64", str(array.dtype))
    if any(size >= 2**32 for size in array.shape):
        fail("array", "dimensions below 2**32", f"shape {array.shape}")
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    payload = header + array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    if path.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)  # mtime=0: same array, same bytes
    with open(path, "wb") as file:
        file.write(payload)


def _find_idx(directory: str, name: str) -> str:
    for candidate in (f"{name}.gz", name):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"directory {directory!r}: expected {name}.gz or {name}, found neither")


def load_mnist(directory: str | os.PathLike, kind: str = "train") -> tuple[jax.Array, jax.Array]:
    """Read MNIST or Fashion-MNIST from the four standard IDX files.

    Looks in `directory` for `{kind}-images-idx3-ubyte` and
    `{kind}-labels-idx1-ubyte`, each gzipped (`.gz`, preferred) or raw.

    Args:
      directory: folder holding the files; `~` is expanded.
      kind: `"train"` (60000 examples) or `"t10k"` (10000).

    Returns:
      `x` float32 `(m, rows * cols)`, pixels divided by 255 into [0, 1],
      images flattened row-major (784 features for 28x28), and int32 labels `(m,)`.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: a malformed file, unexpected dtype or shape, or image and
        label counts that disagree.
    """
    one_of("kind", kind, ("train", "t10k"))
    directory = os.path.expanduser(os.fspath(directory))
    images_path = _find_idx(directory, f"{kind}-images-idx3-ubyte")
    labels_path = _find_idx(directory, f"{kind}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        fail(
            f"IDX file {images_path!r}",
            "uint8 images of shape (m, rows, cols)",
            f"{images.dtype} of shape {images.shape}",
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        fail(
            f"IDX file {labels_path!r}",
            "uint8 labels of shape (m,)",
            f"{labels.dtype} of shape {labels.shape}",
        )
    if len(images) != len(labels):
        fail(f"IDX file {labels_path!r}", f"{len(images)} labels, one per image", f"{len(labels)}")
    x = jnp.asarray(images.reshape(len(images), -1), jnp.float32) / 255
    return x, jnp.asarray(labels, jnp.int32)


# ------------------------------------------------------------------- family trees

_ENGLISH = (
    "Christopher", "Penelope", "Andrew", "Christine", "Margaret", "Arthur",
    "Victoria", "James", "Jennifer", "Charles", "Colin", "Charlotte",
)  # fmt: skip
_ITALIAN = (
    "Roberto", "Maria", "Pierro", "Francesca", "Gina", "Emilio",
    "Lucia", "Marco", "Angela", "Tomaso", "Alfonso", "Sophia",
)  # fmt: skip
_RELATIONSHIPS = (
    "father", "mother", "husband", "wife", "son", "daughter",
    "uncle", "aunt", "brother", "sister", "nephew", "niece",
)  # fmt: skip

# The facts of Fig. 2, for one tree, by position in _ENGLISH (the Italian tree
# is the same facts on _ITALIAN): 0 Christopher, 1 Penelope, 2 Andrew,
# 3 Christine, 4 Margaret, 5 Arthur, 6 Victoria, 7 James, 8 Jennifer,
# 9 Charles, 10 Colin, 11 Charlotte. Everything else is derived from these.
_FEMALE = (False, True, False, True, True, False, True, False, True, False, False, True)
_COUPLES = ((0, 1), (2, 3), (5, 4), (7, 6), (9, 8))  # (husband, wife)
_CHILDREN = {(0, 1): (5, 6), (2, 3): (7, 8), (7, 6): (10, 11)}  # couple -> children
_GENERATION = (1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3)
# 0: Christopher and Penelope's side (they, their children Arthur and Victoria,
# and Margaret, who married Arthur); 1: Andrew and Christine's side (they,
# James and Jennifer, and Charles, who married Jennifer); 0.5: Colin and
# Charlotte, grandchildren of both couples.
_BRANCH = (0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0.5, 0.5)


def _one_tree_relations() -> dict[tuple[int, str], frozenset[int]]:
    """`{(person1, relationship): {person2, ...}}` for one tree, derived from the facts."""
    people = range(len(_FEMALE))
    spouse = {h: w for h, w in _COUPLES} | {w: h for h, w in _COUPLES}
    parents = {c: couple for couple, kids in _CHILDREN.items() for c in kids}
    children = {p: set() for p in people}
    for couple, kids in _CHILDREN.items():
        for parent in couple:
            children[parent].update(kids)

    def siblings(p):
        return {q for q in people if q != p and p in parents and parents.get(q) == parents[p]}

    def uncles_and_aunts(p):
        blood = {s for parent in parents.get(p, ()) for s in siblings(parent)}
        return blood | {spouse[s] for s in blood if s in spouse}

    def nephews_and_nieces(p):
        return {q for q in people if p in uncles_and_aunts(q)}

    # (male relationship, female relationship, the people they pick from by sex)
    kinds = (
        ("father", "mother", lambda p: set(parents.get(p, ()))),
        ("husband", "wife", lambda p: {spouse[p]} if p in spouse else set()),
        ("son", "daughter", lambda p: children[p]),
        ("uncle", "aunt", uncles_and_aunts),
        ("brother", "sister", siblings),
        ("nephew", "niece", nephews_and_nieces),
    )
    relations = {}
    for male_name, female_name, candidates in kinds:
        for p in people:
            for name, female in ((male_name, False), (female_name, True)):
                answers = frozenset(q for q in candidates(p) if _FEMALE[q] == female)
                if answers:
                    relations[(p, name)] = answers
    return relations


class FamilyTrees(NamedTuple):
    """The family-trees task of Rumelhart, Hinton and Williams (1986); see `family_trees`.

    People are indices into `people`, relationships indices into
    `relationships`; row `q` of `queries`, `person1`, `relationship`
    and `targets` is the same query.
    """

    people: tuple[str, ...]  # 24 names: English 0-11, then Italian 12-23 in the same order
    relationships: tuple[str, ...]  # 12 names
    triples: jax.Array  # int32 (112, 3): (person1, relationship, person2)
    queries: jax.Array  # int32 (104, 2): (person1, relationship), each with >= 1 answer
    targets: jax.Array  # float32 (104, 24): 1 for every correct person2
    person1: jax.Array  # float32 (104, 24): one-hot of queries[:, 0]
    relationship: jax.Array  # float32 (104, 12): one-hot of queries[:, 1]
    nationality: jax.Array  # float32 (24,): 0 English, 1 Italian
    generation: jax.Array  # float32 (24,): 1 oldest, 2, 3 youngest
    branch: jax.Array  # float32 (24,): 0, 1, or 0.5 for the third generation
    sex: jax.Array  # float32 (24,): 0 male, 1 female
    isomorphism: jax.Array  # int32 (24,): each person's counterpart in the other tree


def family_trees() -> FamilyTrees:
    """The two isomorphic family trees of Rumelhart, Hinton and Williams (1986).

    "Learning representations by back-propagating errors", Nature 323, 533-536,
    Fig. 2 (the same trees are in Hinton 1986, "Learning distributed
    representations of concepts"). An English and an Italian tree of 12 people
    each, three generations, related by 12 relationships: father, mother,
    husband, wife, son, daughter, uncle, aunt, brother, sister, nephew, niece.
    A triple `(person1, relationship, person2)` reads "person2 is the
    relationship of person1": (Colin, aunt, Jennifer) is "Colin has aunt Jennifer".

    English: Christopher = Penelope and Andrew = Christine; their children
    Arthur and Victoria, and James and Jennifer; Arthur = Margaret,
    Victoria = James, Jennifer = Charles; Victoria and James's children Colin
    and Charlotte. Italian, person for person: Roberto = Maria, Pierro =
    Francesca, Gina = Emilio, Lucia = Marco, Angela = Tomaso, Alfonso, Sophia
    (Christopher -> Roberto, Penelope -> Maria, Andrew -> Pierro, Christine ->
    Francesca, Margaret -> Gina, Arthur -> Emilio, Victoria -> Lucia, James ->
    Marco, Jennifer -> Angela, Charles -> Tomaso, Colin -> Alfonso,
    Charlotte -> Sophia).

    The relations are derived from the tree's facts (sex, marriages, children),
    not typed in: brother / sister share both parents; uncle / aunt is a
    parent's brother / sister or that sibling's spouse (Margaret is Colin's
    aunt by marriage); nephew / niece are the inverse of uncle / aunt.

    Counts: each tree has 52 (person1, relationship) queries with at least one
    answer (father 6, mother 6, husband 5, wife 5, son 6, daughter 6, uncle 2,
    aunt 2, brother 3, sister 3, nephew 4, niece 4), 104 in all: the paper's
    "104 possible triples", each of which has a target vector with "every
    correct person 2" on. Colin and Charlotte have two uncles and two aunts
    each, so those 4 queries per tree have two answers and there are
    52 + 4 = 56 triples per tree, 112 in all (the count of a triple list with
    one answer per line, as in the UCI "Kinship" data). Every other query has
    exactly one answer.

    Attributes for the analysis of Fig. 4 (float32, so they correlate
    directly with weights): `nationality` 0 English / 1 Italian;
    `generation` 1 (Christopher, Penelope, Andrew, Christine), 2, 3 (Colin,
    Charlotte); `sex` 0 male / 1 female; `branch` 0 for Christopher and
    Penelope's side of the family (they, Arthur, Victoria, and Margaret, who
    married Arthur), 1 for Andrew and Christine's side (they, James, Jennifer,
    and Charles, who married Jennifer), 0.5 for Colin and Charlotte, who
    descend from both (the Italian tree likewise, by the isomorphism).

    Returns:
      A `FamilyTrees` NamedTuple (a pytree):

      * `people`: 24 names, the English tree (indices 0-11) then the
        Italian one (12-23) in isomorphic order, so person `i < 12` and
        `i + 12` correspond;
      * `relationships`: the 12 names, in the order above;
      * `triples`: int32 (112, 3), `(person1, relationship, person2)`,
        sorted;
      * `queries`: int32 (104, 2), `(person1, relationship)`, sorted;
      * `targets`: float32 (104, 24), 1 for every correct person2 of each
        query (one or two ones per row);
      * `person1`, `relationship`: float32 one-hot inputs (104, 24) and
        (104, 12), the two input groups of the paper's network (Fig. 3);
      * `nationality`, `generation`, `branch`, `sex`: float32 (24,);
      * `isomorphism`: int32 (24,), each person's counterpart in the other
        tree (`isomorphism[:12]` maps English to Italian; it is its own
        inverse).

    `load("family_trees")` returns this structure, not `(x, t)`; the
    network's inputs and targets are `person1`, `relationship` and
    `targets`. `family_trees_split` draws the paper's 100 / 4 partitions.
    """
    n = len(_ENGLISH)
    relations = _one_tree_relations()
    triples = sorted(
        (p + offset, _RELATIONSHIPS.index(name), q + offset)
        for offset in (0, n)
        for (p, name), answers in relations.items()
        for q in answers
    )
    queries = sorted({(p, r) for p, r, _ in triples})
    row = {query: i for i, query in enumerate(queries)}
    targets = np.zeros((len(queries), 2 * n), np.float32)
    for p, r, q in triples:
        targets[row[(p, r)], q] = 1
    queries = np.asarray(queries, np.int32)
    eye = np.eye(2 * n, dtype=np.float32)

    def both_trees(values):
        return jnp.asarray(np.tile(np.asarray(values, np.float32), 2))

    return FamilyTrees(
        people=_ENGLISH + _ITALIAN,
        relationships=_RELATIONSHIPS,
        triples=jnp.asarray(triples, jnp.int32),
        queries=jnp.asarray(queries),
        targets=jnp.asarray(targets),
        person1=jnp.asarray(eye[queries[:, 0]]),
        relationship=jnp.asarray(eye[queries[:, 1], : len(_RELATIONSHIPS)]),
        nationality=jnp.repeat(jnp.arange(2, dtype=jnp.float32), n),
        generation=both_trees(_GENERATION),
        branch=both_trees(_BRANCH),
        sex=both_trees(_FEMALE),
        isomorphism=jnp.asarray((np.arange(2 * n) + n) % (2 * n), jnp.int32),
    )


_N_FAMILY_QUERIES = 104


def family_trees_split(key: jax.Array, n_test: int = 4) -> tuple[jax.Array, jax.Array]:
    """A random partition of the 104 family-trees queries into training and test rows.

    The paper trained on 100 of the 104 queries and tested on the other 4;
    a different key gives a different 4. A query is held out whole, with all
    its answers (both of Colin's aunts, say). Works under `jit` / `vmap`
    over keys (`n_test` is static).

    Args:
      key: a `jax.random` key.
      n_test: number of queries held out, in [1, 103].

    Returns:
      `(train, test)`: int32 row indices into `family_trees()`'s
      `queries` / `targets` / `person1` / `relationship`, each sorted,
      of lengths `104 - n_test` and `n_test`, together every row once.

    Example:

    ```python
    ft = datasets.family_trees()
    train, test = datasets.family_trees_split(jax.random.key(0))
    x_train = (ft.person1[train], ft.relationship[train]); t_train = ft.targets[train]
    ```
    """
    _check_key("key", key)
    n_test = positive_int("n_test", n_test)
    if n_test >= _N_FAMILY_QUERIES:
        fail("n_test", f"an integer in [1, {_N_FAMILY_QUERIES - 1}]", repr(n_test))
    order = jax.random.permutation(key, _N_FAMILY_QUERIES).astype(jnp.int32)
    return jnp.sort(order[n_test:]), jnp.sort(order[:n_test])


# ------------------------------------------------------------------------ dispatcher

_DATASETS = {
    f.__name__: f
    for f in (
        xor,
        noisy_xor,
        parity,
        mirror_symmetry,
        two_spirals,
        moons,
        circles,
        noisy_sine,
        multi_label,
        digits,
        iris,
        breast_cancer,
        wine,
        diabetes,
        family_trees,
    )
}
_DATASETS["mnist"] = load_mnist


def load(name: str, **kwargs: Any) -> tuple[jax.Array, jax.Array] | FamilyTrees:
    """Load a data set by name: `load("moons", key=key, n=500)` is `moons(key, n=500)`.

    Args:
      name: one of the data set functions of this module (`"xor"`,
        `"two_spirals"`, `"digits"`, ...) or `"mnist"` for `load_mnist`.
        `"family_trees"` gives its `FamilyTrees` structure, not `(x, t)`.
      **kwargs: passed on to that function.

    Returns:
      `(x, t)` as documented by that function.
    """
    one_of("name", name, _DATASETS)
    return _DATASETS[name](**kwargs)
