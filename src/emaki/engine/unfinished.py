"""The picture of an interrupted batch as far as it got: A1111 answers an interrupted txt2img
or img2img with the images finished so far *and* the batch being sampled, its latest
prediction of the clean latents (`last_latent`, the sampler's `denoised`) decoded by the VAE;
it is not written (A1111 saves it only with `save_incomplete_images`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from emaki.engine.run import Batch, GeneratedImage, Run, StepCallback
from emaki.engine.stages import decode, write
from emaki.sampling.progress import StepInfo

log = logging.getLogger("emaki.engine")


@dataclass
class InterruptCheck:
    """`Cancel.interrupt` as the hooks inside the models see it: off while the interrupted
    batch's latents are decoded (the interrupt stays set for everything else)."""

    interrupt: threading.Event
    decoding: bool = False

    def is_set(self) -> bool:
        return self.interrupt.is_set() and not self.decoding


@dataclass
class LatestLatents:
    """The batch's latest `denoised` latents, recorded after each sampler step (a second pass,
    hires fix, records its own)."""

    denoised: torch.Tensor | None = None
    last_step: bool = False  # the latest step ended its pass

    @property
    def unfinished(self) -> torch.Tensor | None:
        """The latents to show for an interrupt, None when it came after a pass's last step (in
        the VAE, say: decoding again would undo the interrupt's point, a quick stop)."""
        return None if self.last_step else self.denoised

    def recording(self, on_step: StepCallback) -> StepCallback:
        """`on_step`, the step's latents recorded first (`on_step` is where an interrupt between
        steps is raised)."""

        def record(info: StepInfo) -> None:
            self.denoised, self.last_step = info.denoised, info.step + 1 >= info.total
            on_step(info)

        return record


def unfinished_images(run: Run, batch: Batch, latents: torch.Tensor, check: InterruptCheck) -> list[GeneratedImage]:
    """`latents` decoded with the models' interrupt checks held off, each image with its
    infotext, written nowhere; none when decoding fails (logged: the interrupt, and the images
    finished before it, are what the run answers)."""
    check.decoding = True
    try:
        with torch.no_grad():
            images = decode(run, latents)
    except Exception as e:  # noqa: BLE001 (out of memory, say: the finished images still go back)
        log.warning("the interrupted batch could not be decoded: %s: %s", type(e).__name__, e)
        return []
    finally:
        check.decoding = False
    for extension in run.extensions:
        images = extension.after_decode(run, batch, images)
    return write(run, batch, images, None)
