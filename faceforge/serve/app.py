"""``faceforge serve``: a small local web demo (FastAPI + one page with a three.js viewer).

The page (``static/index.html`` + ``static/app.js``) uploads an image or a short video to ``POST /api/analyze`` and
shows:

* the verdict (``fake`` / ``real``) with P(fake) and its confidence (:mod:`faceforge.inference.detection`, the
  same face extraction as training), and for a video an inline SVG chart of P(fake) over time: a point per
  frame for a frame model, a bar per clip (from its first to its last face) for a clip model;
* the reconstructed face (:mod:`faceforge.inference.reconstruction`; for a video, from the frame with the most
  confident face) as a GLB in an interactive three.js viewer (GLTFLoader + OrbitControls). three.js is vendored in
  ``static/vendor/`` (npm ``three@0.170.0``, MIT): the page loads nothing from the network.

Limits: uploads larger than ``max_upload_mb`` are refused (413) from their ``Content-Length`` before they are read
and again while read; only images (anything PIL decodes) and videos (anything PyAV decodes, at most
``max_video_s`` seconds) are accepted, anything else gets a clear 415 error naming the file. Every file the server
writes (the upload spool, uploaded videos while they are scored, GLB meshes) lives in ONE temporary folder created at
start-up and removed at shutdown; the process's :data:`tempfile.tempdir` points there while it runs, so the multipart
parser's spool files land there too.
"""
from __future__ import annotations

import logging
import math
import re
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the endpoints' (string) annotations here

from faceforge.errors import FaceforgeError

__all__ = ["STATIC_DIR", "ServeError", "ServeSettings", "create_app", "run_server"]

log = logging.getLogger(__name__)

#: The page, its script and the vendored three.js files.
STATIC_DIR = Path(__file__).resolve().parent / "static"
_MESH_NAME = re.compile(r"^[0-9a-f]{32}\.glb$")


class ServeError(FaceforgeError, ValueError):
    """Bad server settings (a limit out of range, no model at all)."""


@dataclass
class ServeSettings:
    """What ``faceforge serve`` serves and its limits.

    Attributes:
        ckpt: detection checkpoint or MesoNet ``.h5`` (None: no verdict).
        recon_ckpt: 3D reconstruction checkpoint (None: no 3D face).
        max_upload_mb: largest upload, megabytes (10^6 bytes).
        max_video_s: longest video, seconds.
        frames: frames scored per video (None: the checkpoint's extraction ``num_frames``, else 32).
    """

    ckpt: str | None = None
    recon_ckpt: str | None = None
    max_upload_mb: float = 50.0
    max_video_s: float = 30.0
    frames: int | None = None

    def check(self) -> None:
        """Raise :class:`ServeError` on a limit out of range or when neither checkpoint is given."""
        if not self.ckpt and not self.recon_ckpt:
            raise ServeError("faceforge serve needs --ckpt (deepfake detection) and/or --recon-ckpt (3D face)")
        if (not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0) or not self.max_video_s > 0
                or (self.frames is not None and self.frames < 1)):
            raise ServeError(f"--max-upload-mb (finite) and --max-video-s must be > 0 and --frames >= 1 (got "
                             f"{self.max_upload_mb}, {self.max_video_s}, {self.frames})")


class _Engine:
    """The loaded models and the server's temporary folder; one analysis at a time (a lock)."""

    def __init__(self, settings: ServeSettings) -> None:
        from faceforge.inference.detection import Predictor, load_detector
        from faceforge.inference.reconstruction import Reconstructor, load_reconstructor

        self.settings = settings
        self.workdir = Path(tempfile.mkdtemp(prefix="faceforge-serve-"))
        self.lock = threading.Lock()
        self.predictor = self.reconstructor = None
        try:
            if settings.ckpt:
                self.predictor = Predictor(load_detector(settings.ckpt), num_frames=settings.frames)
            if settings.recon_ckpt:
                detector = self.predictor.detector if self.predictor is not None else None
                self.reconstructor = Reconstructor(load_reconstructor(settings.recon_ckpt), detector=detector)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def info(self) -> dict[str, Any]:
        m = self.predictor.model if self.predictor is not None else None
        return {"detector": None if m is None else {"architecture": m.architecture, "source": m.source,
                                                     "threshold": m.threshold},
                "reconstruction": None if self.reconstructor is None else
                {"variant": self.reconstructor.model.variant, "image_size": self.reconstructor.model.image_size},
                "max_upload_mb": self.settings.max_upload_mb, "max_video_s": self.settings.max_video_s}

    def _mesh(self, image: Any, name: str) -> tuple[str | None, str | None]:
        """(URL of the GLB, or None) and the reason when there is none."""
        if self.reconstructor is None:
            return None, "no 3D model loaded (start the server with --recon-ckpt)"
        try:
            face = self.reconstructor.reconstruct_array(image, name)
        except FaceforgeError as exc:
            return None, str(exc)
        mesh_name = f"{uuid.uuid4().hex}.glb"
        from faceforge.utils.atomic import atomic_write_bytes

        atomic_write_bytes(self.workdir / mesh_name, face.to_trimesh(textured=True).export(file_type="glb"))
        return f"/api/mesh/{mesh_name}", None

    def analyze(self, name: str, data: bytes) -> tuple[int, dict[str, Any]]:
        """Analyse one upload; returns (HTTP status, JSON body)."""
        from faceforge.data.core.image_io import ImageReadError, read_rgb_image

        with self.lock:
            try:
                image = read_rgb_image(name, data=data)
            except ImageReadError:
                image = None
            if image is not None:
                return 200, self._analyze_image(name, data, image)
            return self._analyze_video(name, data)

    def _verdict(self, result: Any) -> dict[str, Any]:
        return {"status": result.status, "message": result.message, "p_fake": result.p_fake,
                "decision": result.decision, "confidence": result.confidence, "frames": result.frames,
                "clips": [{k: c[k] for k in ("clip", "start_s", "end_s", "length", "p_fake")} for c in result.clips],
                "faces": len(result.faces), "threshold": self.predictor.model.threshold}

    def _analyze_image(self, name: str, data: bytes, image: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "image", "name": name}
        if self.predictor is not None:
            out["verdict"] = self._verdict(self.predictor.predict_image(name, data=data))
        out["mesh_url"], out["mesh_error"] = self._mesh(image, name)
        return out

    def _analyze_video(self, name: str, data: bytes) -> tuple[int, dict[str, Any]]:
        from faceforge.data.detection.extraction import VideoDecodeError, probe_video, read_frames

        path = self.workdir / f"upload-{uuid.uuid4().hex}{Path(name).suffix.lower()[:8]}"
        path.write_bytes(data)
        try:
            try:
                info = probe_video(path)
            except VideoDecodeError:
                return 415, {"error": f"{name}: not an image or a video that can be decoded (upload a JPEG/PNG "
                                      f"photo or a short MP4/WebM video)"}
            duration = info.num_frames / info.fps if info.fps > 0 else float("inf")
            if duration > self.settings.max_video_s:
                return 413, {"error": f"{name}: the video lasts {duration:.1f} s; at most "
                                      f"{self.settings.max_video_s:g} s are accepted"}
            out: dict[str, Any] = {"kind": "video", "name": name, "duration_s": round(duration, 3)}
            best = None
            if self.predictor is not None:
                result = self.predictor.predict_video(path, progress=False)
                out["verdict"] = self._verdict(result)
                if result.faces:
                    best = max(result.faces, key=lambda f: f.detection_prob).frame
            if self.reconstructor is not None:
                frames = read_frames(path, [best if best is not None else 0])
                if frames:
                    out["mesh_url"], out["mesh_error"] = self._mesh(frames[0][1], f"{name} frame {frames[0][0]}")
                else:
                    out["mesh_url"], out["mesh_error"] = None, f"{name}: no frame could be decoded"
            else:
                out["mesh_url"], out["mesh_error"] = self._mesh(None, name)
            return 200, out
        finally:
            path.unlink(missing_ok=True)


def create_app(settings: ServeSettings) -> Any:
    """The FastAPI application; the models are loaded and the temporary folder made here, the folder is removed
    when the application shuts down.

    Raises:
        ServeError: from :meth:`ServeSettings.check`.
        faceforge.tasks.checkpointing.CheckpointError: a checkpoint that cannot be loaded.
    """
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    settings.check()
    limit = int(settings.max_upload_mb * 1_000_000)
    engine = _Engine(settings)  # loads the models now: a bad checkpoint fails before the server starts
    state: dict[str, Any] = {"engine": engine}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        previous = tempfile.tempdir
        tempfile.tempdir = str(engine.workdir)  # the multipart parser's spool files go here too
        log.info("faceforge serve: temporary folder %s", engine.workdir)
        try:
            yield
        finally:
            tempfile.tempdir = previous
            engine.close()

    app = FastAPI(title="faceforge demo", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return state["engine"].info()

    @app.post("/api/analyze")
    async def analyze(request: Request) -> JSONResponse:
        too_big = {"error": f"the upload is larger than {settings.max_upload_mb:g} MB"}
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit + 64_000:  # + the multipart framing
            return JSONResponse(too_big, status_code=413)
        try:
            form = await request.form(max_files=1, max_fields=1, max_part_size=1024)
        except Exception as exc:  # malformed multipart body
            return JSONResponse({"error": f"not a file upload: {exc}"}, status_code=400)
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            return JSONResponse({"error": "no file in the upload (form field 'file')"}, status_code=400)
        name = Path(upload.filename or "upload").name
        data = await upload.read(limit + 1)
        await upload.close()
        if len(data) > limit:
            return JSONResponse(too_big, status_code=413)
        if not data:
            return JSONResponse({"error": f"{name}: the file is empty"}, status_code=400)
        status, body = await run_in_threadpool(state["engine"].analyze, name, data)
        return JSONResponse(body, status_code=status)

    @app.get("/api/mesh/{mesh_name}")
    async def mesh(mesh_name: str) -> Any:
        path = state["engine"].workdir / mesh_name
        if not _MESH_NAME.match(mesh_name) or not path.is_file():
            return JSONResponse({"error": "no such mesh"}, status_code=404)
        return FileResponse(path, media_type="model/gltf-binary")

    return app


def run_server(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the demo with uvicorn until interrupted (Ctrl-C); the temporary folder is removed on the way out.

    The address is bound before the models are loaded, so a port in use or a host that is not this machine's
    fails at once, with one line.

    Raises:
        ServeError: bad settings, a port out of 0..65535, or an address that cannot be bound (in use, unknown host).
        faceforge.tasks.checkpointing.CheckpointError: a checkpoint that cannot be loaded (at start-up).
    """
    import uvicorn

    def listen(host: str, port: int) -> list[socket.socket]:
        """Sockets bound to every address of ``host`` at ``port`` (as asyncio's ``create_server`` binds them).

        Raises:
            ServeError: a port out of 0..65535, a host that does not resolve, an address in use or not available.
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ServeError(f"the port must be an integer in 0..65535, got {port!r}")
        where = f"{host}:{port}"
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError) as exc:
            raise ServeError(f"cannot listen on {where}: {' '.join(str(exc).split())}") from None
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], port, *address[2:]))
                if port == 0:  # every address on the port the first one got
                    port = sock.getsockname()[1]
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise ServeError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        return sockets

    settings.check()
    sockets = listen(host, port)
    try:
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
        bound = sockets[0].getsockname()
        log_host = f"[{bound[0]}]" if sockets[0].family == socket.AF_INET6 else bound[0]
        print(f"faceforge serve: http://{log_host}:{bound[1]} (Ctrl-C to quit)", file=sys.stderr, flush=True)
        try:
            server.run(sockets=sockets)
        except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly (as uvicorn.run does)
            pass
    finally:
        for sock in sockets:
            sock.close()
