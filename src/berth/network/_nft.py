"""libnftables through ctypes: one batch of nft commands is one kernel transaction.

In-process because exec'ing ``nft`` for every container costs a process start; a batch
through the library takes 0.1-1.4 ms here.
"""

from __future__ import annotations

import ctypes
import json
import threading
from typing import Any

from berth import errdefs

_LIBRARY = "libnftables.so.1"

#: ``NFT_CTX_OUTPUT_*`` flags of <nftables/libnftables.h>
_OUTPUT_HANDLE = 1 << 3
_OUTPUT_JSON = 1 << 4


class Nftables:
    """One libnftables context; :meth:`run` is safe to call from any thread."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(_LIBRARY, use_errno=True)
        except OSError as e:
            raise errdefs.System(
                "nftables is not available: install Debian's nftables (make install does)"
            ) from e
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.restype = ctypes.c_int
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.restype = ctypes.c_int
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise errdefs.System("nftables: cannot create a context")
        if lib.nft_ctx_buffer_output(ctx) != 0 or lib.nft_ctx_buffer_error(ctx) != 0:
            lib.nft_ctx_free(ctx)
            raise errdefs.System("nftables: cannot buffer the output")
        self._lib = lib
        self._ctx: int | None = ctx
        self._lock = threading.Lock()

    def run(self, commands: str, *, handles: bool = False) -> str:
        """Run ``commands`` (nft syntax, one per line) as one transaction; return the output.

        ``handles`` asks for ``# handle N`` in listings, which deleting a single rule needs.
        """
        return self._run(commands, _OUTPUT_HANDLE if handles else 0)

    def run_json(self, commands: str) -> Any:
        """Run a listing command and return its JSON document (``{"nftables": [...]}``)."""
        out = self._run(commands, _OUTPUT_JSON)
        return json.loads(out) if out.strip() else {"nftables": []}

    def _run(self, commands: str, flags: int) -> str:
        with self._lock:
            ctx = self._ctx
            if ctx is None:
                raise errdefs.System("nftables: the context is closed")
            self._lib.nft_ctx_output_set_flags(ctx, flags)
            rc = self._lib.nft_run_cmd_from_buffer(ctx, commands.encode())
            out: bytes | None = self._lib.nft_ctx_get_output_buffer(ctx)
            err: bytes | None = self._lib.nft_ctx_get_error_buffer(ctx)
            if flags:
                self._lib.nft_ctx_output_set_flags(ctx, 0)
        if rc != 0:
            text = (err or b"").decode(errors="replace").strip() or f"error {rc}"
            raise errdefs.System(f"nftables: {text}")
        return (out or b"").decode(errors="replace")

    def close(self) -> None:
        """Free the context; later calls to :meth:`run` raise."""
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

    def __enter__(self) -> Nftables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Nftables"]
