"""harness.plugin.separate_inductor_cache_per_cpu_capability: a run under ATEN_CPU_CAPABILITY
never shares Inductor's cache with runs under another capability (a graph compiled under
one and loaded under the other gave NaN and SIGABRT on an AVX-512 host, torch 2.13)."""

from __future__ import annotations

import os

from harness.plugin import separate_inductor_cache_per_cpu_capability


def test_a_capability_gets_a_cache_directory_of_its_own(monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "AVX2")
    chosen = separate_inductor_cache_per_cpu_capability()
    assert chosen is not None and chosen.endswith("-avx2")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == chosen


def test_the_default_capability_and_a_chosen_directory_are_left_alone(monkeypatch, tmp_path):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert separate_inductor_cache_per_cpu_capability() is None
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    assert separate_inductor_cache_per_cpu_capability() is None
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
