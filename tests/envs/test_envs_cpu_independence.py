"""Every merpo env steps to the same bits whatever kernels numpy picks for the CPU.

numpy picks kernels by CPU at import, twice: its BLAS (OpenBLAS; ``OPENBLAS_CORETYPE``
overrides it), where an AVX-512 machine and an AVX2 one sum a product in another order,
and its own SIMD loops (``NPY_DISABLE_CPU_FEATURES`` turns them off), where e.g.
``np.power`` on AVX-512 rounds some results to the neighbouring float. A dataset stores
the envs' rewards and infos bit for bit (its content hash), so nothing an env returns may
depend on either. Each env runs the same seeded uniform actions in three processes: on
the CPU's own kernels, on OpenBLAS's plain SSE kernels, and with numpy's SIMD dispatch
off; every returned array must hash the same. Probes run beside them (a BLAS matrix
product; float32 exp and sin, which numpy vectorizes on AVX2 and AVX-512) show that the
processes did use different kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import merpo_envs

SCRIPT = r"""
import hashlib, json
import gymnasium as gym
import numpy as np
import merpo_envs

out = {}
for env_id in merpo_envs.env_ids():
    env = gym.make(env_id, task=merpo_envs.get_meta_info(env_id).tasks[-1])
    rng = np.random.default_rng(1)
    low, high = env.action_space.low, env.action_space.high
    fields = {}
    obs, _ = env.reset(seed=3)
    for _ in range(250):
        obs, reward, term, trunc, info = env.step(rng.uniform(low, high).astype(np.float32))
        step = {"observations": obs, "rewards": reward, "terminations": term}
        step.update({f"infos/{k}": v for k, v in info.items() if np.isscalar(v)})
        for key, value in step.items():
            fields.setdefault(key, hashlib.sha256()).update(np.float64(value).tobytes()
                                                            if np.ndim(value) == 0
                                                            else np.asarray(value).tobytes())
        if term or trunc:
            obs, _ = env.reset()
    out[env_id] = {k: h.hexdigest()[:16] for k, h in sorted(fields.items())}
rng = np.random.default_rng(0)
a, b = rng.standard_normal((257, 1031)), rng.standard_normal((1031, 263))
out["blas probe"] = hashlib.sha256((a @ b).tobytes()).hexdigest()[:16]
x = np.linspace(-10, 10, 100_001, dtype=np.float32)
out["simd probe"] = hashlib.sha256(np.exp(x).tobytes() + np.sin(x).tobytes()).hexdigest()[:16]
print(json.dumps(out))
"""


def _numpy_dispatch_targets() -> str:
    """Every SIMD target this numpy build dispatches to (those this CPU lacks included)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__

    return " ".join(__cpu_dispatch__)


def _run(**variables: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")}
    env.update(variables)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _differ(native: dict, other: dict) -> list[str]:
    return [
        f"{env_id} {key}"
        for env_id in merpo_envs.env_ids()
        for key in native[env_id]
        if native[env_id][key] != other[env_id].get(key)
    ]


def test_env_steps_do_not_depend_on_the_blas_kernel():
    native, sse = _run(), _run(OPENBLAS_CORETYPE="Prescott")
    assert native["blas probe"] != sse["blas probe"], (
        "OPENBLAS_CORETYPE=Prescott gave the same BLAS matrix product as this CPU's "
        "kernels: this numpy's BLAS is not a dynamic-arch OpenBLAS, so the check below "
        "proves nothing"
    )
    assert set(native) == {*merpo_envs.env_ids(), "blas probe", "simd probe"}
    differ = _differ(native, sse)
    assert not differ, f"these depend on numpy's BLAS kernel: {', '.join(differ)}"


def test_env_steps_do_not_depend_on_numpys_simd_loops():
    native = _run()
    baseline = _run(NPY_DISABLE_CPU_FEATURES=_numpy_dispatch_targets())
    assert native["simd probe"] != baseline["simd probe"], (
        "numpy's float32 exp and sin gave the same bits with its SIMD dispatch off: this "
        "CPU has no SIMD target numpy dispatches to, so the check below proves nothing"
    )
    differ = _differ(native, baseline)
    assert not differ, f"these depend on numpy's SIMD kernels: {', '.join(differ)}"
