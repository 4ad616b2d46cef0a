"""Shared MuJoCo rendering helpers for the embedded simulations."""

from __future__ import annotations


def close_renderer(renderer) -> None:
    """Release a mujoco.Renderer (None is fine); EGL teardown errors at exit are harmless."""
    if renderer is None:
        return
    try:
        renderer.close()
    except Exception:  # noqa: BLE001
        pass
