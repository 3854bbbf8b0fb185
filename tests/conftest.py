import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI explores a fixed set of examples, so a landing never hinges on a random
# draw; run locally without CI=true to explore new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

os.environ.setdefault("JAX_PLATFORMS", "cpu")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The workplace's shared/ folder beside the repo (skip when absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED


# Multi-device tests: a test marked `devices(n)` needs n JAX devices. When
# this process has fewer (the usual single-CPU-device run), it is skipped
# here and the module's `test_on_simulated_devices` runs the marked tests in
# a child pytest with n simulated CPU devices (XLA_FLAGS must be set before
# JAX starts, so it cannot be done in this process); the child's pytest
# report, assertions included, is shown when it fails.


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "devices(n): needs n JAX devices (run in a child pytest with n simulated "
                   "CPU devices when this process has fewer)")


def pytest_collection_modifyitems(config, items):
    import jax  # pylint: disable=g-import-not-at-top
    have = jax.device_count()
    for item in items:
        mark = item.get_closest_marker("devices")
        if mark is not None and have < mark.args[0]:
            item.add_marker(pytest.mark.skip(
                reason=f"needs {mark.args[0]} devices; run by test_on_simulated_devices"))


def run_on_simulated_devices(module: str, n: int, timeout: int = 900) -> None:
    """Runs the `devices`-marked tests of `module` in a child pytest with n CPU devices."""
    import jax  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    if jax.device_count() >= n:
        pytest.skip(f"this process already has {jax.device_count()} devices")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-m", "devices", module], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=Path(__file__).resolve().parents[1])
    report = out.stdout[-12000:] + out.stderr[-3000:]
    assert out.returncode == 0, f"child pytest with {n} devices failed:\n{report}"
    assert " passed" in out.stdout and " skipped" not in out.stdout.splitlines()[-1], report
