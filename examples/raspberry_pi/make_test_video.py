#!/usr/bin/env python3
"""Make a short video from still images, to try the camera demo without a camera.

Each image is shown for ``--seconds`` at ``--fps`` frames per second, in the order given,
in an AVI container, by default losslessly (FFV1, through the FFmpeg inside the OpenCV
wheels), so every frame has exactly the image's pixels and the demo's calls can be checked
against ``leukedge classify`` on the files. ``--codec MJPG`` writes Motion-JPEG instead, as
many USB cameras deliver it: a second JPEG generation changes calls near the boundary (the
Benign example goes from HEM 0.57 as a file to ALL 0.63 as MJPG frames). Every frame has the
first image's size; other images are resized to it.

Example::

    python3 examples/raspberry_pi/make_test_video.py examples/images/WBC-*.jpg --out smear.avi
    python3 examples/raspberry_pi_camera.py --video smear.avi --headless

Exit codes: 0 written; 1 an image cannot be read or the video cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2

CODECS = ("FFV1", "MJPG")
"""FourCC codes offered: lossless FFV1 (default) and lossy Motion-JPEG."""


def write_video(
    images: list[str], out: str, fps: float = 10.0, seconds: float = 1.5, codec: str = "FFV1"
) -> int:
    """Write the video; returns the number of frames.

    Args:
        images: image files (anything ``cv2.imread`` reads).
        out: the ``.avi`` to write; replaced atomically (written beside it, then renamed).
        fps: frames per second (> 0).
        seconds: how long each image is shown (> 0); at least one frame each.
        codec: one of :data:`CODECS`.

    Raises:
        ValueError: an unreadable image, ``fps``/``seconds`` not positive, unknown codec.
        OSError: the video cannot be written.
    """
    if fps <= 0 or seconds <= 0:
        raise ValueError("--fps and --seconds must be > 0")
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: choose one of {', '.join(CODECS)}")
    frames = []
    for path in images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not an image OpenCV can read")
        frames.append(bgr)
    height, width = frames[0].shape[:2]
    tmp = out + ".partial.avi"
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {out} with codec {codec}")
    per_image = max(1, round(fps * seconds))
    try:
        for bgr in frames:
            if bgr.shape[:2] != (height, width):
                bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
            for _ in range(per_image):
                writer.write(bgr)
    finally:
        writer.release()
    os.replace(tmp, out)
    return per_image * len(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="still images, shown in this order")
    parser.add_argument("--out", required=True, help="the video file to write (.avi)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second (10)")
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per image (1.5)")
    parser.add_argument(
        "--codec", choices=CODECS, default="FFV1", help="FFV1 (lossless, default) or MJPG"
    )
    args = parser.parse_args(argv)
    try:
        n = write_video(args.images, args.out, args.fps, args.seconds, args.codec)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {n} frames, {args.fps:g} fps, {args.codec}, {len(args.images)} image(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
