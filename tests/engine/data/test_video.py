"""Video decoding and writing through the real codecs (tiny files written by write_video)."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from element_lightning_pose.engine.data import video
from element_lightning_pose.engine.data.video import (
    VideoError,
    iter_batches,
    iter_frames,
    iter_grey_batches,
    iter_grey_frames,
    read_frames,
    shrink_frame,
    video_info,
    write_video,
)

N_FRAMES, HEIGHT, WIDTH, FPS = 12, 48, 64, 25.0


def _smooth_frame(t: int) -> np.ndarray:
    """A smooth gradient whose brightness encodes the frame number (survives compression)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    red = 20 + 15 * t + 0 * x
    green = 40 + 100 * x / WIDTH
    blue = 40 + 100 * y / HEIGHT
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "tiny.mp4"
    return write_video(path, (_smooth_frame(t) for t in range(N_FRAMES)), fps=FPS)


def test_write_video_round_trips(tiny_video: Path) -> None:
    info = video_info(tiny_video)
    assert (info.n_frames, info.height, info.width) == (N_FRAMES, HEIGHT, WIDTH)
    assert info.fps == pytest.approx(FPS, rel=1e-3)
    assert info.duration_s == pytest.approx(N_FRAMES / FPS, rel=1e-3)
    assert info.codec.lower() in {"mp4v", "fmp4"}  # FFmpeg reports MPEG-4 Part 2 as FMP4
    assert video_info(tiny_video, exact=True).n_frames == N_FRAMES
    frames = list(iter_frames(tiny_video))
    assert len(frames) == N_FRAMES
    for t, frame in enumerate(frames):
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        error = np.abs(frame.astype(int) - _smooth_frame(t)).mean()
        assert error < 4, f"frame {t}: mean error {error}"
    assert not list(tiny_video.parent.glob(".*tmp*")), "temporary file left behind"


def test_iter_frames_range(tiny_video: Path) -> None:
    all_frames = np.stack(list(iter_frames(tiny_video)))
    part = np.stack(list(iter_frames(tiny_video, start=3, stop=7)))
    np.testing.assert_array_equal(part, all_frames[3:7])
    assert len(list(iter_frames(tiny_video, start=10, stop=100))) == 2


def test_read_frames_matches_sequential_decode(tiny_video: Path) -> None:
    all_frames = np.stack(list(iter_frames(tiny_video)))
    indices = [9, 0, 9, 4, 11]
    np.testing.assert_array_equal(read_frames(tiny_video, indices), all_frames[indices])
    with pytest.raises(VideoError, match="frame 12"):
        read_frames(tiny_video, [2, 12])


def test_read_frames_seeks_exactly_on_real_video(mirror_mouse_dir: Path) -> None:
    """Seeks (far jumps, backwards) land on the same frames as one sequential decode."""
    path = mirror_mouse_dir / "videos" / "test_vid.mp4"
    wanted = [993, 5, 900, 470, 471, 902, 0, 300]
    sequential = {t: frame for t, frame in enumerate(iter_frames(path)) if t in wanted}
    frames = read_frames(path, wanted)
    for frame, t in zip(frames, wanted):
        np.testing.assert_array_equal(frame, sequential[t], err_msg=f"frame {t}")
    np.testing.assert_array_equal(next(iter_frames(path, start=900)), sequential[900])


def test_iter_batches_yields_all_frames_in_order(tiny_video: Path) -> None:
    batches = list(iter_batches(tiny_video, batch_size=5, size=(32, 40)))
    indices = np.concatenate([idx for idx, _ in batches])
    np.testing.assert_array_equal(indices, np.arange(N_FRAMES))
    assert [len(idx) for idx, _ in batches] == [5, 5, 2]
    for idx, frames in batches:
        assert frames.shape == (len(idx), 32, 40, 3) and frames.dtype == np.uint8
        # the red channel encodes the frame number: order is preserved through the thread
        np.testing.assert_allclose(frames[:, :, :, 0].mean(axis=(1, 2)), 20 + 15 * idx, atol=4)
    offset = list(iter_batches(tiny_video, 4, start=6, stop=11))
    np.testing.assert_array_equal(np.concatenate([i for i, _ in offset]), np.arange(6, 11))
    assert offset[0][1].shape[1:] == (HEIGHT, WIDTH, 3)


def test_iter_batches_stops_thread_when_closed_early(tiny_video: Path) -> None:
    before = threading.active_count()
    batches = iter_batches(tiny_video, batch_size=1, prefetch=1)
    first_indices, _ = next(batches)
    assert first_indices.tolist() == [0]
    batches.close()
    assert threading.active_count() == before
    assert not [t for t in threading.enumerate() if t.name == "elp-video-decoder"]


def test_iter_batches_reraises_decoder_errors(tiny_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        iter_batches(tiny_video, 0)
    calls = []

    def failing_resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        # fault injection: the third frame fails inside the decoding thread
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("resize failed on purpose")
        return frame

    monkeypatch.setattr(video, "resize_frame", failing_resize)
    batches = iter_batches(tiny_video, 2)
    assert next(batches)[0].tolist() == [0, 1]
    with pytest.raises(RuntimeError, match="on purpose"):
        next(batches)
    assert not [t for t in threading.enumerate() if t.name == "elp-video-decoder"]


def test_missing_empty_and_corrupt_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for path in (missing, empty, corrupt):
        for call in (video_info, iter_frames, lambda p: read_frames(p, [0]), lambda p: iter_batches(p, 2)):
            with pytest.raises(VideoError, match=path.name):
                call(path)


def test_write_video_rejects_bad_frames_without_leaving_files(tmp_path: Path) -> None:
    target = tmp_path / "bad.mp4"
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)]
    with pytest.raises(VideoError, match="frame 1"):
        write_video(target, frames, fps=10)
    with pytest.raises(VideoError, match="no frames"):
        write_video(target, [], fps=10)
    with pytest.raises(VideoError, match="dtype"):
        write_video(target, [np.zeros((16, 16, 3))], fps=10)
    assert list(tmp_path.iterdir()) == []


def test_real_video_metadata(mirror_mouse_dir: Path) -> None:
    info = video_info(mirror_mouse_dir / "videos" / "test_vid.mp4")
    assert (info.n_frames, info.fps) == (994, 250.0)
    assert (info.width, info.height) == (396, 406)
    assert info.duration_s == pytest.approx(994 / 250)
    assert info.codec.lower() in {"h264", "avc1"}
    first = next(iter_frames(info.path))
    assert first.shape == (info.height, info.width, 3)


# --------------------------------------------------------------------------- damaged files


def test_truncated_video_is_a_short_video_error_naming_the_frame(tmp_path: Path) -> None:
    """A faststart mp4 cut short still opens and lists every frame: decoding it must not end quietly."""
    from element_lightning_pose.engine.data.video import ShortVideoError
    from tests.engine.data.damaged_video import N_FRAMES as LISTED
    from tests.engine.data.damaged_video import truncated_faststart

    path = truncated_faststart(tmp_path / "cut.mp4")
    with pytest.raises(ShortVideoError, match=f"cut.mp4: decoding stopped at frame \\d+ of {LISTED}") as error:
        video_info(path)
    reached = error.value.reached
    assert 0 < reached < LISTED and error.value.n_frames == LISTED
    with pytest.raises(ShortVideoError, match=f"frame {reached} of {LISTED}"):
        list(iter_frames(path))
    with pytest.raises(ShortVideoError, match=f"frame {reached} of {LISTED}"):
        list(iter_batches(path, 16))
    # explicit choices: the frames that decode, or the container's count
    assert video_info(path, exact=True).n_frames == reached
    assert video_info(path, allow_short=True).n_frames == LISTED
    assert len(list(iter_frames(path, allow_short=True))) == reached
    assert len(list(iter_frames(path, stop=reached))) == reached  # the frames before the damage are fine


def test_corrupted_video_decoding_short_is_an_error(tmp_path: Path) -> None:
    """A fifth of the bytes overwritten: the container still lists every frame and the last one
    decodes, but sequential decoding stops part way."""
    from element_lightning_pose.engine.data.video import ShortVideoError
    from tests.engine.data.damaged_video import N_FRAMES as LISTED
    from tests.engine.data.damaged_video import corrupted

    path = corrupted(tmp_path / "corrupt.mp4")
    assert video_info(path).n_frames == LISTED
    with pytest.raises(ShortVideoError, match=f"corrupt.mp4: decoding stopped at frame \\d+ of {LISTED}") as error:
        list(iter_batches(path, 8))
    assert 0 < error.value.reached < LISTED
    assert isinstance(error.value, VideoError)
    assert sum(len(i) for i, _ in iter_batches(path, 8, allow_short=True)) == error.value.reached


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def test_grey_frames_are_the_luma_plane_of_a_yuv_video(tiny_video: Path, capfd: pytest.CaptureFixture) -> None:
    """mp4v decodes to planar YUV 4:2:0: its luma plane, as stored (video range), is the grey frame,
    read without OpenCV's warnings about unconverted frames and with its log level left as it was."""
    level = cv2.utils.logging.getLogLevel()
    colour = [_grey(f) for f in iter_frames(tiny_video)]
    grey = list(iter_grey_frames(tiny_video))
    assert len(grey) == N_FRAMES
    for t, (luma, reference) in enumerate(zip(grey, colour)):
        assert luma.shape == (HEIGHT, WIDTH) and luma.dtype == np.uint8
        # video range 16-235 against the full-range grey of the colour conversion: one line
        assert np.abs(16 + reference.astype(float) * 219 / 255 - luma).max() < 4, f"frame {t}"
    part = list(iter_grey_frames(tiny_video, start=3, stop=7))
    assert all(np.array_equal(a, b) for a, b in zip(part, grey[3:7]))
    assert cv2.utils.logging.getLogLevel() == level
    assert "WARN" not in capfd.readouterr().err


def test_grey_frames_of_an_rgb_video_are_its_colour_frames_in_grey(tmp_path: Path) -> None:
    """A lossless RGB codec has no luma plane: its colour frames are converted."""
    frames = [_smooth_frame(t) for t in range(4)]
    path = write_video(tmp_path / "rgb.avi", frames, fps=FPS, codec="png ")
    for grey, frame in zip(iter_grey_frames(path), frames):
        np.testing.assert_array_equal(grey, _grey(frame))


def test_shrink_frame_averages_whole_blocks() -> None:
    frame = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9)
    shrunk = shrink_frame(frame, 3)
    assert shrunk.shape == (2, 3)  # the last row and the partial blocks are dropped
    expected = frame[:6].reshape(2, 3, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(shrunk, expected, atol=0.5)
    assert shrink_frame(frame, 1) is frame
    with pytest.raises(ValueError, match="cannot shrink"):
        shrink_frame(frame, 8)


def test_iter_grey_batches_shrinks_every_frame_in_order(tiny_video: Path) -> None:
    grey = np.stack(list(iter_grey_frames(tiny_video)))
    batches = list(iter_grey_batches(tiny_video, 5, shrink=4))
    assert [len(i) for i, _ in batches] == [5, 5, 2]
    indices = np.concatenate([i for i, _ in batches])
    frames = np.concatenate([b for _, b in batches])
    np.testing.assert_array_equal(indices, np.arange(N_FRAMES))
    assert frames.shape == (N_FRAMES, HEIGHT // 4, WIDTH // 4)
    np.testing.assert_array_equal(frames, np.stack([shrink_frame(g, 4) for g in grey]))
    with pytest.raises(ValueError, match="shrink"):
        iter_grey_batches(tiny_video, 5, shrink=0)
