"""How many OpenMP/BLAS threads the model's commands run on (`--threads`)."""

from collections.abc import Iterator
from contextlib import contextmanager

# Loaded here, not lazily: threadpool_limits limits only the OpenMP runtimes already loaded, and
# sklearn's trees predict on OpenMP threads; a limit set before sklearn loads does not reach
# them (predict 0.9 s -> 263 s at 100k under load, two spinning threads per process).
import sklearn.ensemble  # noqa: F401
from threadpoolctl import threadpool_limits


@contextmanager
def model_threads(n: int) -> Iterator[None]:
    """Run the block on at most `n` OpenMP/BLAS threads. One is the default on shared hosts:
    spin-waiting collapses under CPU contention, and more processes (workers) are how this scales."""
    with threadpool_limits(limits=n):
        yield
