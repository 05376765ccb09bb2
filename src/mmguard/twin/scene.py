"""Workcell scenes: MJCF shipped as package data, their hashes, sensor channels and GL backend.

Scenes live in ``mmguard/twin/scenes/<name>.xml``. A scene may reference other files of that
folder (``<model file="robot.xml"/>``, ``<include file=...>``); they are read through
:mod:`importlib.resources` and handed to MuJoCo as an in-memory asset dict, so scenes load from a
wheel or zip as well as from a checkout. :func:`mjcf_hash` covers the scene file and every file
it references, recursively.

Robots are attached with a prefix (``r0/``, ``r1/``): every joint, actuator, site and sensor name
of robot ``k`` starts with ``rk/``. A robot's kinematics vector is the concatenation of its
sensors in model order (see :func:`robot_channels`); the unit of each column follows from the
sensor type (:data:`SENSOR_UNITS`).

Rendering backend: :func:`select_gl_backend` honours ``MUJOCO_GL`` when it is set; otherwise it
probes ``egl`` and then ``osmesa`` in a short subprocess (a backend cannot be switched once
PyOpenGL is loaded) and sets ``MUJOCO_GL`` to the first that works, so worker processes inherit
the choice. If none works it raises a one-line :class:`~mmguard.errors.DataError`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources

import mujoco
import numpy as np

from mmguard.errors import DataError, SpecError
from mmguard.twin.interface import SCENES  # noqa: E402  (re-exported: the scenes shipped with mmguard)

SCENE_ROBOTS: dict[str, tuple[str, ...]] = {"arm": ("r0",), "weld": ("r0", "r1")}
"""Robot prefixes of each scene, in order."""

CAMERA_NAME = "workcell"
"""Name of the fixed camera every scene defines."""

ROBOT_GEOM_GROUP = 1
"""Geom group of robot geoms (switch it off in a renderer to hide the robots)."""

SENSOR_UNITS: dict[int, str] = {
    int(mujoco.mjtSensor.mjSENS_JOINTPOS): "rad",
    int(mujoco.mjtSensor.mjSENS_JOINTVEL): "rad/s",
    int(mujoco.mjtSensor.mjSENS_ACTUATORFRC): "N·m",
    int(mujoco.mjtSensor.mjSENS_FRAMEPOS): "m",
    int(mujoco.mjtSensor.mjSENS_FRAMEXAXIS): "1",
    int(mujoco.mjtSensor.mjSENS_FRAMEYAXIS): "1",
    int(mujoco.mjtSensor.mjSENS_FRAMEZAXIS): "1",
    int(mujoco.mjtSensor.mjSENS_FORCE): "N",
    int(mujoco.mjtSensor.mjSENS_TORQUE): "N·m",
    int(mujoco.mjtSensor.mjSENS_TOUCH): "N",
}
"""Unit of every sensor type used by the scenes (a new scene may only use these)."""

_AXES = ("x", "y", "z")
_FILE_ATTR = re.compile(r"""\bfile\s*=\s*["']([^"']+)["']""")
_GL_BACKENDS = ("egl", "osmesa", "glfw")
_GL_PACKAGES = "libegl1 libgl1 libosmesa6"
_PACKAGE = "mmguard.twin"


@dataclass(frozen=True)
class Channel:
    """One column of a kinematics vector: its name, unit and where it lives in ``sensordata``."""

    name: str
    unit: str
    address: int


def check_scene(name: str) -> str:
    """``name`` if it is a shipped scene, else a :class:`SpecError` naming the valid scenes."""
    if name not in SCENES:
        raise SpecError(f"unknown twin scene {name!r}; valid scenes: {', '.join(SCENES)}")
    return name


def _read_scene_file(filename: str) -> bytes:
    """Bytes of ``filename`` in the scenes folder (package data)."""
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise DataError(f"scene file reference {filename!r} must be a plain file name in the scenes folder")
    path = resources.files(_PACKAGE).joinpath("scenes").joinpath(filename)
    if not path.is_file():
        raise DataError(f"scene file {filename!r} is missing from the mmguard package data")
    return path.read_bytes()


def scene_files(name: str) -> dict[str, bytes]:
    """The scene's MJCF (key ``<name>.xml``) and every file it references, recursively."""
    check_scene(name)
    files: dict[str, bytes] = {}
    pending = [f"{name}.xml"]
    while pending:
        filename = pending.pop()
        if filename in files:
            continue
        data = _read_scene_file(filename)
        files[filename] = data
        # Comments may mention file names: strip them before looking for references.
        text = re.sub(r"<!--.*?-->", "", data.decode("utf-8"), flags=re.DOTALL)
        pending.extend(_FILE_ATTR.findall(text))
    return files


def mjcf_hash(name: str) -> str:
    """SHA-256 (hex) over the scene's MJCF and all files it references (name and bytes, sorted)."""
    digest = hashlib.sha256()
    for filename, data in sorted(scene_files(name).items()):
        digest.update(filename.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


@cache
def _compiled(name: str) -> mujoco.MjModel:
    files = scene_files(name)
    main = files.pop(f"{name}.xml").decode("utf-8")
    try:
        return mujoco.MjModel.from_xml_string(main, files)
    except ValueError as err:  # MuJoCo's compiler errors span lines: keep the first.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"scene {name!r} does not compile: {first}") from err


def load_model(name: str) -> mujoco.MjModel:
    """A fresh :class:`mujoco.MjModel` of scene ``name`` (a copy: callers may modify it)."""
    return _compiled(check_scene(name)).__copy__()


def robot_channels(model: mujoco.MjModel, prefix: str) -> list[Channel]:
    """Columns of robot ``prefix``'s kinematics vector: its sensors in model order.

    A scalar sensor gives one column named like the sensor (``r0/joint1/position``); a 3-vector
    sensor gives three, suffixed ``/x``, ``/y``, ``/z`` (``r0/tcp/position/x``).
    """
    channels: list[Channel] = []
    start = f"{prefix}/"
    for i in range(model.nsensor):
        sensor = model.sensor(i)
        if not sensor.name.startswith(start):
            continue
        kind = int(model.sensor_type[i])
        if kind not in SENSOR_UNITS:
            raise DataError(f"sensor {sensor.name!r} has a type without a unit in mmguard.twin.scene")
        dim, adr = int(model.sensor_dim[i]), int(model.sensor_adr[i])
        if dim == 1:
            channels.append(Channel(sensor.name, SENSOR_UNITS[kind], adr))
        elif dim == 3:
            channels.extend(
                Channel(f"{sensor.name}/{axis}", SENSOR_UNITS[kind], adr + j) for j, axis in enumerate(_AXES)
            )
        else:
            raise DataError(f"sensor {sensor.name!r} has dimension {dim}; only 1 and 3 are supported")
    if not channels:
        raise DataError(f"the model has no sensors of robot {prefix!r}")
    return channels


def name_id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str) -> int:
    """Id of the named model element; a :class:`DataError` if the scene lacks it."""
    idx = mujoco.mj_name2id(model, kind, name)
    if idx < 0:
        raise DataError(f"the scene has no {kind.name.removeprefix('mjOBJ_').lower()} named {name!r}")
    return int(idx)


# --------------------------------------------------------------------------- GL backend


def _probe_backend(backend: str) -> bool:
    """Whether an offscreen context of ``backend`` can be created (checked in a subprocess)."""
    code = f"from mujoco.{backend} import GLContext\nc = GLContext(8, 8)\nc.make_current()\nc.free()\n"
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _no_backend(detail: str) -> DataError:
    return DataError(
        f"no working OpenGL backend for offscreen rendering ({detail}); install the Debian packages "
        f"{_GL_PACKAGES} (apt-get install {_GL_PACKAGES}) or set MUJOCO_GL to a working backend"
    )


def select_gl_backend() -> str:
    """The offscreen GL backend: ``MUJOCO_GL`` if set, else the first of egl, osmesa that works.

    The choice is written to ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) so child processes reuse it.
    """
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    if requested:
        if requested not in _GL_BACKENDS:
            raise DataError(
                f"MUJOCO_GL={requested!r} cannot render offscreen; use one of {', '.join(_GL_BACKENDS)}"
            )
        return requested
    for backend in ("egl", "osmesa"):
        if _probe_backend(backend):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise _no_backend("tried MUJOCO_GL=egl and MUJOCO_GL=osmesa")


def gl_context_class() -> type:
    """The ``GLContext`` class of the selected backend (see :func:`select_gl_backend`)."""
    backend = select_gl_backend()
    try:
        module = importlib.import_module(f"mujoco.{backend}")
    except (ImportError, OSError, AttributeError) as err:
        raise _no_backend(f"MUJOCO_GL={backend}: {type(err).__name__}: {err}") from err
    return module.GLContext


# --------------------------------------------------------------------------- rendering


class OffscreenRenderer:
    """Renders a model's fixed camera offscreen into RGB (uint8) and optionally depth (metres).

    One GL context and one ``MjrContext`` are reused for every frame; call :meth:`close` (or use
    it as a context manager) to free them. Geom groups in ``hidden_groups`` are not drawn (e.g.
    :data:`ROBOT_GEOM_GROUP` to render the workcell without robots). The offscreen buffer of
    ``model`` is enlarged to the image size if needed (``model`` is the episode's own copy).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        width: int,
        height: int,
        camera: str = CAMERA_NAME,
        depth: bool = False,
        hidden_groups: tuple[int, ...] = (),
    ) -> None:
        if width < 1 or height < 1:
            raise SpecError(f"camera size must be positive, got {width}x{height}")
        self.model, self.width, self.height, self.depth = model, int(width), int(height), bool(depth)
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), self.width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), self.height)
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = name_id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        self._option = mujoco.MjvOption()
        for group in hidden_groups:
            self._option.geomgroup[group] = 0
        self._scene = mujoco.MjvScene(model, maxgeom=max(200, 2 * model.ngeom))
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._zbuf = np.empty((self.height, self.width), dtype=np.float32) if depth else None
        context_class = gl_context_class()
        self._gl = None
        self._mjr = None
        try:
            self._gl = context_class(self.width, self.height)
            self._gl.make_current()
            self._mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
            self._mjr.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        except Exception as err:  # GL failures come as many types (RuntimeError, GLError, ...)
            self.close()
            raise _no_backend(f"MUJOCO_GL={select_gl_backend()}: {type(err).__name__}: {err}") from err
        extent = float(model.stat.extent)
        self._near = float(np.float32(model.vis.map.znear * extent))
        self._far = float(np.float32(model.vis.map.zfar * extent))

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray | None]:
        """(RGB (H, W, 3) uint8, depth (H, W) float32 metres or None) of the current state."""
        if self._mjr is None:
            raise DataError("the renderer is closed")
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self.model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        mujoco.mjr_render(self._rect, self._scene, self._mjr)
        mujoco.mjr_readPixels(self._rgb, self._zbuf, self._rect, self._mjr)
        rgb = self._rgb[::-1].copy()  # OpenGL rows start at the bottom
        if self._zbuf is None:
            return rgb, None
        return rgb, self._linear_depth(self._zbuf[::-1])

    def _linear_depth(self, zbuf: np.ndarray) -> np.ndarray:
        """Metric depth from the reversed-Z buffer (1 at the near plane, 0 at the far plane)."""
        near, far = self._near, self._far
        z = zbuf.astype(np.float64)
        # Reversed-Z perspective buffer: z = near·(far - d) / (d·(far - near)), solved for d.
        return (near * far / (near + z * (far - near))).astype(np.float32)

    def close(self) -> None:
        """Free the GL resources (idempotent)."""
        if self._mjr is not None:
            if self._gl is not None:
                self._gl.make_current()
            self._mjr.free()
            self._mjr = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None

    def __enter__(self) -> OffscreenRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
