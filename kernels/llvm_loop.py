"""The counted loop of the kernels' LLVM IR tiles (gemm.py, intdot.py, tiles.py): values carried through it in
phi nodes, so that LLVM keeps them in registers across iterations (a tile's accumulators)."""

from llvmlite import ir

_I64 = ir.IntType(64)


def counted_loop(builder, start, end, step, initial: dict, body, name: str) -> dict:
    """Emit ``for k in range(start, end, step)`` (i64 values; not entered when start >= end), carrying the IR
    values ``initial`` (key -> value) from one iteration to the next: ``body(k, carried)`` emits one iteration
    and returns the updated values (same keys). Leaves the builder after the loop and returns the values
    there: those of the last iteration, or ``initial`` when the loop did not run. ``body`` must not branch."""
    entry = builder.block
    loop = builder.append_basic_block(name)
    done = builder.append_basic_block(name + "_done")
    builder.cbranch(builder.icmp_signed("<", start, end), loop, done)

    builder.position_at_end(loop)
    k = builder.phi(_I64)
    carried = {key: builder.phi(value.type) for key, value in initial.items()}
    updated = body(k, carried)
    k_next = builder.add(k, step)
    k.add_incoming(start, entry)
    k.add_incoming(k_next, loop)
    for key, value in initial.items():
        carried[key].add_incoming(value, entry)
        carried[key].add_incoming(updated[key], loop)
    builder.cbranch(builder.icmp_signed("<", k_next, end), loop, done)

    builder.position_at_end(done)
    final = {key: builder.phi(value.type) for key, value in initial.items()}  # phis first in their block
    for key, value in initial.items():
        final[key].add_incoming(value, entry)
        final[key].add_incoming(updated[key], loop)
    return final
