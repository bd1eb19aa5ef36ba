"""The sync gate: how much the U-Net may trust its SyncNet.

The sync term pushes the generator towards whatever the frozen SyncNet scores as "in sync".
A SyncNet at chance on held-out frames scores noise, and weighted 10x (SyncTalk_2D's weight)
it teaches the generator patterns that fool it instead of mouths. So the profile's sync
weight applies only once the SyncNet's held-out accuracy reaches the gate; below it (or when
it was never measured) the lower `sync_weight_below_gate` applies, with a warning that says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from synctalk.log import get_logger

log = get_logger("training.unet")


@dataclass(frozen=True)
class SyncGateDecision:
    weight: float  # the sync weight the U-Net trains with
    profile_weight: float
    threshold: float
    heldout_accuracy: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_sync_weight(profile_weight: float, threshold: float, below_weight: float,
                       heldout_accuracy: float | None) -> SyncGateDecision:
    """The sync weight for a SyncNet of this held-out accuracy; warns when it is lowered."""
    if threshold <= 0:
        return SyncGateDecision(profile_weight, profile_weight, threshold, heldout_accuracy,
                                True, "gate off (threshold 0)")
    if heldout_accuracy is not None and heldout_accuracy >= threshold:
        return SyncGateDecision(profile_weight, profile_weight, threshold, heldout_accuracy,
                                True, f"SyncNet held-out accuracy {heldout_accuracy:.3f} >= "
                                      f"gate {threshold:.3f}")
    measured = (f"was not measured (no held-out frames) and the gate is {threshold:.3f}"
                if heldout_accuracy is None
                else f"{heldout_accuracy:.3f} is below the gate {threshold:.3f}")
    reason = (f"SyncNet held-out accuracy {measured}: sync weight {below_weight:g} instead of "
              f"{profile_weight:g}, because a SyncNet near chance (0.5) rewards patterns that "
              f"fool it, not mouths that match the audio; train a better SyncNet or lower "
              f"the gate with --sync-gate")
    log.warning("unet_sync_gate_closed", heldout_accuracy=heldout_accuracy, gate=threshold,
                sync_weight=below_weight, profile_sync_weight=profile_weight, reason=reason)
    return SyncGateDecision(below_weight, profile_weight, threshold, heldout_accuracy, False,
                            reason)
