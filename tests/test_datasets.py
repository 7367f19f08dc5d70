"""Specification of purenet.datasets: synthetic tasks, bundled real data, IDX files."""

import gzip
import itertools
import os
import socket
import struct
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from purenet import datasets

KEY = jax.random.key(0)
N = 41  # one size throughout, so each eager operation compiles once for the whole file

# Generators called as f(key, n=...); targets have one column unless listed here.
KEYED_BINARY = [
    datasets.noisy_xor,
    datasets.two_spirals,
    datasets.moons,
    datasets.circles,
]
KEYED = [*KEYED_BINARY, datasets.noisy_sine, datasets.multi_label]
TARGET_COLUMNS = {datasets.multi_label: 3}


# ------------------------------------------------------------------ exhaustive tasks


def test_xor_is_the_four_patterns():
    x, t = datasets.xor()
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(t, [[0], [1], [1], [0]])
    assert x.dtype == t.dtype == jnp.float32


@pytest.mark.parametrize("n_bits", [1, 2, 3, 6])
def test_parity_has_all_patterns_and_half_of_them_positive(n_bits):
    x, t = datasets.parity(n_bits)
    assert x.shape == (2**n_bits, n_bits) and t.shape == (2**n_bits, 1)
    assert len({tuple(row) for row in np.asarray(x)}) == 2**n_bits
    assert int(t.sum()) == 2 ** (n_bits - 1)
    np.testing.assert_array_equal(t[:, 0], np.asarray(x).sum(axis=1) % 2)


def test_mirror_symmetry_has_exactly_8_positives_of_64():
    x, t = datasets.mirror_symmetry()
    assert x.shape == (64, 6) and t.shape == (64, 1)
    assert int(t.sum()) == 8
    for row, target in zip(np.asarray(x, int), np.asarray(t[:, 0]), strict=True):
        assert target == (list(row) == list(row[::-1]))
    assert int(datasets.mirror_symmetry(5)[1].sum()) == 8  # 2 ** ceil(5 / 2)


@pytest.mark.parametrize("f", [datasets.parity, datasets.mirror_symmetry])
@pytest.mark.parametrize("n_bits", [0, 21, 2.0])
def test_bit_tasks_refuse_bad_sizes(f, n_bits):
    with pytest.raises(ValueError, match="n_bits: expected"):
        f(n_bits)


# ------------------------------------------------------------------ keyed generators


@pytest.mark.parametrize("f", KEYED, ids=lambda f: f.__name__)
def test_generator_shapes_dtypes_and_targets(f):
    x, t = f(KEY, n=N)
    assert x.dtype == t.dtype == jnp.float32  # even with jax_enable_x64 on (conftest)
    assert x.shape[0] == t.shape[0] == N and x.ndim == t.ndim == 2
    assert t.shape[1] == TARGET_COLUMNS.get(f, 1)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(t))
    if f is not datasets.noisy_sine:
        assert set(np.unique(t)) <= {0.0, 1.0}


# noisy_xor draws its corners at random, so its classes are not split evenly.
@pytest.mark.parametrize("f", KEYED_BINARY[1:], ids=lambda f: f.__name__)
def test_binary_generators_split_the_classes_evenly(f):
    _, t = f(KEY, n=N)
    assert int(t.sum()) == N // 2  # n // 2 in class 1, n - n // 2 in class 0


@pytest.mark.parametrize("f", KEYED, ids=lambda f: f.__name__)
def test_generators_same_key_same_data_different_key_different(f):
    x1, t1 = f(KEY, n=N)
    x2, t2 = f(jax.random.key(0), n=N)
    x3, _ = f(jax.random.key(1), n=N)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize("f", KEYED, ids=lambda f: f.__name__)
def test_generators_refuse_bad_arguments(f):
    with pytest.raises(ValueError, match="key: expected a single jax.random key"):
        f(0, n=N)
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        f(KEY, n=0)
    for noise in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise: expected"):
            f(KEY, n=N, noise=noise)


def test_noise_free_geometry():
    x, t = datasets.circles(KEY, n=N, noise=0.0, factor=0.3)
    radius = np.linalg.norm(np.asarray(x), axis=1)
    np.testing.assert_allclose(radius, np.where(np.asarray(t[:, 0]) == 1, 0.3, 1.0), rtol=1e-5)

    x, t = datasets.moons(KEY, n=N, noise=0.0)
    upper = np.asarray(x)[np.asarray(t[:, 0]) == 0]
    np.testing.assert_allclose(np.linalg.norm(upper, axis=1), 1.0, rtol=1e-5)
    assert np.all(upper[:, 1] >= 0)

    x, t = datasets.two_spirals(KEY, n=N, noise=0.0)
    radius = np.linalg.norm(np.asarray(x), axis=1)
    assert np.all((radius >= 0.1 - 1e-6) & (radius <= 1.0 + 1e-6))

    x, t = datasets.noisy_sine(KEY, n=N, noise=0.0)
    assert np.all(np.abs(x) <= np.pi)
    np.testing.assert_allclose(t, np.sin(x), atol=1e-6)

    x, t = datasets.multi_label(KEY, n=N)
    x = np.asarray(x)
    expected = np.stack([x[:, 0] > 0, x[:, 1] > 0, (x**2).sum(axis=1) < 1], axis=1)
    np.testing.assert_array_equal(t, expected)


def test_circles_and_spirals_refuse_bad_shape_parameters():
    with pytest.raises(ValueError, match=r"factor: expected a number in \(0.0, 1.0\)"):
        datasets.circles(KEY, n=N, factor=1.0)
    with pytest.raises(ValueError, match="turns: expected"):
        datasets.two_spirals(KEY, n=N, turns=0)
    with pytest.raises(ValueError, match="n: expected an integer >= 2"):
        datasets.moons(KEY, n=1)


# ------------------------------------------------------------------------ real data


@pytest.mark.parametrize(
    "f, shape, classes",
    [
        (datasets.digits, (1797, 64), 10),
        (datasets.iris, (150, 4), 3),
        (datasets.breast_cancer, (569, 30), 2),
        (datasets.wine, (178, 13), 3),
    ],
    ids=["digits", "iris", "breast_cancer", "wine"],
)
def test_bundled_classification_sets(f, shape, classes):
    x, labels = f()
    assert x.shape == shape and x.dtype == jnp.float32
    assert labels.shape == (shape[0],) and labels.dtype == jnp.int32
    np.testing.assert_array_equal(np.unique(labels), np.arange(classes))


def test_digits_pixels_are_divided_by_16():
    x, _ = datasets.digits()
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(np.asarray(x) * 16, np.round(np.asarray(x) * 16))


def test_diabetes_is_regression_with_raw_features():
    x, t = datasets.diabetes()
    assert x.shape == (442, 10) and t.shape == (442, 1)
    assert x.dtype == t.dtype == jnp.float32
    assert set(np.unique(x[:, 1])) == {1.0, 2.0}  # sex, unscaled


def test_bundled_sets_are_read_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a data set tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for f in (datasets.digits, datasets.iris, datasets.breast_cancer, datasets.wine):
        f()
    datasets.diabetes()


def test_missing_scikit_learn_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    with pytest.raises(
        ImportError, match=r"needs scikit-learn: pip install 'purenet\[experiments\]'"
    ):
        datasets.iris()


# ---------------------------------------------------------------------------- load


def test_load_dispatches_by_name():
    x, t = datasets.load("moons", key=KEY, n=N, noise=0.2)
    x2, t2 = datasets.moons(KEY, n=N, noise=0.2)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(t, t2)
    assert datasets.load("mirror_symmetry")[0].shape == (64, 6)
    assert datasets.load("iris")[0].shape == (150, 4)


def test_load_refuses_unknown_names_and_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"name: expected one of \[.*'mnist'.*'two_spirals'.*got 'spiral'"
    ):
        datasets.load("spiral")


# ----------------------------------------------------------------------- IDX files

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def idx_bytes(code, shape, payload):
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, code, len(shape), *shape) + payload


def test_read_idx_follows_the_published_layout(tmp_path):
    # Written byte by byte, independently of write_idx: two int16 rows, big-endian.
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(0x0B, (2, 3), np.arange(-3, 3, dtype=">i2").tobytes()))
    array = datasets.read_idx(path)
    assert array.dtype == np.int16 and array.dtype.isnative
    np.testing.assert_array_equal(array, [[-3, -2, -1], [0, 1, 2]])


@pytest.mark.parametrize(
    "dtype, shape, suffix",
    list(itertools.product(IDX_DTYPES, [(5,), (3, 4), (2, 3, 4), (0, 7)], [".idx", ".idx.gz"])),
    ids=str,
)
def test_idx_round_trip(tmp_path, dtype, shape, suffix):
    array = (np.arange(np.prod(shape)).reshape(shape) - 3).astype(dtype)
    path = tmp_path / f"a{suffix}"
    datasets.write_idx(path, array)
    back = datasets.read_idx(str(path))
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_gzip_is_recognised_by_its_magic_bytes(tmp_path):
    path = tmp_path / "images"  # no .gz suffix
    path.write_bytes(gzip.compress(idx_bytes(0x08, (2,), b"\x07\x09")))
    np.testing.assert_array_equal(datasets.read_idx(path), [7, 9])


@settings(max_examples=25, deadline=None)
@given(
    array=hnp.arrays(
        st.sampled_from(IDX_DTYPES),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    gz=st.booleans(),
)
def test_idx_round_trip_property(array, gz):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "a.idx.gz" if gz else "a.idx")
        datasets.write_idx(path, array)
        back = datasets.read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)  # NaN == NaN here


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x00\x00", r"expected a 4-byte magic number at least, got 2 bytes"),
        (b"\x01\x00\x08\x01" + bytes(8), r"expected a magic number starting with two zero bytes"),
        (idx_bytes(0x0A, (1,), b"\x00"), r"expected a type code in \(0x08, .*\), got 0x0A"),
        (b"\x00\x00\x08\x02" + bytes(6), r"expected a header of 12 bytes for 2 dimensions"),
        (idx_bytes(0x0C, (2, 2), bytes(15)), r"expected 28 bytes .*got 27 \(truncated\)"),
        (idx_bytes(0x08, (3,), bytes(5)), r"expected 11 bytes .*got 13 \(2 extra bytes\)"),
    ],
    ids=["short", "magic", "type-code", "header", "truncated", "extra-bytes"],
)
def test_read_idx_refuses_malformed_files_and_names_them(tmp_path, content, match):
    for path, payload in (
        (tmp_path / "bad.idx", content),
        (tmp_path / "bad.gz", gzip.compress(content)),
    ):
        path.write_bytes(payload)
        with pytest.raises(ValueError, match=f"IDX file '{path}': {match}"):
            datasets.read_idx(path)


def test_read_idx_refuses_missing_files_and_broken_gzip(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        datasets.read_idx(tmp_path / "missing.idx")
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (4,), bytes(4)))[:-6])
    with pytest.raises(ValueError, match="broken.gz': expected gzip-compressed data"):
        datasets.read_idx(path)


@pytest.mark.parametrize(
    "array", [np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.float16)]
)
def test_write_idx_refuses_types_without_an_idx_code(tmp_path, array):
    with pytest.raises(ValueError, match="array: expected dtype uint8, int8, int16, int32"):
        datasets.write_idx(tmp_path / "a.idx", array)


# --------------------------------------------------------------------------- MNIST


def write_mnist(directory, kind, m, gz, labels_m=None):
    images = (np.arange(m * 28 * 28) % 256).astype(np.uint8).reshape(m, 28, 28)
    labels = (np.arange(m if labels_m is None else labels_m) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    datasets.write_idx(directory / f"{kind}-images-idx3-ubyte{suffix}", images)
    datasets.write_idx(directory / f"{kind}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("kind, gz", [("train", True), ("t10k", False)])
def test_load_mnist_reads_the_standard_files(tmp_path, kind, gz):
    images, labels = write_mnist(tmp_path, kind, 5, gz)
    x, t = datasets.load_mnist(tmp_path, kind=kind)
    assert x.shape == (5, 784) and x.dtype == jnp.float32
    assert t.shape == (5,) and t.dtype == jnp.int32
    np.testing.assert_allclose(x, images.reshape(5, 784) / 255, rtol=1e-6)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    np.testing.assert_array_equal(t, labels)
    x2, _ = datasets.load("mnist", directory=str(tmp_path), kind=kind)
    np.testing.assert_array_equal(x, x2)


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz or train-images-idx3"):
        datasets.load_mnist(tmp_path)
    write_mnist(tmp_path, "train", 5, gz=False, labels_m=4)
    with pytest.raises(
        ValueError, match="train-labels-idx1-ubyte': expected 5 labels, one per image, got 4"
    ):
        datasets.load_mnist(tmp_path)
    with pytest.raises(ValueError, match=r"kind: expected one of \['t10k', 'train'\], got 'test'"):
        datasets.load_mnist(tmp_path, kind="test")
    datasets.write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 4), np.uint8))
    datasets.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(m, rows, cols\)"):
        datasets.load_mnist(tmp_path, kind="t10k")


# ---------------------------------------------------------------------- family trees

FAMILY = datasets.family_trees()


def family_triples(ft=FAMILY):
    return {tuple(row) for row in np.asarray(ft.triples).tolist()}


def answers(name, relationship, ft=FAMILY):
    """Names of every person2 of (name, relationship), from the triples."""
    p, r = ft.people.index(name), ft.relationships.index(relationship)
    return {ft.people[q] for p1, r1, q in family_triples(ft) if (p1, r1) == (p, r)}


def test_family_trees_counts_shapes_and_dtypes():
    ft = FAMILY
    assert len(ft.people) == len(set(ft.people)) == 24
    assert ft.relationships == (
        "father", "mother", "husband", "wife", "son", "daughter",
        "uncle", "aunt", "brother", "sister", "nephew", "niece",
    )  # fmt: skip
    assert ft.triples.shape == (112, 3) and ft.queries.shape == (104, 2)
    assert ft.targets.shape == ft.person1.shape == (104, 24)
    assert ft.relationship.shape == (104, 12)
    assert ft.triples.dtype == ft.queries.dtype == ft.isomorphism.dtype == jnp.int32
    for array in (ft.targets, ft.person1, ft.relationship, ft.nationality, ft.generation):
        assert array.dtype == jnp.float32  # even with jax_enable_x64 on (conftest)
    for array in (ft.nationality, ft.generation, ft.branch, ft.sex, ft.isomorphism):
        assert array.shape == (24,)
    assert ft.branch.dtype == ft.sex.dtype == jnp.float32
    assert len(family_triples()) == 112  # no duplicates
    # 52 queries and 56 triples per tree; 4 queries per tree (Colin's and
    # Charlotte's uncles and aunts) have two answers, every other one has one.
    english = np.asarray(ft.queries[:, 0]) < 12
    assert english.sum() == 52 and (np.asarray(ft.triples[:, 0]) < 12).sum() == 56
    per_query = np.asarray(ft.targets).sum(axis=1)
    assert set(per_query.tolist()) == {1.0, 2.0} and (per_query == 2).sum() == 8


def test_family_trees_relations_of_figure_2():
    assert answers("Colin", "aunt") == {"Jennifer", "Margaret"}  # "Colin has two aunts"
    assert answers("Colin", "uncle") == {"Arthur", "Charles"}
    assert answers("Penelope", "husband") == {"Christopher"}
    assert answers("Arthur", "father") == {"Christopher"}
    assert answers("Arthur", "mother") == {"Penelope"}
    assert answers("Arthur", "wife") == {"Margaret"}
    assert answers("Victoria", "brother") == {"Arthur"}
    assert answers("Christopher", "son") == {"Arthur"}
    assert answers("Christopher", "daughter") == {"Victoria"}
    assert answers("Margaret", "nephew") == {"Colin"}  # aunt by marriage
    assert answers("Charles", "niece") == {"Charlotte"}
    assert answers("Charlotte", "brother") == {"Colin"}
    assert answers("Sophia", "aunt") == {"Angela", "Gina"}
    assert answers("Maria", "husband") == {"Roberto"}
    assert answers("Emilio", "father") == {"Roberto"}
    assert answers("Christopher", "uncle") == set()  # no answer: not a query
    assert answers("Christopher", "wife") == {"Penelope"}
    # No relation crosses from one tree to the other.
    assert all((p < 12) == (q < 12) for p, _, q in family_triples())


def test_family_trees_isomorphism_maps_triples_onto_triples():
    ft = FAMILY
    iso = np.asarray(ft.isomorphism)
    np.testing.assert_array_equal(iso[iso], np.arange(24))  # its own inverse
    assert [ft.people[i] for i in iso[:12]] == [
        "Roberto", "Maria", "Pierro", "Francesca", "Gina", "Emilio",
        "Lucia", "Marco", "Angela", "Tomaso", "Alfonso", "Sophia",
    ]  # fmt: skip
    triples = family_triples()
    mapped = {(int(iso[p]), r, int(iso[q])) for p, r, q in triples}
    assert mapped == triples  # English -> Italian and Italian -> English
    for attribute in (ft.generation, ft.branch, ft.sex):
        np.testing.assert_array_equal(attribute[iso], attribute)
    np.testing.assert_array_equal(ft.nationality, np.repeat([0.0, 1.0], 12))


def test_family_trees_inverse_relations_agree():
    ft = FAMILY
    triples = family_triples()
    rel = {name: i for i, name in enumerate(ft.relationships)}
    sex = np.asarray(ft.sex)
    child = {0.0: rel["son"], 1.0: rel["daughter"]}
    for p, r, q in triples:
        name = ft.relationships[r]
        assert sex[q] == (name in ("mother", "wife", "daughter", "aunt", "sister", "niece"))
        if name in ("husband", "wife"):
            assert (q, rel["wife" if name == "husband" else "husband"], p) in triples
        if name in ("father", "mother"):
            assert (q, child[sex[p]], p) in triples
        if name in ("son", "daughter"):
            assert (q, rel["mother" if sex[p] else "father"], p) in triples
        if name in ("brother", "sister"):
            assert (q, rel["sister" if sex[p] else "brother"], p) in triples
        if name in ("uncle", "aunt"):
            assert (q, rel["niece" if sex[p] else "nephew"], p) in triples
        if name in ("nephew", "niece"):
            assert (q, rel["aunt" if sex[p] else "uncle"], p) in triples


def test_family_trees_targets_and_inputs_are_the_triples():
    ft = FAMILY
    queries = np.asarray(ft.queries)
    assert len({tuple(q) for q in queries.tolist()}) == 104
    from_targets = {
        (int(p), int(r), int(q))
        for (p, r), row in zip(queries, np.asarray(ft.targets), strict=True)
        for q in np.flatnonzero(row)
    }
    assert from_targets == family_triples()
    assert set(np.unique(ft.targets).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(np.argmax(ft.person1, axis=1), queries[:, 0])
    np.testing.assert_array_equal(np.argmax(ft.relationship, axis=1), queries[:, 1])
    np.testing.assert_array_equal(np.asarray(ft.person1).sum(axis=1), 1)
    np.testing.assert_array_equal(np.asarray(ft.relationship).sum(axis=1), 1)


def test_family_trees_attributes():
    ft = FAMILY

    def by_name(attribute):
        return {name: float(v) for name, v in zip(ft.people, attribute, strict=True)}

    generation, branch, sex = by_name(ft.generation), by_name(ft.branch), by_name(ft.sex)
    assert [n for n in ft.people[:12] if generation[n] == 1] == [
        "Christopher", "Penelope", "Andrew", "Christine"
    ]  # fmt: skip
    assert [n for n in ft.people[:12] if generation[n] == 3] == ["Colin", "Charlotte"]
    assert [n for n in ft.people[:12] if branch[n] == 0] == [
        "Christopher", "Penelope", "Margaret", "Arthur", "Victoria"
    ]  # fmt: skip
    assert [n for n in ft.people[:12] if branch[n] == 1] == [
        "Andrew", "Christine", "James", "Jennifer", "Charles"
    ]  # fmt: skip
    assert branch["Colin"] == branch["Sophia"] == 0.5
    assert sex["Penelope"] == sex["Gina"] == 1 and sex["Colin"] == sex["Tomaso"] == 0
    # Every couple is a man and a woman of one generation and one tree.
    for p, r, q in family_triples():
        if ft.relationships[r] in ("husband", "wife"):
            assert generation[ft.people[p]] == generation[ft.people[q]]
            assert sex[ft.people[p]] != sex[ft.people[q]]


def test_family_trees_is_a_pytree_and_loads_by_name():
    leaves = jax.tree_util.tree_leaves(FAMILY)
    assert all(isinstance(leaf, jax.Array | str) for leaf in leaves)
    loaded = datasets.load("family_trees")
    assert isinstance(loaded, datasets.FamilyTrees)
    np.testing.assert_array_equal(loaded.targets, FAMILY.targets)


def test_family_trees_split_partitions_the_queries():
    train, test = datasets.family_trees_split(KEY)
    assert train.shape == (100,) and test.shape == (4,)
    assert train.dtype == test.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(104))
    assert np.all(np.diff(np.asarray(test)) > 0) and np.all(np.diff(np.asarray(train)) > 0)
    again = datasets.family_trees_split(jax.random.key(0))
    np.testing.assert_array_equal(again[1], test)
    other = datasets.family_trees_split(jax.random.key(1))
    assert not np.array_equal(other[1], test)
    train, test = datasets.family_trees_split(KEY, n_test=10)
    assert train.shape == (94,) and test.shape == (10,)
    # One split per key under vmap, as for many seeds at once.
    tests = jax.vmap(datasets.family_trees_split)(jax.random.split(KEY, 3))[1]
    assert tests.shape == (3, 4)
    np.testing.assert_array_equal(
        tests[0], datasets.family_trees_split(jax.random.split(KEY, 3)[0])[1]
    )


def test_family_trees_split_refuses_bad_arguments():
    with pytest.raises(ValueError, match="key: expected a single jax.random key"):
        datasets.family_trees_split(0)
    for n_test in (0, 104, 2.0):
        with pytest.raises(ValueError, match="n_test: expected"):
            datasets.family_trees_split(KEY, n_test=n_test)
