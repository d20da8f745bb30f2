"""``xaikit serve``: a local explorer of models, heatmaps and filters in the browser.

:func:`create_app` builds the FastAPI application (routes in :mod:`xaikit.serve.app`);
``xaikit serve`` runs it with uvicorn. The parts, one job each: :mod:`~xaikit.serve.models`
(the models and data offered), :mod:`~xaikit.serve.work` (what the worker computes, through
the library's API), :mod:`~xaikit.serve.jobs` (the worker, progress, cancel),
:mod:`~xaikit.serve.cache` (the bounded LRU of results), :mod:`~xaikit.serve.views`
(PNG / ``.npy`` / JSON), :mod:`~xaikit.serve.security` (token, Host check, limits). The page
is plain HTML, JavaScript and CSS in ``xaikit/serve/static`` (no build step, no network).

FastAPI is imported only when an application is built, so ``import xaikit.serve`` is cheap.
"""

from __future__ import annotations

from typing import Any


def create_app(
    models: Any = None, data: str | None = None, token: str | None = None, **kwargs: Any
) -> Any:
    """The application: see :func:`xaikit.serve.app.create_app`."""
    from xaikit.serve.app import create_app as build

    return build(models=models, data=data, token=token, **kwargs)


__all__ = ["create_app"]
