"""Every merpo env steps to the same bits whatever BLAS kernel numpy picks for the CPU.

numpy's BLAS (OpenBLAS) picks its kernels by CPU at import (``OPENBLAS_CORETYPE``
overrides it): an AVX-512 machine and an AVX2 one sum a dot product in another order, so
``np.linalg.norm`` of the same vector can differ in its last bit. A dataset stores the
envs' rewards and infos bit for bit (its content hash), so nothing an env returns may go
through BLAS. Each env runs the same seeded uniform actions in two processes, one on the
CPU's own kernels and one on OpenBLAS's plain SSE kernels, and every returned array must
hash the same; a BLAS dot of a long vector, run beside them, shows that the two
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
x = np.random.default_rng(0).standard_normal(100_003)
out["blas probe"] = float(x @ x).hex()
print(json.dumps(out))
"""


def _run(coretype: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_env_steps_do_not_depend_on_the_blas_kernel():
    native, sse = _run(None), _run("Prescott")
    assert native["blas probe"] != sse["blas probe"], (
        "OPENBLAS_CORETYPE=Prescott gave the same BLAS sums as this CPU's kernels: "
        "this numpy's BLAS is not a dynamic-arch OpenBLAS, so the check below proves nothing"
    )
    assert set(native) == {*merpo_envs.env_ids(), "blas probe"}
    differ = [
        f"{env_id} {key}"
        for env_id in merpo_envs.env_ids()
        for key in native[env_id]
        if native[env_id][key] != sse[env_id].get(key)
    ]
    assert not differ, f"these depend on numpy's BLAS kernel: {', '.join(differ)}"
