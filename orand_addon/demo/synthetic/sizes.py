"""Named sizes of the synthetic benchmark (``ci``, ``default``, ``large``) and explicit overrides.

A size fixes the dataset (image size, number of train/val images) and the training length of the two
classifiers. ``default`` is sized for the CPU demo; ``ci`` for tests and CI; ``large`` for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ...errors import OrandError


@dataclass(frozen=True)
class SizeSpec:
    """Dataset and classifier-training size of one synthetic benchmark run."""

    height: int
    width: int
    n_train: int
    n_val: int
    cnn_epochs: int
    vit_epochs: int

    @property
    def image_size(self) -> tuple[int, int]:
        return self.height, self.width


SIZES: dict[str, SizeSpec] = {
    "ci": SizeSpec(height=64, width=80, n_train=300, n_val=60, cnn_epochs=8, vit_epochs=8),
    "default": SizeSpec(height=64, width=80, n_train=1000, n_val=200, cnn_epochs=15, vit_epochs=15),
    "large": SizeSpec(height=128, width=160, n_train=5000, n_val=1000, cnn_epochs=30, vit_epochs=30),
}


def resolve_size(spec: str | SizeSpec) -> SizeSpec:
    """A :class:`SizeSpec` from a name, or a name followed by ``key=value`` overrides, comma separated.

    Keys are the field names (``height``, ``width``, ``n_train``, ``n_val``, ``cnn_epochs``, ``vit_epochs``),
    plus ``image=N`` (square N x N) and ``image=HxW``; without a leading name, ``default`` is the base.

    >>> resolve_size("ci,n_train=50").n_train
    50
    >>> resolve_size("image=64x96").image_size
    (64, 96)
    >>> resolve_size("huge")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown size 'huge'; valid: ci, default, large, or NAME,key=value,... (keys: height, width, n_train, n_val, cnn_epochs, vit_epochs, image)
    """
    if isinstance(spec, SizeSpec):
        return spec
    valid = (f"valid: {', '.join(SIZES)}, or NAME,key=value,... "
             f"(keys: {', '.join(f.name for f in fields(SizeSpec))}, image)")
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    base = SIZES["default"]
    if parts and "=" not in parts[0]:
        if parts[0] not in SIZES:
            raise OrandError(f"unknown size {parts[0]!r}; {valid}")
        base = SIZES[parts.pop(0)]
    changes: dict[str, int] = {}
    names = {f.name for f in fields(SizeSpec)}
    for part in parts:
        key, _, value = part.partition("=")
        key = key.strip()
        try:
            if key == "image":
                h, _, w = value.lower().partition("x")
                changes["height"], changes["width"] = int(h), int(w or h)
            elif key in names:
                changes[key] = int(value)
            else:
                raise OrandError(f"unknown size key {key!r} in {spec!r}; {valid}")
        except ValueError:
            raise OrandError(f"size {spec!r}: {part!r} is not key=integer; {valid}") from None
    size = replace(base, **changes)
    if min(size.height, size.width) < 32 or size.n_train < 1 or size.n_val < 1:
        raise OrandError(f"size {spec!r}: images must be at least 32 px and both splits non-empty")
    if size.cnn_epochs < 1 or size.vit_epochs < 1:
        raise OrandError(f"size {spec!r}: epochs must be at least 1")
    return size
