"""Effect handlers pyromm's programs and objectives share.

:func:`shared` marks a deterministic computation of a program (the encoders, say) that a model and its guide
both need. Outside any handler it simply runs. Inside :class:`SharedComputations`, which every pyromm ELBO
and the trainer open around one evaluation of a model/guide pair, it runs once per key and later calls
return the same tensors, so the guide's encodings feed the model without a second forward pass.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable

from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import effectful

SHARED = "pyromm_shared"


def _compute(fn: Callable[[], Any]) -> Any:
    return fn()


_shared_op = effectful(_compute, type=SHARED)


def shared(name: str, key: tuple[Any, ...], fn: Callable[[], Any]) -> Any:
    """``fn()``, computed once per (``name``, identities of ``key``) inside :class:`SharedComputations`.

    ``fn`` must be deterministic given the objects of ``key`` (e.g. a module and a batch): the cached value is
    reused for as long as the handler is open.
    """
    return _shared_op(fn, name=name, infer={"key": (name, *(id(k) for k in key)), "owners": key})


class SharedComputations(Messenger):
    """Memoises :func:`shared` computations for the life of the context (one ELBO evaluation)."""

    def __enter__(self) -> "SharedComputations":
        self._values: dict[Hashable, Any] = {}
        return super().__enter__()

    def __exit__(self, *args: Any) -> Any:
        self._values = {}
        return super().__exit__(*args)

    def _pyro_pyromm_shared(self, msg) -> None:
        found = self._values.get(msg["infer"]["key"])
        if found is not None:
            msg["value"], msg["done"] = found[0], True

    def _pyro_post_pyromm_shared(self, msg) -> None:
        # the owners are kept with the value so that their ids cannot be reused while the entry lives
        self._values.setdefault(msg["infer"]["key"], (msg["value"], msg["infer"]["owners"]))
