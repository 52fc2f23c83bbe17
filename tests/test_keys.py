"""Record keys are built and parsed in latephase.keys only; round trips."""

from __future__ import annotations

import pytest

from latephase.keys import Key, layers_of, parse_key, record_key, splits_of

EST = ("kl_knn", "cmi_ksg", "nhsic")


@pytest.mark.parametrize("key, parsed", [
    ("train/acc", Key("train", "acc")),
    ("val/rnc1_mean", Key("val", "rnc1_mean")),
    ("test/cmi_ksg/izx_se", Key("test", "izx_se", "", "cmi_ksg")),
    ("test/hidden.1/nc1", Key("test", "nc1", "hidden.1")),
    ("test/hidden.1/nhsic/zx", Key("test", "zx", "hidden.1", "nhsic")),
])
def test_round_trip(key: str, parsed: Key) -> None:
    assert parse_key(key, EST) == parsed
    assert str(parsed) == key == record_key(parsed.split, parsed.measure, parsed.layer,
                                            parsed.estimator)


def test_unsplit_keys_and_listing() -> None:
    assert parse_key("step") is None and parse_key("weight_norm") is None
    keys = ["step", "train/acc", "val/acc", "val/blocks.0/nc1", "holdout/kl_knn/izx"]
    assert splits_of(keys) == ["train", "val", "holdout"]
    assert layers_of(keys, "val", EST) == ["blocks.0"]
    assert layers_of(keys, "holdout", EST) == []
