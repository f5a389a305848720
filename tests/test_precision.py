"""pldrop.precision: native-bf16 detection and the fp32 / bf16 / auto rule."""

import pytest
import torch

from pldrop import precision


def test_explicit_choices_ignore_hardware(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve_precision("bf16", "cpu", 32) == "bf16"
    assert precision.resolve_precision("fp32", "cpu", 4096) == "fp32"


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_hardware_and_width(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    wide, narrow = precision.CPU_BF16_MIN_HIDDEN, precision.CPU_BF16_MIN_HIDDEN - 1
    assert precision.resolve_precision("auto", "cpu", wide) == ("bf16" if native else "fp32")
    assert precision.resolve_precision("auto", "cpu", narrow) == "fp32"  # casts cost more than they save
    assert precision.resolve_precision("auto", torch.device("cpu"), 768) == ("bf16" if native else "fp32")


def test_bad_choice_names_the_value():
    with pytest.raises(ValueError, match="precision='fp16'.*fp32, bf16, auto"):
        precision.resolve_precision("fp16", "cpu", 768)


@pytest.mark.parametrize("flags,cap,expected", [
    ({"avx2", "avx512_bf16"}, "AVX512", True),
    ({"avx2", "amx_bf16", "amx_tile"}, "AVX512", True),
    ({"avx2", "avx512f"}, "AMX", True),  # torch's own capability query
    ({"avx2", "avx512f"}, "AVX512", False),
    (set(), "DEFAULT", False),
])
def test_native_bf16_on_cpu_reads_the_flags(monkeypatch, flags, cap, expected):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: cap)
    assert precision.native_bf16("cpu") is expected


def test_native_bf16_on_cuda_asks_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for answer in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda answer=answer: answer)
        assert precision.native_bf16(torch.device("cuda")) is answer
        assert precision.resolve_precision("auto", "cuda", 64) == ("bf16" if answer else "fp32")


def test_autocast_context_runs_matmuls_in_bf16():
    a = torch.randn(4, 4)
    with precision.autocast("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with precision.autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
