"""Loading a GGUF model with llama.cpp so that it runs on every CPU this project meets.

On Xeons with AMX (Sapphire Rapids and later) llama.cpp repacks Q4_K weights
into an AMX buffer, and its first matmul there segfaults (ggml-org/llama.cpp
#20824, open; dspy dropped the AMX build for the same crash). A segfault takes
the camera loop down with it, so on those CPUs the model loads without
llama.cpp's extra buffer types: the weights stay in the plain CPU buffer and
its AVX-512 kernels run them. Elsewhere nothing changes.
"""

from __future__ import annotations

import contextlib
import functools
import threading

_LOADING = threading.Lock()  # the defaults are swapped for one construction at a time


def load_llama(**kwargs):
    """``llama_cpp.Llama(**kwargs)``, with the AMX repacking off where this CPU has AMX."""
    from llama_cpp import Llama

    if not has_amx():
        return Llama(**kwargs)
    with _LOADING, _without_extra_buffers():
        return Llama(**kwargs)


@functools.cache
def has_amx() -> bool:
    """Whether llama.cpp's CPU backend would take AMX here (its own system report says so)."""
    import llama_cpp

    return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(errors="replace")


@contextlib.contextmanager
def _without_extra_buffers():
    """llama-cpp-python builds the model parameters from ``llama_model_default_params`` inside ``Llama()`` and
    takes no argument for ``use_extra_bufts``; the defaults it reads carry it off for the construction."""
    import llama_cpp.llama_cpp as low

    defaults = low.llama_model_default_params

    def plain_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = plain_buffers
    try:
        yield
    finally:
        low.llama_model_default_params = defaults
