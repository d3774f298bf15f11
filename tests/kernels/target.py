"""What the CPU Numba compiles for can do, asked of LLVM. Tests of instruction selection decide what to expect
from the compile target, which ``NUMBA_CPU_NAME`` and ``NUMBA_CPU_FEATURES`` may set to another CPU than the
host's (code for an older CPU runs on a newer one, so the whole kernel suite can run for it)."""

import platform
import re

import llvmlite.binding as llvm
import numba  # noqa: F401  (sets up LLVM and numba.config from the environment)
from numba import config
from numba.core.codegen import get_host_cpu_features

_ADD_8_INT32 = """
define <8 x i32> @probe(<8 x i32> %a, <8 x i32> %b) {
  %sum = add <8 x i32> %a, %b
  ret <8 x i32> %sum
}
"""
_FMA_8_FLOAT32 = """
declare <8 x float> @llvm.fma.v8f32(<8 x float>, <8 x float>, <8 x float>)
define <8 x float> @probe(<8 x float> %a, <8 x float> %b, <8 x float> %c) {
  %r = call <8 x float> @llvm.fma.v8f32(<8 x float> %a, <8 x float> %b, <8 x float> %c)
  ret <8 x float> %r
}
"""


def target_assembly(ir_text: str) -> str:
    """The assembly LLVM makes of an IR module for the CPU and features Numba compiles for (the host's,
    unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say otherwise, as in numba.core.codegen)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    cpu = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    machine = target.create_target_machine(cpu=cpu, features=features, opt=3)
    module = llvm.parse_assembly(ir_text)
    module.verify()
    return machine.emit_assembly(module)


def is_x86_64() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def target_has_avx2() -> bool:
    """Whether Numba's target has AVX2: only then is an add of 8 int32s one instruction on a 256-bit (ymm)
    register (AVX alone splits it into two 128-bit halves, SSE into two xmm adds)."""
    return is_x86_64() and re.search(r"vpaddd\s[^\n]*%ymm", target_assembly(_ADD_8_INT32)) is not None


def target_has_fma() -> bool:
    """Whether Numba's target has x86 FMA: only then is a fused multiply-add of 8 float32s one vfmadd."""
    return is_x86_64() and re.search(r"vfmadd\d+ps\s", target_assembly(_FMA_8_FLOAT32)) is not None
