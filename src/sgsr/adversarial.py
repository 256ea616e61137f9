"""GAN objectives on discriminator logits, for the generator and for the discriminator.

As BasicSR defines them (``GANLoss`` with ``gan_type`` vanilla or hinge, and ESRGAN's
relativistic-average use of the vanilla one in ``ESRGANModel``):

- ``relativistic`` (ESRGAN, RaGAN): the discriminator estimates whether real data is more
  realistic than fake data on average. Generator: (BCE(D(hr) - mean D(sr), 0) + BCE(D(sr) -
  mean D(hr), 1)) / 2 with D(hr) detached. Discriminator: (BCE(D(hr) - mean D(sr), 1) +
  BCE(D(sr) - mean D(hr), 0)) / 2, each mean taken over detached logits.
- ``vanilla`` (SRGAN): generator BCE(D(sr), 1); discriminator BCE(D(hr), 1) + BCE(D(sr), 0).
- ``hinge``: generator -mean D(sr); discriminator mean relu(1 - D(hr)) + mean relu(1 + D(sr)).

BCE is ``binary_cross_entropy_with_logits`` averaged over every logit (per image for the
VGG-style discriminator, per pixel for the U-Net one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GAN_KINDS: tuple[str, ...] = ("relativistic", "vanilla", "hinge")


def _bce(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def generator_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """The generator's adversarial loss from D's logits on HR (`real`) and SR (`fake`)."""
    if kind == "relativistic":
        real = real.detach()
        return (_bce(real - fake.mean(), False) + _bce(fake - real.mean(), True)) / 2
    if kind == "vanilla":
        return _bce(fake, True)
    if kind == "hinge":
        return -fake.mean()
    raise ValueError(f"unknown GAN kind {kind!r}; allowed: {', '.join(GAN_KINDS)}")


def discriminator_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's loss from its logits on HR (`real`) and detached SR (`fake`)."""
    if kind == "relativistic":
        return (
            _bce(real - fake.detach().mean(), True) + _bce(fake - real.detach().mean(), False)
        ) / 2
    if kind == "vanilla":
        return _bce(real, True) + _bce(fake, False)
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    raise ValueError(f"unknown GAN kind {kind!r}; allowed: {', '.join(GAN_KINDS)}")
