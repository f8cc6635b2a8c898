"""The retiring torch APIs we still use on purpose: their warnings, said once in a line of ours.

torch 2.13 deprecates torch.jit (TorchScript) and torch.ao.quantization, and warns on every call.
We keep building TorchScript and its dynamic INT8 variants (the design asks for them), so a user
hears it once, with what replaces them, instead of a warning per export, load and layer.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

logger = logging.getLogger(__name__)

TORCHSCRIPT_RETIRING = ("TorchScript (model.pt) rests on torch.jit, which torch 2.13 deprecates; servekit still builds it "
                        "and silences torch's warnings. Its successor is model.pt2 (torch.export + AOTInductor): "
                        "see docs/formats.md.")
AO_QUANTIZATION_RETIRING = ("TorchScript dynamic INT8 rests on torch.ao.quantization, which torch 2.13 deprecates; its "
                            "successor for exported models is PT2E INT8 from torchao (the aoti_pt2e_int8 variant).")
_said: set[str] = set()


def say_once(note: str) -> None:
    """Log ``note`` the first time only, in this process."""
    if note not in _said:
        _said.add(note)
        logger.warning(note)


def quiet_torchscript() -> contextlib.AbstractContextManager[None]:
    """Inside: torch.jit's deprecation warnings are ignored; the first use says TORCHSCRIPT_RETIRING once."""
    return _said_once_then_quiet(TORCHSCRIPT_RETIRING, r"`torch\.jit\.")


def quiet_ao_quantization() -> contextlib.AbstractContextManager[None]:
    """Inside: torch.ao.quantization's deprecation warnings are ignored; said once as AO_QUANTIZATION_RETIRING."""
    return _said_once_then_quiet(AO_QUANTIZATION_RETIRING, r"torch\.ao\.quantization is deprecated")


@contextlib.contextmanager
def _said_once_then_quiet(note: str, message: str) -> Iterator[None]:
    say_once(note)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        yield


@contextlib.contextmanager
def quiet_inductor() -> Iterator[None]:
    """Inductor's own code touches torch.jit and pytree APIs that torch deprecates, and its INT8 lowering copies
    tensors in a way torch warns about: nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec")
        warnings.filterwarnings("ignore", message=r"To copy construct from a tensor", module=r"torch\._inductor")
        yield
