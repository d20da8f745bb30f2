"""The one hook mechanism of xaikit: capture what layers output, remove every hook after.

:class:`Capture` registers a forward hook on each chosen layer for the duration of a
``with`` block. Each captured output is cut from the graph before it and made a leaf that
requires grad (``detach().requires_grad_()``), so

* ``torch.autograd.grad(score, capture.activations[name])`` backpropagates only from the
  output to the layer - never further, and never into parameters;
* it works inside ``torch.no_grad()`` callers and on frozen models (the context that runs the
  forward enables grad);
* in-place operations after the layer (``ReLU(inplace=True)``) never change the captured
  tensor: the layer's output is passed on as it is (no copy, the common case), and when the
  forward pass turns out to modify it in place - autograd refuses the in-place operation on
  the leaf, or the tensor's version counter moved - the pass is run again with a copy passed
  on instead. The layer is remembered, so later captures of it copy from the start.

With ``stop=True`` the forward pass ends at the last captured layer: nothing after it runs.
Gradient hooks are never registered on modules (module full-backward hooks break with
in-place operations); gradients are asked of autograd directly.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from xaikit.errors import XaikitConfigError

#: Layers whose output the rest of the network modifies in place: captures pass on a copy.
_MODIFIED_IN_PLACE: weakref.WeakSet[nn.Module] = weakref.WeakSet()
#: The words of autograd's error for an in-place operation on a leaf that requires grad.
_IN_PLACE_ERROR = "leaf Variable that requires grad is being used in an in-place operation"


class StopForward(Exception):
    """Raised by a capture hook to end a forward pass early (caught by :meth:`Capture.run`)."""


def _first_tensor(output: Any) -> torch.Tensor:
    """The tensor a layer produced: itself, or the first element of a tuple (``nn.LSTM``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise XaikitConfigError(
        f"the chosen layer outputs {type(output).__name__}, not a tensor; choose a layer "
        "whose output is a tensor"
    )


class Capture:
    """Capture the outputs of ``layers`` during forward passes run inside the block.

    Args:
        model: the network.
        layers: ``{name: module}`` to capture.
        grad: make each captured output a leaf that requires grad (for gradients w.r.t.
            activations); otherwise store it detached.
        keep_graph: store each output still attached to the graph before it (implies
            ``grad``), for gradients with respect to the *input* (activation maximization).
        stop: end the forward pass once every layer has been captured.

    Example::

        with Capture(model, {"features": model.features}, grad=True) as cap:
            logits = cap.run(images)
            acts = cap.activations["features"]            # (N, C, h, w), requires grad
            grads, = torch.autograd.grad(logits[:, 3].sum(), acts)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Mapping[str, nn.Module],
        *,
        grad: bool = False,
        keep_graph: bool = False,
        stop: bool = False,
    ) -> None:
        self.model = model
        self.layers = dict(layers)
        self.grad = grad or keep_graph
        self.keep_graph = keep_graph
        self.stop = stop
        self.activations: dict[str, torch.Tensor] = {}
        #: How many times each layer ran in the last forward pass (the last call is kept).
        self.calls: dict[str, int] = {}
        #: Layers whose output was a tuple (its first tensor is captured).
        self.tuples: set[str] = set()
        self._versions: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> Capture:
        try:
            for name, module in self.layers.items():
                self._handles.append(module.register_forward_hook(self._hook(name, module)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this capture registered (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __del__(self) -> None:
        self.close()

    def _hook(self, name: str, module: nn.Module):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            tensor = _first_tensor(output)
            self.calls[name] = self.calls.get(name, 0) + 1
            if not isinstance(output, torch.Tensor):
                self.tuples.add(name)
            if not self.grad:
                stored = tensor.detach()
            elif self.keep_graph:
                stored = tensor
            else:
                stored = tensor.detach().requires_grad_(True)
            self.activations[name] = stored
            self._versions[name] = stored._version
            if self.stop and len(self.activations) == len(self.layers):
                raise StopForward
            if module in _MODIFIED_IN_PLACE:
                # The rest of the network must not get the stored tensor, or its in-place
                # operations would change the capture.
                if not self.grad:
                    self.activations[name] = stored.clone()
                    return None
                passed_on = stored.clone()
            elif not self.grad or self.keep_graph:
                return None  # the output itself goes on; its version counter is watched
            else:
                passed_on = stored  # the leaf goes on, so the backward stops at it
            return replace_first(output, passed_on)

        return hook

    def run(self, *inputs: Any, **kwargs: Any) -> Any:
        """Run the model forward and check that every layer ran.

        Returns the model's output, or ``None`` when ``stop=True`` ended the pass early.
        """
        try:
            output = self._forward(inputs, kwargs)
        except RuntimeError as err:
            if _IN_PLACE_ERROR not in str(err) or not self._mark_modified():
                raise
            output = self._forward(inputs, kwargs)
        else:
            if self._mark_modified(only_changed=True):
                output = self._forward(inputs, kwargs)
        missing = [name for name in self.layers if name not in self.activations]
        if missing:
            raise XaikitConfigError(
                f"layer(s) {', '.join(missing)} never ran in the forward pass; choose a layer "
                "that the model calls (see `xaikit layers`)"
            )
        return output

    def _forward(self, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.activations.clear()
        self.calls.clear()
        self._versions.clear()
        with torch.enable_grad() if self.grad else torch.no_grad():
            try:
                return self.model(*inputs, **kwargs)
            except StopForward:
                return None

    def _mark_modified(self, *, only_changed: bool = False) -> bool:
        """Remember the captured layers whose output was passed on uncopied (all of them, or
        only those whose tensor was modified in place); ``True`` when a rerun is needed."""
        marked = False
        for name, module in self.layers.items():
            if module in _MODIFIED_IN_PLACE or name not in self.activations:
                continue
            if only_changed and self.activations[name]._version == self._versions[name]:
                continue
            _MODIFIED_IN_PLACE.add(module)
            marked = True
        return marked


def replace_first(output: Any, tensor: torch.Tensor) -> Any:
    """``output`` with its (first) tensor replaced, of the same type: a list stays a list
    (SelecSLS's blocks test ``isinstance(x, list)``), a tuple a tuple."""
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, list):
        return [tensor, *output[1:]]
    return (tensor, *output[1:])


def hook_count(model: nn.Module) -> int:
    """How many forward / backward / pre-hooks are registered on ``model``'s modules."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total


def iter_hooks(model: nn.Module) -> Iterator[tuple[str, str]]:
    """Yield ``(module name, hook kind)`` for every registered hook (for error messages)."""
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            for _ in getattr(module, kind):
                yield name, kind
