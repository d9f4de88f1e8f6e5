"""`compare eval RUN --video FILE.gif`: one evaluation episode of a run's deployed network.

Drawn from what the network sees at each decision: an Atari frame (the newest of the stack,
84 x 84 grey), a MinAtar state (one colour per channel), CartPole's cart and pole (drawn from
its four numbers). Any method, converted SNNs included: the episode is played by the run's own
policy rule with the protocol's exploration, from the seed stream "video" of the run's seed
(or `--seed`). Written with Pillow as an animated GIF (no codec to install), atomically, each
frame above a strip that names its decision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from compare.core.errors import UsageError
from compare.core.evaluation import evaluate_policy
from compare.core.runstore import write_file
from compare.core.seeding import stream_seed
from compare.core.training import load_deployed

MAX_FRAMES = 3000          # an Atari episode can last 27,000 decisions; the first 3,000 are drawn
FRAME_MS = 50
LABEL_PX = 12              # the strip under each frame that names its decision
# MinAtar channels in order (e.g. Breakout: paddle, ball, trail, brick), on black
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], dtype=np.uint8)


def atari_frame(obs: np.ndarray) -> np.ndarray:
    """(k, 84, 84) uint8 stack -> the newest frame, 3x, RGB."""
    grey = np.repeat(np.repeat(obs[-1], 3, axis=0), 3, axis=1)
    return np.stack([grey] * 3, axis=-1)


def minatar_frame(obs: np.ndarray) -> np.ndarray:
    """(C, 10, 10) binary channels -> 20x RGB, each cell the colour of its last active channel."""
    image = np.zeros((*obs.shape[1:], 3), dtype=np.uint8)
    for channel in range(obs.shape[0]):
        image[obs[channel] > 0] = PALETTE[channel % len(PALETTE)]
    return np.repeat(np.repeat(image, 20, axis=0), 20, axis=1)


def cartpole_frame(obs: np.ndarray) -> np.ndarray:
    """CartPole's (x, x', theta, theta') -> a 300 x 200 drawing of cart and pole (x in [-2.4, 2.4],
    the episode's bounds; the pole 1 m long, as CartPole's half-length 0.5 x 2)."""
    from PIL import Image, ImageDraw

    width, height, ground = 300, 200, 150
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    scale = width / 4.8
    x = width / 2 + float(obs[0]) * scale
    draw.line([(0, ground), (width, ground)], fill="black")
    draw.rectangle([x - 20, ground - 15, x + 20, ground], fill="black")
    theta = float(obs[2])
    top = (x + np.sin(theta) * scale, ground - 15 - np.cos(theta) * scale)
    draw.line([(x, ground - 15), top], fill=(202, 152, 101), width=6)
    return np.asarray(image)


def frame_drawer(spec) -> Callable[[np.ndarray], np.ndarray]:
    if spec.family == "atari":
        return atari_frame
    if spec.family == "minatar":
        return minatar_frame
    if spec.name == "CartPole-v1":
        return cartpole_frame
    raise UsageError(f"--video draws Atari, MinAtar and CartPole-v1 episodes; {spec.name} has no drawing here")


def labelled(frame: np.ndarray, decision: int):
    """The frame above a strip that names its decision (so that no two frames are the same: a GIF
    writer merges identical consecutive frames)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (frame.shape[1], frame.shape[0] + LABEL_PX), "black")
    image.paste(Image.fromarray(frame), (0, 0))
    ImageDraw.Draw(image).text((4, frame.shape[0] + 1), f"decision {decision}", fill="white")
    return image


def write_gif(path: Path, frames: list[np.ndarray]) -> None:
    images = [labelled(frame, i + 1) for i, frame in enumerate(frames)]
    write_file(path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                              duration=FRAME_MS, loop=0))


def record_video(run_dir: Path, path: Path, seed: int | None = None) -> dict:
    """Play one episode and write it to `path` (.gif); what was played."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise UsageError(f"--video {path}: the video is an animated GIF; give a file name ending in .gif")
    if not path.parent.is_dir():
        raise UsageError(f"--video {path}: folder {path.parent} does not exist")
    deployed = load_deployed(Path(run_dir))
    draw = frame_drawer(deployed.spec)
    seed = deployed.settings.seed if seed is None else seed
    policy, epsilon = deployed.policy(stream_seed(seed, "video"))
    frames: list[np.ndarray] = []

    def recording(obs: np.ndarray) -> np.ndarray:
        if len(frames) < MAX_FRAMES:
            frames.append(draw(np.asarray(obs)[0]))
        return policy(obs)

    result = evaluate_policy(recording, deployed.spec, deployed.settings.protocol, 1, stream_seed(seed, "video"),
                             epsilon=epsilon)
    write_gif(path, frames)
    return {"method": deployed.settings.method, "game": deployed.settings.game, "seed": seed,
            "return": result.episode_returns[0], "decisions": result.episode_lengths[0], "frames": len(frames),
            "path": str(path)}
