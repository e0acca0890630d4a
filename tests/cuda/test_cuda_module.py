"""ember._cuda built, with or without a GPU: the module's answers and the errors a user sees.

These need the CUDA module compiled (EMBER_CUDA=ON; CI compiles it without a GPU, .ci/cuda.sh)
but no device, so they carry no `cuda` marker (that marker means "needs a CUDA device"). Tests
of what happens without a device skip where one exists, and the reverse.
"""
import os
import subprocess
import sys

import pytest

import ember
from ember.errors import EmberError

_cuda = pytest.importorskip("ember._cuda", reason="ember was built without its CUDA module "
                                                  "(EMBER_CUDA=OFF or no nvcc at build time)")

HAS_DEVICE = _cuda.device_count() > 0
needs_no_device = pytest.mark.skipif(HAS_DEVICE, reason="a CUDA device is present")
needs_device = pytest.mark.skipif(not HAS_DEVICE, reason="no CUDA device")


@pytest.fixture
def model(make_model):
    return make_model("Relu", inputs=[("x", "float32", [2, 3])], outputs=["y"])


def test_module_and_wrapper_agree():
    count = _cuda.device_count()
    assert isinstance(count, int) and count >= 0
    assert ember.cuda.device_count() == count
    assert ember.cuda.is_available() is (count > 0)


@needs_no_device
def test_no_device_counts_zero_and_says_why():
    assert _cuda.device_count() == 0
    reason = _cuda.unavailable_reason()
    assert isinstance(reason, str) and reason.strip()


@needs_device
def test_device_has_no_unavailable_reason():
    assert _cuda.unavailable_reason() == ""


@needs_no_device
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_engine_on_cuda_without_device_raises_the_reason(model, device):
    reason = _cuda.unavailable_reason()
    with pytest.raises(EmberError) as info:
        ember.Engine(model, device=device)
    assert reason in str(info.value)
    assert "no CUDA device" in str(info.value)


@needs_no_device
def test_allocator_stats_without_device_raises():
    with pytest.raises(EmberError, match=r"no device cuda:0"):
        _cuda.allocator_stats(0)


@needs_device
def test_engine_on_a_missing_ordinal_names_the_count(model):
    count = _cuda.device_count()
    with pytest.raises(EmberError, match=rf"no device cuda:{count}: {count} present"):
        ember.Engine(model, device=f"cuda:{count}")


@pytest.mark.parametrize("device", ["cuda:x", "gpu", "cuda:", "CUDA", "cuda:-1", "cuda:0:1", " cuda",
                                    "cuda0", "", None, 0])
def test_bad_device_strings_raise(model, device):
    with pytest.raises(EmberError, match=r"device must be"):
        ember.Engine(model, device=device)


@pytest.mark.parametrize("name", ["cuda:x", "cuda:", "cuda:-1", "gpu:0"])
def test_cuda_device_rejects_bad_names(name):
    with pytest.raises(EmberError, match=r"\[cuda\] device must be 'cuda' or 'cuda:N'"):
        ember.cuda.device(name)


def test_load_cublaslt_bad_path_names_it_and_the_fix():
    """Run in a fresh process: cuBLASLt, once loaded (by an earlier GPU test), stays loaded and
    every later call says ok. EMBER_CUBLASLT is cleared so only the default paths follow ours."""
    path = "/nonexistent/libcublasLt.so.13"
    env = {k: v for k, v in os.environ.items() if k != "EMBER_CUBLASLT"}
    code = ("import sys, ember._cuda as c; ok, err = c.load_cublaslt(sys.argv[1]); "
            "print(int(ok)); print(err)")
    res = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    ok, _, err = res.stdout.partition("\n")
    if ok == "1":
        pytest.skip("cuBLASLt 13 loads from a default path on this machine, after the bad one")
    assert ok == "0"
    assert path in err
    assert "pip install nvidia-cublas" in err
    assert "EMBER_CUBLASLT" in err
