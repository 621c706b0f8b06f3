"""Our kernels survive being copied into Inductor's output code.

Inductor embeds a user-defined kernel, with every JIT function and global constant it
reaches, as the text of a ``'''...'''`` literal in the module it writes
(``user_defined_triton_kernel_transitive_closure_source_code``); torch 2.11 escapes only
``'''`` there, not backslashes. A ``"\\n"`` in a PTX string then becomes a real newline inside
a one-line string and the module fails to import (the H200 run: "unterminated string
literal" for ``woq_mm_nf4_kernel``). This renders each kernel's source the way Inductor does
and compiles the result as Python, on the CPU.

Runs in a subprocess without ``TRITON_INTERPRET`` so the kernels are ``JITFunction``s, as
under Inductor on a GPU (other tests switch this process to the interpreter).
"""

from __future__ import annotations


import pytest

pytest.importorskip("triton", reason="the kernels need triton")

from tests.impl.compiled_kernels_support import run_with_compiled_kernels  # noqa: E402

KERNELS = ("woq_mm_int8_kernel", "woq_mm_int4_kernel", "woq_mm_nf4_kernel", "woq_mm_int4_gemv_kernel",
           "woq_mm_nf4_gemv_kernel", "dequantize_int8_kernel", "dequantize_int4_kernel", "dequantize_nf4_kernel")

_RENDER = r"""
import json, sys
from torch._inductor.codegen.wrapper import user_defined_triton_kernel_transitive_closure_source_code as closure
from impl.kernels import woq_mm_int4, woq_mm_int8, woq_mm_nf4
kernels = {"woq_mm_int8_kernel": woq_mm_int8.woq_mm_int8_kernel,
           "woq_mm_int4_kernel": woq_mm_int4.woq_mm_int4_kernel,
           "woq_mm_nf4_kernel": woq_mm_nf4.woq_mm_nf4_kernel,
           "woq_mm_int4_gemv_kernel": woq_mm_int4.woq_mm_int4_gemv_kernel,
           "woq_mm_nf4_gemv_kernel": woq_mm_nf4.woq_mm_nf4_gemv_kernel,
           "dequantize_int8_kernel": woq_mm_int8.dequantize_int8_kernel,
           "dequantize_int4_kernel": woq_mm_int4.dequantize_int4_kernel,
           "dequantize_nf4_kernel": woq_mm_nf4.dequantize_nf4_kernel}
json.dump({name: closure(k) for name, k in kernels.items()}, sys.stdout)
"""


@pytest.fixture(scope="module")
def rendered() -> dict:
    return run_with_compiled_kernels(_RENDER)


def as_inductor_writes_it(source: str) -> str:
    """The kernel text inside the module Inductor writes, escaped as torch 2.11 escapes it."""
    return "source = '''" + source.replace("'''", "\\'\\'\\'") + "'''\n"


def load_as_inductor_does(source: str, name: str) -> None:
    """Import the embedding module, then compile the kernel text it holds (what Inductor's
    compile worker does); raises SyntaxError or AssertionError where the copy breaks."""
    namespace: dict = {}
    exec(compile(as_inductor_writes_it(source), f"<inductor module for {name}>", "exec"), namespace)
    compile(namespace["source"], f"<{name} as copied>", "exec")
    assert namespace["source"] == source, "a character of the kernel's source changed meaning inside the literal"


@pytest.mark.parametrize("name", KERNELS)
def test_the_copied_source_is_unchanged_and_compiles(rendered: dict, name: str) -> None:
    source = rendered[name]
    assert f"def {name}(" in source
    load_as_inductor_does(source, name)


def test_the_check_catches_an_escaped_newline() -> None:
    """The check fails on the source shape that broke the nf4 kernel on the H200."""
    with pytest.raises(SyntaxError, match="unterminated string"):
        load_as_inductor_does('ASM = tl.constexpr("{\\n.reg .b32 t;\\n}")\n', "broken")
