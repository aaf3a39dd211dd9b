"""How an image becomes a model input: the contract between training and serving.

:class:`Preprocessing` travels with the weights into ``model.pt`` and the ONNX file;
:mod:`transferkit.imaging` implements it in numpy/Pillow for training, export checks and serving
alike. This module imports pydantic only (a serving install reads it without torch or ray).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Preprocessing", "Interpolation"]

Interpolation = Literal["nearest", "bilinear", "bicubic"]


class Preprocessing(BaseModel):
    """How an image becomes a model input; travels with the weights into ``model.pt`` and ONNX.

    The pipeline (identical in training, export validation and serving; see
    ``transferkit.imaging.preprocess``): decode -> composite transparency over ``background`` -> convert to ``channels`` (grey is replicated to 3
    channels when ``channels == 3``) -> resize the shorter side to ``round(input_size / crop_pct)``
    with ``interpolation`` -> center-crop ``input_size`` x ``input_size`` -> scale to [0, 1] ->
    ``(x - mean) / std`` per channel. The result is a float32 array of shape
    ``(channels, input_size, input_size)``.

    Attributes:
        input_size: side of the square model input, pixels.
        channels: 1 or 3.
        mean: per-channel mean in [0, 1] units (length ``channels``).
        std: per-channel standard deviation in [0, 1] units (length ``channels``), all > 0.
        interpolation: resize filter.
        crop_pct: fraction of the resized shorter side kept by the center crop (ImageNet's
            classic 256 -> 224 is 0.875). With 1.0 the shorter side becomes ``input_size`` and the
            longer side is center-cropped; a square image is then simply resized.
        background: RGB colour (0-255 each) that transparent pixels are composited over
            (``transferkit.imaging.to_mode``), so a transparent PNG reads as a viewer shows it on
            that colour; black by default.
    """

    # The same rules as transferkit.config's strict base (unknown keys are errors), spelled out
    # here because the config package imports this module, not the other way round.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    input_size: int = Field(224, ge=8, le=2048)
    channels: Literal[1, 3] = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: Interpolation = "bilinear"
    crop_pct: float = Field(1.0, gt=0.0, le=1.0)
    background: tuple[
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
    ] = (0, 0, 0)

    @model_validator(mode="after")
    def _lengths(self) -> Preprocessing:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need one value per channel ({self.channels}); "
                f"got mean={list(self.mean)}, std={list(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0; got {list(self.std)}")
        return self
