"""``recsys bench-index --factories``: which settings each factory string is tried at, cheapest
first, so the one reported is the cheapest that holds recall."""

from __future__ import annotations

import faiss

from benchmarks.index_kinds import K_FACTORS, settings
from index.recall import SWEEP


def _index(spec: str) -> faiss.Index:
    return faiss.index_factory(8, spec, faiss.METRIC_INNER_PRODUCT)


def test_ivf_settings_are_the_builds_sweep_up_to_nlist_in_order() -> None:
    assert settings(_index("IVF16,Flat"), "IVF16,Flat") == [f"nprobe={v}" for v in SWEEP if v <= 16]


def test_a_refine_stage_tries_each_depth_under_each_nprobe() -> None:
    got = settings(_index("IVF4,PQ4x4fsr,RFlat"), "IVF4,PQ4x4fsr,RFlat")
    want = [f"nprobe={v},k_factor_rf={f}" for v in SWEEP if v <= 4 for f in K_FACTORS]
    assert got == want
    index = _index("IVF4,PQ4x4fsr,RFlat")
    faiss.ParameterSpace().set_index_parameters(index, got[-1])  # type: ignore[arg-type]  # str overload missing from the stubs
    assert faiss.downcast_index(index).k_factor == K_FACTORS[-1]  # type: ignore[attr-defined]  # IndexRefineFlat's
    assert faiss.extract_index_ivf(index).nprobe == 4


def test_hnsw_tries_efsearch_from_k_and_flat_has_nothing_to_tune() -> None:
    assert settings(_index("HNSW8,Flat"), "HNSW8,Flat") == [
        f"efSearch={v}" for v in SWEEP if v >= 10
    ]
    assert settings(_index("Flat"), "Flat") == [""]
