"""Test setup for merpo-envs: headless MuJoCo rendering."""

import os

# EGL renders without a display (the noxfile sets the same). It must be set before the
# first renderer is created; an explicit MUJOCO_GL from the caller wins.
os.environ.setdefault("MUJOCO_GL", "egl")
