"""The state file against the sample files pg_outbox_listen's unit tests read too
(test/unit/data/state/, test/unit/state_file_test.cpp): one format, two implementations."""
from __future__ import annotations

import json
import os

import pytest

from pg_outbox import _core

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "test", "unit", "data", "state")
EXPECTED = json.load(open(os.path.join(DATA, "expected.json")))["files"]


def test_every_sample_is_listed():
    files = sorted(f for f in os.listdir(DATA) if f.endswith(".state"))
    assert files == sorted(EXPECTED)
    assert sum(v is not None for v in EXPECTED.values()) >= 5 and sum(v is None for v in EXPECTED.values()) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(name, tmp_path):
    want = EXPECTED[name]
    path = os.path.join(DATA, name)
    if want is None:
        with pytest.raises(_core.StateFileError, match="corrupt"):
            _core.read_state_file(path)
        return
    st = _core.read_state_file(path)
    assert (st.pos, st.epoch, st.identity, st.version) == (want["pos"], want["epoch"], want["identity"], want["version"])
    if want["canonical"]:
        assert _core.format_state(st) == open(path, encoding="ascii").read()
    # written back (always version 2), it reads the same
    p = str(tmp_path / "s")
    _core.write_state_file(p, st, do_fsync=False)
    assert _core.read_state_file(p) == st
