"""What the processor can do fast, as oneDNN will be allowed to use it."""

from __future__ import annotations

import pytest

from element_lightning_pose.engine import hardware

XEON = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"})


@pytest.mark.parametrize(
    ("cap", "bf16", "int8", "signature"),
    [
        (None, True, True, "amx_bf16+amx_int8+avx512_bf16+avx512_vnni+avx_vnni"),
        ("AVX2", False, False, "plain"),
        ("avx2_vnni", False, True, "avx_vnni"),
        ("AVX512_CORE_VNNI", False, True, "avx512_vnni+avx_vnni"),
        ("AVX512_CORE_BF16", True, True, "avx512_bf16+avx512_vnni+avx_vnni"),
        ("AVX10_1_512_AMX", True, True, "amx_bf16+amx_int8+avx512_bf16+avx512_vnni+avx_vnni"),
        ("NOT_AN_ISA", True, True, "amx_bf16+amx_int8+avx512_bf16+avx512_vnni+avx_vnni"),
    ],
)
def test_a_onednn_isa_cap_removes_the_fast_paths_above_it(monkeypatch, cap, bf16, int8, signature):
    """An AMX Xeon with oneDNN capped at AVX2 is an AVX2 CPU for the precision choice: bf16
    there is emulated and far slower than fp32, so ``auto`` must not take it as native."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: XEON)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert hardware.native_bf16("cpu") is bf16
    assert hardware.fast_int8("cpu") is int8
    assert hardware.device_signature("cpu").endswith(":" + signature)


def test_the_older_variable_name_caps_too(monkeypatch):
    """oneDNN also reads DNNL_MAX_CPU_ISA, in any case (checked: bf16 ran emulated under both)."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: XEON)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx2")
    assert not hardware.native_bf16("cpu") and not hardware.fast_int8("cpu")
