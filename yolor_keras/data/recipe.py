"""`AugmentationRecipe`: the augmentation half of an official YOLOR hyp file."""

import dataclasses
import math

import yaml


@dataclasses.dataclass(frozen=True)
class AugmentationRecipe:
    """Augmentation strengths, named and defaulted as in `hyp.scratch.1280.yaml`.

    Every random choice the training pipeline makes is drawn from these
    values, so a recipe fully describes the augmentation of a run.

    Args:
        hsv_h: hue gain range; the hue is multiplied by U(1 - hsv_h, 1 + hsv_h).
        hsv_s: saturation gain range, applied the same way.
        hsv_v: value (brightness) gain range, applied the same way.
        degrees: rotation range in degrees, U(-degrees, degrees).
        translate: translation range as a fraction of the output size.
        scale: zoom range, U(1 - scale, 1 + scale).
        shear: shear range in degrees, drawn separately for x and y.
        perspective: perspective coefficient range, U(-perspective, perspective).
        flipud: probability of an up-down flip.
        fliplr: probability of a left-right flip.
        mosaic: probability of a mosaic (else one letterboxed image).
        mixup: probability of blending with a second mosaic, ratio ~ Beta(8, 8).
        mosaic_tiles: images per mosaic: 4 (the official `train.py`, a 2 x 2
            mosaic around a random centre) or 9 (the official `tune.py`
            fine-tuning stage, a 3 x 3 mosaic cropped at a random offset).
            Not an official hyp key (the official code picks the mosaic by
            script), so hyp files without it get 4.
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.5
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.0
    mosaic_tiles: int = 4

    def __post_init__(self):
        # A count, not a strength: checked on its own, before the numbers.
        tiles = self.mosaic_tiles
        # Exactly the int 4 or 9: 9.0 would later slice and count as a float.
        if type(tiles) is not int or tiles not in (4, 9):
            raise ValueError(
                f"Augmentation recipe field 'mosaic_tiles' must be 4 or 9 "
                f"(images per mosaic), got {tiles!r}."
            )
        for field in dataclasses.fields(self):
            if field.name == "mosaic_tiles":
                continue
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"Augmentation recipe field '{field.name}' must be a number, got {value!r}."
                )
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"Augmentation recipe field '{field.name}' must be a finite "
                    f"number >= 0, got {value!r}."
                )
        for name in ("flipud", "fliplr", "mosaic", "mixup"):
            if getattr(self, name) > 1:
                raise ValueError(
                    f"Augmentation recipe field '{name}' is a probability and "
                    f"must be in [0, 1], got {getattr(self, name)!r}."
                )
        if self.scale >= 1:
            # U(1 - scale, 1 + scale) would reach zero or negative zoom.
            raise ValueError(f"Augmentation recipe field 'scale' must be < 1, got {self.scale!r}.")

    @classmethod
    def from_dict(cls, hyp):
        """Builds a recipe from a hyp dict; non-augmentation keys are ignored.

        Args:
            hyp: a mapping with (some of) the keys of `hyp.scratch.1280.yaml`,
                e.g. the whole parsed hyp file including `lr0`, `box`, ...
                Missing augmentation keys keep their defaults.
        """
        if not isinstance(hyp, dict):
            raise TypeError(f"Expected a dict of hyperparameters, got {type(hyp)}.")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in hyp.items() if key in names})

    @classmethod
    def from_yaml(cls, path):
        """Reads the augmentation keys of an official `hyp.*.yaml` file.

        Args:
            path: path of the YAML file.
        """
        with open(path, encoding="utf-8") as file:
            hyp = yaml.safe_load(file)
        if not isinstance(hyp, dict):
            raise ValueError(f"{path}: expected a mapping of hyperparameters.")
        try:
            return cls.from_dict(hyp)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error

    def to_dict(self):
        """Returns the recipe as a plain dict (the hyp-file keys)."""
        return dataclasses.asdict(self)
