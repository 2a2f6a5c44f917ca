"""A PipeWire camera: vbg's output as a ``Video/Source`` node that browsers, OBS and the camera
portal list, with no kernel module.

Why GStreamer in-process (``appsrc ! pipewiresink``, through PyGObject): PipeWire has no
maintained Python binding, and GStreamer's ``pipewiresink`` is the client that PipeWire itself
ships. A ``gst-launch-1.0`` child fed raw frames through a pipe (``fdsrc ! rawvideoparse``, with
or without ``videoconvert``) would need no Python package, but with PipeWire 0.3.65 (Debian 12)
it crashed as soon as a reader linked: the sink's buffer pool was active with size 0, so the
buffers PipeWire gave it had no memory (only ``videotestsrc``, which sizes that pool itself,
worked). In-process, vbg sizes the pool for one frame before any reader links and writes each
frame into a buffer taken from it, never waiting (no free buffer: the frame is dropped, as a
live camera drops it).
The cost for a user is the ``pipewire`` extra (PyGObject, built against the system's
gobject-introspection) and the system packages gstreamer1.0-pipewire and gir1.2-gstreamer-1.0.

Frames go out as I420 (converted by OpenCV), the raw format camera readers most commonly take.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from vbg.errors import VbgError

log = logging.getLogger(__name__)
_SPACE = re.compile(r"\s*")  # between the JSON arrays pw-dump prints

DEFAULT_NODE_NAME = "vbg"
CONSUMERS_CHECK_S = 1.0
START_TIMEOUT_S = 5.0
PIPEWIRE_START = "systemctl --user start pipewire wireplumber"
GI_INSTALL = ("in the vbg checkout, `pip install -e '.[pipewire]'` (it builds PyGObject: first "
              "`sudo apt install libgirepository1.0-dev libcairo2-dev gir1.2-gstreamer-1.0`)")


def socket_path() -> Path | None:
    """Where the PipeWire daemon of this session listens (None: no runtime folder is set)."""
    remote = os.environ.get("PIPEWIRE_REMOTE", "pipewire-0")
    if os.path.isabs(remote):
        return Path(remote)
    folder = os.environ.get("PIPEWIRE_RUNTIME_DIR") or os.environ.get("XDG_RUNTIME_DIR")
    return Path(folder) / remote if folder else None


def daemon_running() -> bool:
    """A PipeWire daemon listens on this session's socket."""
    path = socket_path()
    return path is not None and path.is_socket()


def _no_daemon() -> VbgError:
    path = socket_path()
    where = f"no socket at {path}" if path else "XDG_RUNTIME_DIR is not set"
    return VbgError(f"no PipeWire daemon runs in this session ({where}); start it with `{PIPEWIRE_START}`, "
                    "or use --output vcam (v4l2loopback)")


def dump() -> list[dict]:
    """The PipeWire graph as ``pw-dump`` prints it (its objects: nodes, ports, links, ...)."""
    if shutil.which("pw-dump") is None:
        raise VbgError("pw-dump is missing, which vbg needs to see PipeWire's graph; "
                       "`sudo apt install pipewire-bin`")
    try:
        result = subprocess.run(["pw-dump", "--no-colors"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise VbgError("pw-dump did not answer within 10 s: is the PipeWire daemon hung? "
                       f"restart it with `{PIPEWIRE_START.replace('start', 'restart')}`") from None
    if result.returncode != 0:
        raise _no_daemon()
    return parse_dump(result.stdout)


def parse_dump(text: str) -> list[dict]:
    """The graph in ``pw-dump``'s output: one or more JSON arrays of objects, the later ones with
    the objects that changed while it dumped (``{"id": N, "info": null}``: removed). The first array
    is not always the whole graph: 5 of 3,858 dumps of a running vbg printed its node only in a
    second one (``[1 object] [38 objects]``), so each object's last state counts."""
    decoder, objects, position = json.JSONDecoder(), {}, 0
    while (position := _SPACE.match(text, position).end()) < len(text):
        chunk, position = decoder.raw_decode(text, position)
        for obj in chunk:
            if "type" not in obj and obj.get("info") is None:
                objects.pop(obj.get("id"), None)
            else:
                objects[obj.get("id")] = obj
    return list(objects.values())


def nodes_named(name: str, graph: list[dict]) -> list[int]:
    """Ids of the nodes whose ``node.name`` is ``name``."""
    return [obj["id"] for obj in graph if obj.get("type", "").endswith(":Node")
            and ((obj.get("info") or {}).get("props") or {}).get("node.name") == name]


def consumers_of(node_id: int, graph: list[dict]) -> int:
    """How many links take frames out of node ``node_id``: its readers."""
    return sum(1 for obj in graph if obj.get("type", "").endswith(":Link")
               and (obj.get("info") or {}).get("output-node-id") == node_id)


def gstreamer():
    """GStreamer through PyGObject, initialised, with its PipeWire plugin; or the install line."""
    try:
        import gi
    except ImportError:
        raise VbgError(f"--output pipewire needs PyGObject, which is not installed: {GI_INSTALL}") from None
    try:
        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ValueError, ImportError):
        raise VbgError("--output pipewire needs GStreamer's introspection data: "
                       "`sudo apt install gir1.2-gstreamer-1.0`") from None
    Gst.init(None)
    for element, package in (("pipewiresink", "gstreamer1.0-pipewire"), ("appsrc", "gstreamer1.0-plugins-base")):
        if Gst.ElementFactory.find(element) is None:
            raise VbgError(f"GStreamer's {element} element is missing: `sudo apt install {package}`")
    return Gst


class PipeWireSink:
    """A PipeWire ``Video/Source`` node (``media.role=Camera``) named ``name``."""

    live = True

    def __init__(self, size: tuple[int, int], fps: float, *, name: str = DEFAULT_NODE_NAME) -> None:
        if size[0] % 2 or size[1] % 2:
            raise VbgError(f"--output pipewire needs even sides (I420), got {size[0]}x{size[1]}; "
                           "pass --size with even numbers")
        if not daemon_running():
            raise _no_daemon()
        taken = nodes_named(name, dump())
        if taken:
            raise VbgError(f"a PipeWire node named '{name}' exists already (id {taken[0]}; another vbg?); "
                           "stop it, or name this one with --pipewire-name NAME")
        self._gst = gstreamer()
        self.size, self.fps, self.node_name = size, fps, name
        self.name = f"PipeWire camera '{name}'"
        self._lock = threading.Lock()
        self._error: str | None = None
        self._consumers: int | None = None
        self._start()
        self._wait_for_node()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_consumers, name="pipewire-consumers", daemon=True)
        self._poller.start()

    def _start(self) -> None:
        """Build and start the GStreamer pipeline, and size the sink's buffer pool for one frame."""
        Gst = self._gst
        width, height = self.size
        self._caps = Gst.Caps.from_string(
            f"video/x-raw,format=I420,width={width},height={height},"
            f"framerate={round(self.fps * 1000)}/1000,pixel-aspect-ratio=1/1")
        self._pipeline = Gst.Pipeline.new(f"vbg-{self.node_name}")
        self._src = Gst.ElementFactory.make("appsrc")
        self._src.set_property("is-live", True)
        self._src.set_property("format", Gst.Format.TIME)
        self._src.set_property("caps", self._caps)
        sink = Gst.ElementFactory.make("pipewiresink")
        props = Gst.Structure.new_empty("props")
        for key, value in (("media.class", "Video/Source"), ("media.role", "Camera"),
                           ("node.name", self.node_name), ("node.description", self._description())):
            props.set_value(key, value)
        sink.set_property("stream-properties", props)
        sink.set_property("client-name", self.node_name)
        sink.set_property("mode", "provide")
        sink.set_property("sync", False)
        for element in (self._src, sink):
            self._pipeline.add(element)
        self._src.link(sink)
        bus = self._pipeline.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message::error", self._on_error)
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self._pipeline.set_state(Gst.State.NULL)
            raise VbgError(f"could not start the PipeWire camera: {self._error or 'GStreamer refused'}; "
                           "`vbg doctor` checks PipeWire")
        # The caps first (the sink connects its stream on them), then the pool, as a GStreamer
        # source element that allocates from the sink does it.
        pad = self._src.get_static_pad("src")
        pad.push_event(Gst.Event.new_stream_start(self.node_name))
        pad.push_event(Gst.Event.new_caps(self._caps))
        segment = Gst.Segment()
        segment.init(Gst.Format.TIME)
        pad.push_event(Gst.Event.new_segment(segment))
        query = Gst.Query.new_allocation(self._caps, True)
        if not pad.peer_query(query) or query.get_n_allocation_pools() == 0:
            self.close()
            raise VbgError(f"the PipeWire camera could not start: {self._error or 'pipewiresink offered no buffers'}")
        self._pool = query.parse_nth_allocation_pool(0)[0]
        self._size_pool()
        self._acquire = Gst.BufferPoolAcquireParams()
        self._acquire.flags = Gst.BufferPoolAcquireFlags.DONTWAIT

    def _size_pool(self) -> None:
        """Configure the sink's pool for one I420 frame; activating it hands PipeWire the buffer
        size (pipewiresink 0.3.65 left it active with size 0: buffers without memory)."""
        width, height = self.size
        self._pool.set_active(False)
        config = self._pool.get_config()
        self._gst.BufferPool.config_set_params(config, self._caps, width * height * 3 // 2, 0, 0)
        self._pool.set_config(config)
        self._pool.set_active(True)

    def _description(self) -> str:
        """The camera's name in apps' camera lists."""
        return "vbg" if self.node_name == DEFAULT_NODE_NAME else f"vbg ({self.node_name})"

    def _on_error(self, bus, message) -> None:
        error, _ = message.parse_error()
        log.debug("PipeWire camera: %s", error.message)
        self._error = f"{error.message}; is PipeWire still running? (`vbg doctor` checks it)"

    def _wait_for_node(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._error:
                break
            if nodes_named(self.node_name, dump()):
                return
            time.sleep(0.05)
        self._pipeline.set_state(self._gst.State.NULL)
        raise VbgError(f"the PipeWire camera '{self.node_name}' did not appear within {START_TIMEOUT_S:g} s"
                       + (f": {self._error}" if self._error else "") + "; `vbg doctor` checks PipeWire")

    def _poll_consumers(self) -> None:
        """Count the node's readers once a second. When the last one leaves, the pipeline is made
        again at once: pipewiresink 0.3.65 loses each buffer it is given while nobody reads, and
        neither a new reader nor a pool activated again brings buffers back; a new node does."""
        while not self._stop.wait(CONSUMERS_CHECK_S):
            try:
                graph = dump()
            except VbgError as exc:
                self._error = str(exc)
                continue
            ids = nodes_named(self.node_name, graph)
            count = consumers_of(ids[0], graph) if ids else 0
            with self._lock:
                if self._consumers and not count:
                    self._pipeline.set_state(self._gst.State.NULL)
                    try:
                        self._start()
                    except VbgError as exc:  # reported by the next write
                        self._error = str(exc)
                self._consumers = count

    def readers(self) -> int | None:
        """How many readers (links out of the node) it has; None until first counted, once a second."""
        return self._consumers

    def write(self, frame: np.ndarray) -> bool:
        if self._error:
            raise VbgError(f"the PipeWire camera '{self.node_name}' stopped: {self._error}")
        with self._lock:
            ok, buffer = self._pool.acquire_buffer(self._acquire)
            if ok != self._gst.FlowReturn.OK:
                return True  # no reader linked, or all buffers with the reader: this frame is dropped
            buffer.fill(0, cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
            # No timestamp: with appsrc's do-timestamp, pipewiresink 0.3.65 was seen to get only its
            # first 16 buffers back from the reader; without, they cycle.
            buffer.pts = self._gst.CLOCK_TIME_NONE
            self._src.emit("push-buffer", buffer)
        return True

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._poller.join(timeout=2 * CONSUMERS_CHECK_S + 10)
        self._pipeline.set_state(self._gst.State.NULL)
