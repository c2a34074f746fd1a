"""The browser app's speed: time to show a new 1280x1024 video frame (issue #24's target: < 100 ms).

    OMP_NUM_THREADS=1 python benchmarks/bench_app.py [--frames 600] [--repeats 20] [--no-browser]
        [--out benchmarks/results/app.md]

A synthetic 1280x1024 video (:mod:`element_lightning_pose.synthetic.projects`, the animal walking
over a textured floor) is written as MPEG-4 part 2 (``mp4v``, OpenCV's writer: a key frame every
12 frames) and, when imageio-ffmpeg's bundled ffmpeg is installed, transcoded to H.264
(libx264, CRF 18, a key frame every 250 frames: what a lab camera or ``ffmpeg`` writes by
default, the harder case for seeking). The app runs in uvicorn on 127.0.0.1 in this process.

1. **Server**: ``GET /api/frame`` over a kept-alive HTTP connection, the JPEG fully received:
   *cold* (the first frame of a video the server has not opened: the decoder is opened; five
   hard links to the file, so five videos the server has not seen),
   *next* (the frame after the one shown: decoded on from the open decoder), *+10* (ten frames
   on: Shift+Right), *seek* (a frame far away: the decoder seeks to the key frame before it and
   decodes on), *cached* (a frame shown before). Each new-frame case asks for frames never asked
   for before, so none is served from the server's cache.
2. **Browser**: Debian's chromium (headless, through Playwright, a 1600x1200 window) on the
   review page: the time from asking for a frame to its pixels drawn on the canvas with the
   keypoints over them (``fetch`` + ``createImageBitmap`` + drawing), for *next*, *seek* and
   *cached* frames. The review asks for the frame at the width it is drawn (here 704 px, in
   steps of 64); the server rows above are the full 1280x1024 frame.
3. **The labeler** shows labeled images (``labeled-data/``, PNG as written by the export), not
   video frames: ``GET /api/image`` and, in chromium, ``fetch`` + ``createImageBitmap`` of them.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import uvicorn
from _common import RESULTS, header, markdown_table, write_results

from element_lightning_pose.app.server import create_app
from element_lightning_pose.app.settings import AppSettings
from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.data.video import video_info
from element_lightning_pose.synthetic.projects import make_synthetic_project

SIZE = (1024, 1280)  # height, width
# H.264 copies of the video: x264's default key-frame interval, and a short one for seeking
H264_VARIANTS = {"h264_g250": 250, "h264_g10": 10}
COLD_OPENS = 5
TARGET_MS = 100.0


def make_project(folder: Path, n_frames: int) -> tuple[Path, list[str]]:
    """The synthetic project, its predictions, and H.264 copies of its video when ffmpeg is at hand."""
    project = make_synthetic_project(folder / "lab" / "mouse", image_size=SIZE, n_labeled=4, n_video_frames=n_frames)
    truth, _ = project.ground_truth(project.videos[0])
    predictions = np.concatenate([truth, np.full((*truth.shape[:2], 1), 0.9)], axis=-1)
    write_predictions(project.root / "predictions" / "video00.csv", predictions, project.bodyparts)
    videos = ["videos/video00.mp4"]
    try:
        import imageio_ffmpeg  # optional: only for the H.264 rows
    except ImportError:
        return project.root, videos
    for name, gop in H264_VARIANTS.items():
        target = project.root / "videos" / f"{name}.mp4"
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(project.videos[0]), "-c:v"]
        command += ["libx264", "-preset", "veryfast", "-crf", "18", "-g", str(gop), "-pix_fmt", "yuv420p", str(target)]
        subprocess.run(command, check=True)
        shutil.copy(project.root / "predictions" / "video00.csv", project.root / "predictions" / f"{name}.csv")
        videos.append(f"videos/{name}.mp4")
    return project.root, videos


def add_cold_links(root: Path, videos: list[str]) -> None:
    for video in videos:
        for number in range(COLD_OPENS):
            os.link(root / video, root / video.replace(".mp4", f"_cold{number}.mp4"))


class Server:
    """The app in uvicorn on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        settings, _ = AppSettings.build([root], port=self.port)
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self.thread.join()


def fetch_ms(connection: http.client.HTTPConnection, video: str, frame: int) -> float:
    query = urlencode({"p": "0:lab/mouse", "video": video, "frame": frame})
    started = time.perf_counter()
    connection.request("GET", f"/api/frame?{query}")
    response = connection.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200 or not body.startswith(b"\xff\xd8"):
        raise RuntimeError(f"frame {frame} of {video}: HTTP {response.status} {body[:200]!r}")
    return elapsed


def image_ms(connection: http.client.HTTPConnection, image: str) -> float:
    started = time.perf_counter()
    connection.request("GET", f"/api/image?{urlencode({'p': '0:lab/mouse', 'image': image})}")
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{image}: HTTP {response.status} {body[:200]!r}")
    return (time.perf_counter() - started) * 1000


def server_rows(port: int, video: str, n_frames: int, repeats: int) -> dict[str, list[float]]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    # as the pages do: the project's description (which opens every video once) comes first
    connection.request("GET", "/api/project?p=0:lab/mouse")
    connection.getresponse().read()
    # each cold frame from another name of the same file (a hard link): a video the server has not opened
    times: dict[str, list[float]] = {"cold": []}
    for number in range(COLD_OPENS):
        times["cold"].append(fetch_ms(connection, video.replace(".mp4", f"_cold{number}.mp4"), n_frames // 2))
    rng = np.random.default_rng(0)
    asked = {n_frames // 2}

    def fresh(frame: int) -> int:
        while frame in asked:
            frame = (frame + 1) % n_frames
        asked.add(frame)
        return frame

    current = fresh(0)
    fetch_ms(connection, video, current)
    times["next"] = []
    for _ in range(repeats):
        current = fresh(current + 1)
        times["next"].append(fetch_ms(connection, video, current))
    times["+10"] = []
    for _ in range(repeats):
        current = fresh(min(current + 10, n_frames - 1))
        times["+10"].append(fetch_ms(connection, video, current))
    times["seek"] = []
    for _ in range(repeats):
        current = fresh(int(rng.integers(0, n_frames)))
        times["seek"].append(fetch_ms(connection, video, current))
    shown = sorted(asked)
    times["cached"] = [fetch_ms(connection, video, int(rng.choice(shown))) for _ in range(repeats)]
    connection.close()
    return times


def browser_rows(port: int, video: str, n_frames: int, repeats: int, images: list[str]) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright  # optional: the browser part only

    measure = """async (frame) => {
        const began = performance.now();
        await window.elpReview.show(frame);
        return performance.now() - began;
    }"""
    # what the labeler does with a labeled image: fetched as it is on disk, decoded to a bitmap
    labeled = """async (image) => {
        const began = performance.now();
        const response = await fetch(`/api/image?p=0:lab/mouse&image=${encodeURIComponent(image)}`);
        const bitmap = await createImageBitmap(await response.blob());
        bitmap.close();
        return performance.now() - began;
    }"""
    times: dict[str, list[float]] = {"next": [], "seek": [], "cached": []}
    rng = np.random.default_rng(1)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        query = urlencode({"p": "0:lab/mouse", "video": video, "file": f"predictions/{Path(video).stem}.csv"})
        page.goto(f"http://127.0.0.1:{port}/review?{query}")
        page.wait_for_selector("body[data-frame='0']")
        page.wait_for_selector("canvas.trace")
        frame = n_frames // 4
        for _ in range(repeats):
            frame += 1
            times["next"].append(page.evaluate(measure, frame))
        seeks = rng.choice(np.arange(n_frames // 2, n_frames), size=repeats, replace=False)
        for target in seeks:
            times["seek"].append(page.evaluate(measure, int(target)))
        for target in seeks[:repeats]:
            times["cached"].append(page.evaluate(measure, int(target)))
        if images:
            times["labeled PNG"] = [page.evaluate(labeled, image) for image in images]
        browser.close()
    return times


def summary(values: list[float]) -> tuple[str, str, str]:
    return (
        f"{statistics.median(values):.1f}",
        f"{np.percentile(values, 95):.1f}",
        f"{max(values):.1f}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=600, help="frames of the synthetic video")
    parser.add_argument("--repeats", type=int, default=20, help="frames timed per case")
    parser.add_argument("--no-browser", action="store_true", help="skip the chromium measurement")
    parser.add_argument("--out", type=Path, default=RESULTS / "app.md")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        root, videos = make_project(Path(tmp), args.frames)
        print(f"project written in {time.perf_counter() - started:.0f} s")
        codecs = {}
        for video in videos:
            info = video_info(root / video)
            gop = next(
                (f", key frame every {g}" for n, g in H264_VARIANTS.items() if n in video), ", key frame every 12"
            )
            codecs[video] = f"{info.codec}{gop}"
        images = sorted(p.relative_to(root).as_posix() for p in (root / "labeled-data").rglob("*.png"))
        add_cold_links(root, videos)
        with Server(root.parent.parent) as server:
            for video in videos:
                for case, values in server_rows(server.port, video, args.frames, args.repeats).items():
                    rows.append(("server: GET /api/frame", codecs[video], case, len(values), *summary(values)))
                    print(rows[-1])
            connection = http.client.HTTPConnection("127.0.0.1", server.port)
            values = [image_ms(connection, image) for image in images]
            rows.append(
                (
                    "server: GET /api/image (the labeler)",
                    "PNG, 1280x1024",
                    "labeled image",
                    len(values),
                    *summary(values),
                )
            )
            if not args.no_browser:
                for number, video in enumerate(videos):
                    found = browser_rows(server.port, video, args.frames, args.repeats, images if number == 0 else [])
                    for case, values in found.items():
                        source = "PNG, 1280x1024" if case == "labeled PNG" else codecs[video]
                        what = (
                            "chromium: fetch + decode (the labeler)"
                            if case == "labeled PNG"
                            else "chromium: review page shows it"
                        )
                        rows.append((what, source, case, len(values), *summary(values)))
                        print(rows[-1])
    lines = header("The app: time to show a new 1280x1024 frame")
    lines += [
        f"Synthetic {SIZE[1]}x{SIZE[0]} video of {args.frames} frames; mp4v: OpenCV's MPEG-4 part 2 writer "
        "(a key frame every 12 frames); h264: libx264 CRF 18 (imageio-ffmpeg's ffmpeg) with a key frame every 250 "
        "frames (x264's default) or every 10. Times in ms, the whole answer received; "
        f"target < {TARGET_MS:.0f} ms for a new frame. Cases: cold = first frame of a video the server has not "
        "opened (after the project's description, as a page asks for it first); next = the following frame; "
        "+10 = ten frames on; seek = a random far frame; cached = a frame shown before. The review page asks for "
        "frames at the width it draws them (704 px here); the labeler shows labeled PNGs, not video frames. "
        "The machine is shared: its load average is in the line above.",
        "",
    ]
    rows = [(*row, "" if row[2] == "cached" else "yes" if float(row[4]) < TARGET_MS else "no") for row in rows]
    lines += markdown_table(("path", "video", "case", "n", "median ms", "p95 ms", "max ms", "median < 100 ms"), rows)
    print(write_results(args.out, lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
