"""A :class:`~xaikit.explain.hooks.Capture` that keeps the graph back to the input.

``Capture`` cuts every captured output from the graph before it (right for CAMs, which
differentiate with respect to activations). Activation maximization differentiates a layer's
output with respect to the *input image*, so here the captured output is stored as the layer
produced it. Registration, removal, ``stop=True`` and the "did every layer run" check are
``Capture``'s own; only what is stored differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xaikit.explain.hooks import Capture, StopForward, _first_tensor


class GraphCapture(Capture):
    """Capture layer outputs still attached to the input's graph (``grad=True`` is implied).

    Example::

        with GraphCapture(model, {"features.block2": block}, stop=True) as cap:
            cap.run(images)                      # nothing after block2 runs
            score = cap.activations["features.block2"][:, 3].mean()
            (grad,) = torch.autograd.grad(score, images)
    """

    def __init__(
        self, model: nn.Module, layers: dict[str, nn.Module], *, stop: bool = False
    ) -> None:
        super().__init__(model, layers, grad=True, stop=stop)

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            tensor = _first_tensor(output)
            self.activations[name] = tensor
            if self.stop and len(self.activations) == len(self.layers):
                raise StopForward
            # The rest of the network gets a copy (still on the graph), so an in-place
            # operation after the layer (ReLU(inplace=True)) cannot change what was captured.
            passed_on = tensor.clone()
            return passed_on if isinstance(output, torch.Tensor) else (passed_on, *output[1:])

        return hook
