"""Reading and writing video files with PyAV, streamed: memory does not grow with the clip.

`read_clip` opens a clip and yields its frames in batches of float32 RGB; `ClipWriter` encodes
frames to a new file under a temporary name, copies the source's audio packets alongside
(remuxed, not re-encoded) and renames the file when it is complete. A file that cannot be
opened or a frame that cannot be decoded gives a `VideoError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from flax_style import errors

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
# (codec, options, pixel format) per output container: libx264 at CRF 18 (visually lossless
# for most footage) unless the extension says otherwise; .mkv is lossless FFV1 in 8-bit RGB
# (large files: for editing, or for measuring flicker without codec noise). None: 4:2:0, or
# 4:4:4 when a side is odd.
ENCODERS = {
    ".webm": ("libvpx-vp9", {"crf": "30", "b": "0"}, None),
    ".mkv": ("ffv1", {}, "bgr0"),
}
DEFAULT_ENCODER = ("libx264", {"crf": "18", "preset": "medium"}, None)


class VideoError(errors.UserError):
    """A video that cannot be read or written; the message names the file and the fix."""


def is_video(path: str) -> bool:
    """Whether `path` names a video file (by extension)."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """What a clip's first video stream declares.

    Attributes:
      path: the file.
      width, height: frame size in pixels.
      rate: average frame rate (frames per second).
      num_frames: frame count as declared by the container (0 when it does not say).
      has_audio: whether the file has an audio stream (copied into outputs).
    """

    path: str
    width: int
    height: int
    rate: fractions.Fraction
    num_frames: int
    has_audio: bool


def _av() -> Any:
    """PyAV, imported on first use: image-only installs do not need it."""
    try:
        import av
    except ImportError as error:
        raise VideoError(
            "reading and writing videos needs PyAV: pip install 'flax-style[video]'"
        ) from error
    return av


def _open(path: str) -> Any:
    av = _av()
    if not os.path.isfile(path):
        raise VideoError(f"{path}: no such video file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise VideoError(
            f"{path}: not a readable video ({_reason(error)}); re-encode or replace it"
        ) from error
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: holds no video stream")
    return container


def _reason(error: Exception) -> str:
    """FFmpeg's own words (without the path it repeats), else the exception's first line."""
    text = getattr(error, "strerror", None) or str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def probe(path: str) -> ClipInfo:
    """The `ClipInfo` of a video file, read from its header (no frame is decoded).

    Raises:
      VideoError: missing or unreadable file, or no video stream.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or fractions.Fraction(25)
        num_frames = stream.frames
        if not num_frames and stream.duration and stream.time_base:
            num_frames = round(float(stream.duration * stream.time_base * rate))
        return ClipInfo(
            path,
            stream.codec_context.width,
            stream.codec_context.height,
            fractions.Fraction(rate),
            int(num_frames or 0),
            bool(container.streams.audio),
        )


@dataclasses.dataclass
class Batch:
    """Consecutive frames: `images` float32 (b, h, w, 3) RGB in [0, 1], and per frame its
    presentation time (`pts` in units of `time_base`) to write it back at the same time."""

    images: np.ndarray
    pts: list[int | None]
    time_base: fractions.Fraction | None


def read_clip(path: str, batch_size: int, size: tuple[int, int] | None = None) -> Iterator[Batch]:
    """Decodes the first video stream of `path` in batches of up to `batch_size` frames.

    Only one batch is held at a time.

    Args:
      path: the video file.
      batch_size: frames per batch (the last batch may be shorter).
      size: (h, w) to resize every frame to (bicubic, by FFmpeg's scaler); None keeps it.

    Raises:
      VideoError: unreadable container, or a frame that cannot be decoded (naming its index).
    """
    av = _av()
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        images, pts, index = [], [], 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                raise VideoError(
                    f"{path}: frame {index} cannot be decoded ({_reason(error)}); the file is "
                    "corrupt or truncated: re-encode or replace it"
                ) from error
            resize = {"height": size[0], "width": size[1]} if size else {}
            images.append(frame.to_ndarray(format="rgb24", interpolation="BICUBIC", **resize))
            pts.append(frame.pts)
            index += 1
            if len(images) == batch_size:
                yield Batch(np.stack(images).astype(np.float32) / 255.0, pts, stream.time_base)
                images, pts = [], []
        if images:
            yield Batch(np.stack(images).astype(np.float32) / 255.0, pts, stream.time_base)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8, clipped and rounded (the release's `clip * 255 + 0.5`)."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class ClipWriter:
    """Writes frames to a video file shaped like a source clip, with the source's audio.

    Use as a context manager: the file is written as `.NAME.partial.EXT` beside `path` and
    renamed to `path` only when the block ends without an exception (else it is removed).
    Audio packets of the source are copied as the video advances past their time, so the file
    is interleaved and nothing accumulates in memory.
    """

    def __init__(self, path: str, source: ClipInfo):
        self.path = path
        self._source = source
        parent, name = os.path.split(os.path.abspath(path))
        stem, ext = os.path.splitext(name)
        self._partial = os.path.join(parent, f".{stem}.partial{ext}")
        self._ext = ext.lower()
        self._frames = 0

    def __enter__(self) -> ClipWriter:
        av = self._av = _av()
        os.makedirs(os.path.dirname(self._partial), exist_ok=True)
        try:
            self._out = av.open(self._partial, "w")
        except av.error.FFmpegError as error:
            raise VideoError(f"{self.path}: cannot write video ({_reason(error)})") from error
        self._audio_in, self._audio_packets, self._audio = None, iter(()), None
        try:
            self._add_streams()
        except (av.error.FFmpegError, ValueError) as error:
            self._out.close()
            self._cleanup()
            raise VideoError(
                f"{self.path}: cannot write this video here ({_reason(error)}); the source's "
                "audio or the frame size may not fit the container: try a .mkv output"
            ) from error
        self._pending = None
        return self

    def _add_streams(self) -> None:
        codec, options, pix_fmt = ENCODERS.get(self._ext, DEFAULT_ENCODER)
        self._video = self._out.add_stream(codec, rate=self._source.rate, options=options)
        self._video.width, self._video.height = self._source.width, self._source.height
        # 4:2:0 needs even sides; odd-sized clips keep their size in 4:4:4.
        even = self._source.width % 2 == 0 and self._source.height % 2 == 0
        self._video.pix_fmt = pix_fmt or ("yuv420p" if even else "yuv444p")
        if self._source.has_audio:
            self._audio_in = self._av.open(self._source.path)
            self._audio = self._out.add_stream_from_template(self._audio_in.streams.audio[0])
            self._audio_packets = self._audio_in.demux(self._audio_in.streams.audio[0])

    def write(self, images: np.ndarray, pts=None, time_base=None) -> None:
        """Encodes float (b, h, w, 3) frames in [0, 1] (clipped, rounded to 8 bits).

        Args:
          images: the frames, in order.
          pts: per frame its source presentation time (keeps the source's timing), or None
            for a constant rate.
          time_base: the unit of `pts`.
        """
        for i, pixels in enumerate(to_uint8(images)):
            # Converted here into a frame that owns its memory: the encoder keeps frames for
            # its lookahead after `pixels` is gone (PyAV may wrap the array without a copy).
            frame = self._av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame = frame.reformat(format=self._video.pix_fmt)
            if pts is not None and pts[i] is not None:
                frame.pts, frame.time_base = pts[i], time_base
            else:
                frame.pts, frame.time_base = self._frames, 1 / self._source.rate
            for packet in self._video.encode(frame):
                self._out.mux(packet)
            self._frames += 1
            self._copy_audio(float(frame.pts * frame.time_base))

    def _copy_audio(self, until_seconds: float | None) -> None:
        """Muxes the source's audio packets up to `until_seconds` (all of them for None)."""
        while True:
            packet = self._pending or next(self._audio_packets, None)
            self._pending = None
            if packet is None:
                return
            if packet.dts is None:  # the demuxer's flush packet
                continue
            if until_seconds is not None and packet.pts * packet.time_base > until_seconds:
                self._pending = packet
                return
            packet.stream = self._audio
            self._out.mux(packet)

    def __exit__(self, exc_type, exc, traceback) -> None:
        complete = False
        try:
            if exc_type is None:
                for packet in self._video.encode():
                    self._out.mux(packet)
                self._copy_audio(None)
            self._out.close()
            complete = exc_type is None
        finally:
            if complete:
                self._close_audio()
                os.replace(self._partial, self.path)
            else:
                self._cleanup()

    def _close_audio(self) -> None:
        if self._audio_in is not None:
            self._audio_in.close()
            self._audio_in = None

    def _cleanup(self) -> None:
        """Closes the audio source and removes the partial file."""
        self._close_audio()
        if os.path.exists(self._partial):
            os.remove(self._partial)
