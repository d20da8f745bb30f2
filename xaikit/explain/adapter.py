"""Models as people really have them: wrapped, with several inputs, with non-tensor outputs.

:class:`ModelAdapter` turns any classifier into ``forward(x) -> (M, num_outputs)`` scores of
the one input being explained, so every method (CAM, gradient, perturbation) sees the same
simple function:

* ``DataParallel`` / ``DistributedDataParallel`` wrappers are unwrapped (hooks go on the
  bare module, which runs on its own device);
* inputs may be a tensor, a tuple/list (positional arguments) or a dict (keyword
  arguments); ``attribute_to`` names the input that is explained (an index or a key), the
  others are passed through unchanged (tensors that carry the batch follow their rows when
  Score-CAM evaluates masked copies; integrated gradients, SmoothGrad and occlusion expand
  the batch in their own layout, so on such models they explain one input at a time);
* every tensor input is moved to the model's device;
* outputs may be a tensor, a tuple/list, a dict (or HuggingFace ``ModelOutput``) or any
  object; ``output=`` selects the scores (an index, a key, an attribute name or a callable).
  Without ``output=``: a tuple/list gives its first element, a mapping its ``"logits"`` key,
  an object its ``.logits`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.state import model_device
from xaikit.warn import warn_user
from xaikit.zoo.heads import ClassifierHead, Task, get_task

OutputSelector = int | str | Callable[[Any], torch.Tensor] | None
InputKey = int | str
SCORES = ("logit", "prob")


class ExplainWarning(UserWarning):
    """Something about an explanation deserves attention but is not an error."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside ``DataParallel`` / ``DistributedDataParallel`` wrappers."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def select_output(output: Any, selector: OutputSelector = None) -> torch.Tensor:
    """Pick the score tensor out of whatever the model returned (see the module docstring)."""
    if selector is None:
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, (tuple, list)) and output:
            return _as_tensor(output[0], "the first element of the model's output")
        if isinstance(output, Mapping):
            if "logits" in output:
                return _as_tensor(output["logits"], "output['logits']")
            raise XaikitConfigError(
                f"the model returns a mapping with keys {list(output)}; pass output=<key> to "
                "choose the scores to explain"
            )
        if hasattr(output, "logits"):
            return _as_tensor(output.logits, "output.logits")
        raise XaikitConfigError(
            f"the model returns {type(output).__name__}; pass output= (an index, key, "
            "attribute name or callable) to choose the scores to explain"
        )
    if callable(selector):
        return _as_tensor(selector(output), "output(...)")
    if isinstance(selector, int) and not isinstance(selector, bool):
        if not isinstance(output, (tuple, list)):
            output = _as_sequence(output)
        if not isinstance(output, (tuple, list)):
            raise XaikitConfigError(
                f"output={selector} indexes a tuple, but the model returns {type(output).__name__}"
            )
        if not -len(output) <= selector < len(output):
            raise XaikitConfigError(
                f"output={selector} is out of range: the model returns {len(output)} outputs"
            )
        return _as_tensor(output[selector], f"output[{selector}]")
    if isinstance(selector, str):
        if isinstance(output, Mapping):
            if selector not in output:
                raise XaikitConfigError(
                    f"output={selector!r}: the model's output has keys {list(output)}"
                )
            return _as_tensor(output[selector], f"output[{selector!r}]")
        if hasattr(output, selector):
            return _as_tensor(getattr(output, selector), f"output.{selector}")
        raise XaikitConfigError(
            f"output={selector!r}: the model returns {type(output).__name__}, which has no "
            "such key or attribute"
        )
    raise XaikitConfigError(
        f"output= must be an index, a key, an attribute name or a callable; got {selector!r}"
    )


def _as_sequence(output: Any) -> Any:
    """A Hugging Face ``ModelOutput`` indexed by position: its fields that are set, in order
    (what ``output[0]`` gives there); other objects are returned unchanged."""
    to_tuple = getattr(output, "to_tuple", None)
    if callable(to_tuple):
        return tuple(to_tuple())
    if isinstance(output, Mapping):
        return tuple(value for value in output.values() if value is not None)
    return output


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise XaikitConfigError(f"{what} is a {type(value).__name__}, not a tensor of scores")
    return value


def as_scores(output: torch.Tensor, batch: int) -> torch.Tensor:
    """Check and shape the selected output: ``(M,)`` or ``(M, num_outputs)`` -> 2-D."""
    if output.dim() == 1 and output.shape[0] == batch:
        return output.unsqueeze(1)
    if output.dim() != 2 or output.shape[0] != batch:
        raise XaikitConfigError(
            f"the selected model output has shape {tuple(output.shape)}; explanations need "
            f"scores shaped ({batch}, num_outputs). Pass output= to select a tensor, or a "
            "callable that reduces the output to one score per class"
        )
    return output


def final_activation(model: nn.Module) -> str | None:
    """``"Softmax"``, ``"LogSoftmax"`` or ``"Sigmoid"`` if that is the model's last leaf module.

    The last leaf in registration order (the end of ``model.modules()``) is found by following
    the last child down, in time proportional to the depth.
    """
    last = model
    while True:
        children = [child for child in last._modules.values() if child is not None]
        if not children:
            break
        last = children[-1]
    if isinstance(last, (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)):
        return type(last).__name__
    return None


@dataclass
class PreparedInputs:
    """The model's inputs on its device, and which one is explained."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: InputKey

    @property
    def attributed(self) -> torch.Tensor:
        """The explained input, ``(N, C, *S)``."""
        return self.kwargs[self.key] if isinstance(self.key, str) else self.args[self.key]

    @property
    def batch(self) -> int:
        return self.attributed.shape[0]

    def with_input(
        self, x: torch.Tensor, rows: torch.Tensor | None = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Arguments for a forward pass on ``x`` in place of the explained input.

        ``rows`` (``(M,)`` long) says which original sample each row of ``x`` belongs to;
        tensors of the other inputs that carry the batch (first dimension ``N``) are indexed
        with it. Without ``rows`` the batch must be ``M = N`` rows (or ``N = 1``, every row
        then belongs to the one sample): methods that expand the batch in their own layout
        (integrated gradients, SmoothGrad, occlusion) cannot be matched row by row.
        """
        n, m = self.batch, x.shape[0]
        others_batched = any(self._batched(v, n) for k, v in self._items() if k != self.key)
        if not others_batched or (rows is None and m == n):
            rows = None
        elif rows is None:
            if n != 1:
                raise XaikitConfigError(
                    f"this method evaluates batches of {m} rows for {n} inputs, and the other "
                    "inputs of the model carry the batch too, so their rows cannot be matched; "
                    "explain one input at a time (N=1) with this method"
                )
            rows = torch.zeros(m, dtype=torch.long, device=x.device)

        def fix(key: InputKey, value: Any) -> Any:
            if key == self.key:
                return x
            if rows is not None and self._batched(value, n):
                return value.index_select(0, rows.to(value.device))
            return value

        args = tuple(fix(i, v) for i, v in enumerate(self.args))
        kwargs = {k: fix(k, v) for k, v in self.kwargs.items()}
        return args, kwargs

    def _items(self) -> list[tuple[InputKey, Any]]:
        return [*enumerate(self.args), *self.kwargs.items()]

    @staticmethod
    def _batched(value: Any, n: int) -> bool:
        return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n


def prepare_inputs(
    inputs: Any,
    attribute_to: InputKey,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> PreparedInputs:
    """Move tensor inputs to ``device`` (floating ones to the model's ``dtype``) and find the
    explained one.

    Args:
        inputs: a tensor ``(N, C, *S)``; a tuple/list of positional inputs; or a dict of
            keyword inputs.
        attribute_to: index (tuple) or key (dict) of the explained input; ``0`` means the
            first key of a dict.
    """

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if value.device.type == "meta":
                raise XaikitConfigError(
                    f"the inputs are on the meta device (shapes without data); the model is "
                    f"on {device}: give inputs that hold values"
                )
            if value.is_inference():
                value = value.clone()  # inference tensors cannot enter autograd
            # A float16 or float64 image for a float32 model would fail inside its forward.
            cast = dtype if dtype is not None and value.is_floating_point() else None
            return value.detach().to(device=device, dtype=cast)
        return value

    if isinstance(inputs, torch.Tensor):
        if attribute_to not in (0, None):
            raise XaikitConfigError(
                f"attribute_to={attribute_to!r} needs several inputs; got a single tensor"
            )
        prepared = PreparedInputs((move(inputs),), {}, 0)
    elif isinstance(inputs, (tuple, list)):
        if not inputs:
            raise XaikitConfigError("inputs is an empty sequence; give at least one tensor")
        key = 0 if attribute_to is None else attribute_to
        if not isinstance(key, int) or not -len(inputs) <= key < len(inputs):
            raise XaikitConfigError(
                f"attribute_to={attribute_to!r} must index one of the {len(inputs)} inputs"
            )
        prepared = PreparedInputs(tuple(move(v) for v in inputs), {}, key % len(inputs))
    elif isinstance(inputs, Mapping):
        keys = list(inputs)
        if not keys:
            raise XaikitConfigError("inputs is an empty dict; give at least one tensor")
        key = keys[0] if attribute_to in (0, None) else attribute_to
        if key not in inputs:
            raise XaikitConfigError(
                f"attribute_to={attribute_to!r} is not one of the input keys {keys}"
            )
        prepared = PreparedInputs((), {k: move(v) for k, v in inputs.items()}, key)
    else:
        raise XaikitConfigError(
            f"inputs must be a tensor, a tuple/list or a dict of inputs; got "
            f"{type(inputs).__name__}"
        )
    x = prepared.attributed
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise XaikitConfigError(
            "the explained input must be a batch tensor shaped (N, C, *S); got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise XaikitConfigError(
            f"the explained input must be a floating-point tensor; got {x.dtype}"
        )
    return prepared


class ModelAdapter:
    """One classifier interface for every method: ``forward(x) -> (M, num_outputs)``.

    Args:
        model: the network (a ``DataParallel`` wrapper is unwrapped).
        inputs: what the model is called with (see :func:`prepare_inputs`).
        output: selects the scores from the model's output (see :func:`select_output`).
        attribute_to: which input is explained.
        score: ``"logit"`` (default) explains the raw outputs; ``"prob"`` explains the
            probabilities of the head's task (softmax for multi-class, sigmoid for
            multi-label and binary).
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        *,
        output: OutputSelector = None,
        attribute_to: InputKey = 0,
        score: str = "logit",
    ) -> None:
        if score not in SCORES:
            raise XaikitConfigError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
        self.model = unwrap(model)
        self.device = model_device(self.model)
        if self.device.type == "meta":
            raise XaikitConfigError(
                "the model's parameters are on the meta device (built empty); load its weights "
                "first, e.g. model.to_empty(device='cpu') then load_state_dict(...)"
            )
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        self.inputs = prepare_inputs(inputs, attribute_to, self.device, dtype)
        attributed = self.inputs.attributed
        if isinstance(attributed, torch.Tensor) and attributed.dim() > 0 and not len(attributed):
            raise XaikitConfigError("inputs must not be empty: the batch has 0 items")
        self.output = output
        self.score = score
        self.task: Task = get_task(self.model)
        head = getattr(self.model, "head", None)
        self.head: ClassifierHead | None = head if isinstance(head, ClassifierHead) else None

    @property
    def x(self) -> torch.Tensor:
        """The explained input on the model's device, ``(N, C, *S)``."""
        return self.inputs.attributed

    def call(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> Any:
        """Run the model on ``x`` (with the other inputs, see :meth:`PreparedInputs.with_input`)."""
        args, kwargs = self.inputs.with_input(x, rows)
        return self.model(*args, **kwargs)

    def logits(self, output: Any, batch: int) -> torch.Tensor:
        """The selected raw scores ``(M, num_outputs)`` of a model output."""
        return as_scores(select_output(output, self.output), batch)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the ``score`` choice: logits unchanged, or the task's probabilities."""
        if self.score == "prob":
            return self.task.probabilities(logits)
        return logits

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(M, C, *S) -> (M, num_outputs)`` explained scores (after ``score``)."""
        return self.scores(self.logits(self.call(x, rows), x.shape[0]))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self.task.probabilities(logits)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """The head's prediction (with its thresholds for multi-label and binary heads)."""
        if self.head is not None:
            return self.head.predict(logits)
        return self.task.predict(logits)

    def warn_final_activation(self) -> None:
        """Warn when the model already ends in Softmax/Sigmoid (gradients saturate)."""
        last = final_activation(self.model)
        if last is None:
            return
        advice = (
            f"score='prob' applies the task's {self.task.activation} on top of it"
            if self.score == "prob"
            else "its outputs are probabilities, whose gradients vanish for confident predictions"
        )
        warn_user(
            f"the model ends in nn.{last}: {advice}; explain the logits instead (remove the "
            f"final nn.{last}, or select the logits with output=)",
            ExplainWarning,
        )

    def trace_forward(self) -> Callable[[torch.Tensor], Any]:
        """A forward on the first sample, for tracing layers (``layer="auto"``); it returns
        the selected scores when they can be selected (the auto rule reads their width)."""

        def forward(x: torch.Tensor) -> Any:
            rows = torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
            output = self.call(x, rows)
            try:
                return select_output(output, self.output)
            except XaikitConfigError:
                return output

        return forward
