"""Numbers from the literature and the original project that the chapters compare against."""

from __future__ import annotations

__all__ = ["REFERENCE"]

#: Reference numbers of GUIDE section 4. Parameter counts and validation Dice *loss* of the
#: original notebooks (measured on a split made after augmentation, so optimistic) and the
#: best published per-site test Dice of U-Net-family models.
REFERENCE: dict[str, float] = {
    "unet_params": 7_759_521,
    "resunet_params": 4_722_737,
    "unet_val_dice_loss": 0.03169,
    "resunet_val_dice_loss": 0.02861,
    "best_dice_montgomery": 0.98,
    "best_dice_shenzhen_low": 0.95,
    "best_dice_shenzhen_high": 0.96,
}
