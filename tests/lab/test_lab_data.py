"""The lab's data loaders: real, complete and deterministic."""

import pytest
import torch

from rangerlab.lab.data import CHARSET, encode, load_digits, load_stdlib_text, stdlib_sources


def test_digits_are_the_whole_dataset_split_stratified():
    d = load_digits()
    assert len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == torch.float32
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert d.x_train.max() == 1.0  # pixel values 0..16 are scaled by 16, not clipped
    counts = torch.bincount(d.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 10% held out of each class


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_digits.__wrapped__(), load_digits.__wrapped__()
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    train = {tuple(x.flatten().tolist()) for x in a.x_train}
    overlap = sum(tuple(x.flatten().tolist()) in train for x in a.x_test)
    assert overlap < 5  # only the few duplicate images that occur in the dataset itself


def test_digits_rejects_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(1.5)


def test_stdlib_text_is_real_english_and_deterministic():
    text = load_stdlib_text.__wrapped__(20_000)
    assert len(text) == 20_000
    assert text == load_stdlib_text.__wrapped__(20_000)
    assert set(text) <= set(CHARSET)
    words = text.lower().split()
    assert words.count("the") > 100  # English prose, not code
    assert text.count("def ") < 20


def test_stdlib_sources_skip_tests():
    files = stdlib_sources()
    assert len(files) > 100
    assert not any("test" in p.parts for p in files)


def test_stdlib_text_rejects_bad_length():
    with pytest.raises(ValueError, match="max_chars"):
        load_stdlib_text(0)


def test_encode_maps_into_charset():
    ids = encode("ab\n\u00e9")
    assert ids.tolist() == [
        CHARSET.index("a"),
        CHARSET.index("b"),
        CHARSET.index("\n"),
        CHARSET.index(" "),
    ]
