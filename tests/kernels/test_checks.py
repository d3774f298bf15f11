"""kernels.checks holds one check per kernel, under the kernel's name and with its parameters, so a caller can
call the check with the very arguments it passes the kernel. (Each kernel's test file calls the kernel through
``checked``: every valid call there passes the check too; the bad-argument tests call the checks alone.)"""

import inspect

import pytest

from tinygpt.kernels import activations, checks, matmul, norm, quantized, softmax
from tinygpt.kernels.attention import attention, packed_attention, paged_attention

KERNELS = [
    matmul.linear,
    matmul.linear_nt,
    quantized.linear_nt_int8,
    quantized.quantize_rows,
    quantized.quantize_columns,
    norm.layer_norm,
    attention,
    paged_attention,
    packed_attention,
    softmax.cross_entropy,
    activations.gelu_new,
]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda kernel: kernel.__name__)
def test_every_kernel_has_a_check_with_its_parameters(kernel):
    check = getattr(checks, kernel.__name__)
    kernel_parameters = inspect.signature(kernel).parameters
    check_parameters = inspect.signature(check).parameters
    assert list(check_parameters) == list(kernel_parameters)
    assert [p.kind for p in check_parameters.values()] == [p.kind for p in kernel_parameters.values()]
    assert [p.default for p in check_parameters.values()] == [p.default for p in kernel_parameters.values()]
