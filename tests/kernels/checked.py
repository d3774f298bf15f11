"""Kernels called the way a caller with arrays it did not build calls them: after their check."""

from tinygpt.kernels import checks


def checked(kernel):
    """``kernel`` preceded by ``checks.<its name>`` with the same arguments. A test calling it with valid
    arguments shows the check accepts them as well as what the kernel makes of them."""
    check = getattr(checks, kernel.__name__)

    def call(*args, **options):
        check(*args, **options)
        return kernel(*args, **options)

    return call
