"""The compiler's environment a measurement job sets before torch is imported."""

import os

from qbench.compile_env import set_defaults


def test_defaults_are_set_and_a_users_value_wins(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK", "1")  # the user's choice
    got = set_defaults(str(tmp_path / "inductor"))
    assert got == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK": "1"}
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    monkeypatch.delenv("TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK")
    assert set_defaults("rel")["TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK"] == "0"
