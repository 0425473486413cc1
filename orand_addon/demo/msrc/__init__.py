"""The MSRC-v2 benchmark (``orand-addon demo --dataset msrc --data DIR``): real photos, two real CAM sources from
frozen ImageNet EfficientNet-Lite backbones, and pretrained backbones in every stage. See ``docs/msrc.md``.

::

    from orand_addon.demo.run import run_demo
    run = run_demo("msrc_ci", dataset="msrc", data="MSRC_ObjCategImageDatabase_v2", size="ci")

Heavy modules (torch) are imported on first use.
"""

from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "MsrcBenchmark": "benchmark",
    "MsrcSize": "benchmark",
    "SIZES": "benchmark",
    "resolve_msrc_size": "benchmark",
    "make_sources": "cams",
    "class_cams": "cams",
    "fit_head": "cams",
    "SOURCES": "cams",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
