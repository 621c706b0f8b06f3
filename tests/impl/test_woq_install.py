"""impl.install(): chained after the user's post-grad pass, idempotent, undoable, cache friendly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

import impl
from impl import compat
from impl.install import HOOK, InstalledPasses, is_installed
from impl.passes.woq_fusion import counter_key
from impl.schemes import dequantize_int8, quantize_int8


class RecordingPass(CustomGraphPass):
    """A user's pass: records, each time it runs, whether the graph still holds a region."""

    def __init__(self, tag: str = "user") -> None:
        self.tag = tag
        self.saw_region: list[bool] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        self.saw_region.append("impl_invoke_quant" in str(graph))

    def uuid(self) -> bytes:
        return get_hash_for_files((__file__,), extra=self.tag)


@pytest.fixture(autouse=True)
def _clean_hook():
    with inductor_config.patch({HOOK: None}):
        yield


def test_install_chains_after_the_user_pass_and_uninstall_restores_it():
    user = RecordingPass()
    setattr(inductor_config, HOOK, user)
    installed = impl.install()
    assert getattr(inductor_config, HOOK) is installed and installed.previous is user
    assert impl.install() is installed  # idempotent: not chained twice
    assert impl.uninstall() is True
    assert getattr(inductor_config, HOOK) is user
    assert impl.uninstall() is False  # nothing of ours left; the user's pass stays
    assert getattr(inductor_config, HOOK) is user


def test_uninstall_leaves_a_pass_set_after_install_alone():
    impl.install()
    later = RecordingPass("later")
    setattr(inductor_config, HOOK, later)
    assert impl.uninstall() is False
    assert getattr(inductor_config, HOOK) is later


def test_installed_context_manager_restores_the_previous_value():
    user = RecordingPass()
    setattr(inductor_config, HOOK, user)
    with impl.installed() as passes:
        assert is_installed() and passes.previous is user
    assert getattr(inductor_config, HOOK) is user


def test_uuid_is_stable_and_keyed_by_the_previous_passes():
    assert InstalledPasses().uuid() == InstalledPasses().uuid()
    assert InstalledPasses(RecordingPass("a")).uuid() == InstalledPasses(RecordingPass("a")).uuid()
    assert InstalledPasses(RecordingPass("a")).uuid() != InstalledPasses(RecordingPass("b")).uuid()
    assert InstalledPasses(RecordingPass("a")).uuid() != InstalledPasses().uuid()
    # A plain function has no uuid: the FX graph cache must be bypassed, as without us.
    assert InstalledPasses(lambda graph: None).uuid() is None


def test_a_list_of_previous_passes_runs_in_order():
    first, second = RecordingPass("1"), RecordingPass("2")
    graph = torch.fx.Graph()
    graph.output(None)
    InstalledPasses([first, second])(graph)
    assert first.saw_region == [False] and second.saw_region == [False]


@pytest.mark.skipif(compat.inference_aware_pass_type() is None, reason="this torch has no CustomInferenceAwareGraphPass")
def test_an_inference_aware_previous_pass_gets_is_inference():
    seen = []

    class Aware(compat.inference_aware_pass_type()):
        def __call__(self, graph, is_inference):
            seen.append(is_inference)

        def uuid(self):
            return b"aware"

    graph = torch.fx.Graph()
    graph.output(None)
    InstalledPasses(Aware())(graph, is_inference=True)
    assert seen == [True]


def _int8_linear():
    torch.manual_seed(0)
    weight = quantize_int8(torch.randn(32, 64))

    def fn(x):
        return F.linear(x, dequantize_int8(weight, x.dtype))

    return fn, torch.randn(3, 64)


def test_user_pass_sees_the_unfused_graph_then_ours_fuses_and_the_cache_hits(tmp_path, monkeypatch):
    """One program compiled twice with the FX graph cache on: the first compile runs the
    user's pass (on the region) and our fusion; the second is a cache hit (no pass runs)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    fn, x = _int8_linear()
    user = RecordingPass()
    setattr(inductor_config, HOOK, user)
    impl.install()
    expected = fn(x)
    with inductor_config.patch(fx_graph_cache=True, force_disable_caches=False):
        from torch._inductor.utils import fresh_cache

        with fresh_cache():
            for attempt in range(2):
                torch._dynamo.reset()
                counters.clear()
                torch.testing.assert_close(torch.compile(fn)(x), expected, rtol=1e-5, atol=1e-5)
                if attempt == 0:
                    # Inductor also runs post-grad passes over the region's body (no region there).
                    assert user.saw_region.count(True) == 1
                    runs = len(user.saw_region)
                    assert counters["inductor"][counter_key("int8_weight_only", "matcher_count")] == 1
                    assert counters["inductor"]["fxgraph_cache_miss"] == 1
                else:
                    assert counters["inductor"]["fxgraph_cache_hit"] == 1
                    assert len(user.saw_region) == runs  # a hit runs no pass


def test_without_install_the_program_runs_unfused():
    fn, x = _int8_linear()
    torch._dynamo.reset()
    counters.clear()
    with inductor_config.patch(force_disable_caches=True):
        torch.testing.assert_close(torch.compile(fn)(x), fn(x), rtol=1e-5, atol=1e-5)
    assert counter_key("int8_weight_only", "matcher_count") not in counters["inductor"]


# --------------------------------------------------------------------------- compiled in the block, run after it
#
# torch.compile is lazy: Dynamo and Inductor run at the first call, not at torch.compile().
# What was compiled inside ``with impl.installed():`` keeps our passes for every compile it
# does later, after the block included (a recompile for a new batch size too).


def _fused() -> int:
    return counters["inductor"][counter_key("int8_weight_only", "matcher_count")]


@pytest.fixture
def _fresh():
    torch._dynamo.reset()
    counters.clear()
    with inductor_config.patch(force_disable_caches=True):
        yield
    torch._dynamo.reset()


def test_compiled_in_the_block_and_first_called_after_it_fuses(_fresh):
    fn, x = _int8_linear()
    with impl.installed():
        compiled = torch.compile(fn)
    assert getattr(inductor_config, HOOK) is None  # the global hook is restored all the same
    torch.testing.assert_close(compiled(x), fn(x), rtol=1e-5, atol=1e-5)
    assert _fused() == 1


def test_a_recompile_after_the_block_still_fuses(_fresh):
    """Batch 3 compiled inside the block, batch 8 after it: Dynamo recompiles (automatic
    dynamic M) and that graph is fused too, so the model is not half fused."""
    fn, x = _int8_linear()
    with impl.installed():
        compiled = torch.compile(fn)
        torch.testing.assert_close(compiled(x), fn(x), rtol=1e-5, atol=1e-5)
    assert _fused() == 1
    x8 = torch.randn(8, x.shape[1])
    torch.testing.assert_close(compiled(x8), fn(x8), rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 2  # it did recompile
    assert _fused() == 2


def test_a_module_compiled_in_the_block_with_options_keeps_them_and_the_user_pass(_fresh):
    """``nn.Module.compile`` goes through torch.compile too; the user's own options stay, a
    pass the user gave in ``options`` runs first and ours after it."""
    fn, x = _int8_linear()

    class Model(torch.nn.Module):
        def forward(self, x):
            return fn(x)

    user = RecordingPass()
    model = Model()
    with impl.installed():
        model.compile(options={HOOK: user, "epilogue_fusion": False})
    torch.testing.assert_close(model(x), fn(x), rtol=1e-5, atol=1e-5)
    assert user.saw_region.count(True) == 1 and _fused() == 1


def test_the_block_leaves_torch_compile_as_it_was():
    original = torch.compile
    with impl.installed():
        assert torch.compile is not original
        with impl.installed():  # nested: one set of passes, restored in order
            pass
        with pytest.raises(RuntimeError, match="Either mode or options"):
            torch.compile(lambda x: x, mode="max-autotune", options={"max_autotune": True})
        # Another backend gets no Inductor options.
        torch.compile(lambda x: x, backend="aot_eager")
    assert torch.compile is original


def test_a_mode_becomes_its_options_next_to_the_passes():
    """torch.compile takes mode or options, not both: inside the block a mode is handed on as
    the options it stands for, with the passes added; other backends are untouched."""
    from torch._inductor import list_mode_options

    from impl.install import compile_with_passes

    calls = []

    def record(model=None, **kwargs):
        calls.append(kwargs)
        return model

    passes = impl.install()
    compile_fn = compile_with_passes(record)
    compile_fn(len, mode="max-autotune-no-cudagraphs", dynamic=True)
    assert calls[-1]["mode"] is None
    assert calls[-1]["options"] == {**list_mode_options("max-autotune-no-cudagraphs", True), HOOK: passes}
    compile_fn(len, backend="aot_eager", mode="max-autotune")
    assert calls[-1] == {"backend": "aot_eager", "mode": "max-autotune"}
    # A pass patched into the hook inside the block runs first, ours after it.
    user = RecordingPass()
    with inductor_config.patch({HOOK: user}):
        compile_fn(len)
    assert isinstance(calls[-1]["options"][HOOK], InstalledPasses) and calls[-1]["options"][HOOK].previous is user
