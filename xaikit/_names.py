"""Names and defaults that ``xaikit --help`` shows, in a module that imports nothing.

The command line builds every command's parser, help text included, before it knows which
command runs, and that must not import torch (seconds, for ``xaikit --version``). The
modules that own these constants (:mod:`xaikit.explain.engine`, :mod:`xaikit.evaluate.suite`,
...) import them from here, so they stay the public names there and have one definition.
Where the library computes a list from a registry that needs torch (the CAM methods), the
names are written out here and ``tests/cli/test_startup.py`` checks them against it.

This module lives directly in ``xaikit`` because importing anything inside a sub-package
(``xaikit.explain.<module>``) first runs that package's ``__init__``, which imports torch.
"""

from __future__ import annotations

# xaikit.explain ---------------------------------------------------------------------------

#: The built-in CAM methods, in the order of ``xaikit.explain.cam.CAM_METHODS``.
CAM_NAMES: tuple[str, ...] = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "eigencam",
    "eigengradcam",
    "gradcam-elementwise",
    "kpcacam",
    "shapleycam",
    "finercam",
    "ablationcam",
    "sscam",
    "iscam",
    "smoothgradcam++",
    "fullgrad",
)
SCORE_CAM_METHODS: tuple[str, ...] = ("scorecam", "scorecam-fast")
GRADIENT_NAMES: tuple[str, ...] = (
    "saliency",
    "inputxgrad",
    "ig",
    "smoothgrad",
    "guided-backprop",
    "guided-gradcam",
    "occlusion",
    "deeplift",
    "deepliftshap",
    "gradientshap",
    "deconvolution",
    "feature-ablation",
    "lime",
    "kernelshap",
)
ATTENTION_METHODS: tuple[str, ...] = ("attention-rollout", "attention-gradients")
#: Layer-wise relevance propagation (``xaikit.lrp``; options ``composite``, ``canonize``, ...).
LRP_METHODS: tuple[str, ...] = ("lrp",)
#: Every built-in method name, as ``xaikit.explain.engine.METHODS``.
METHODS: tuple[str, ...] = (
    *CAM_NAMES,
    *SCORE_CAM_METHODS,
    *GRADIENT_NAMES,
    *ATTENTION_METHODS,
    *LRP_METHODS,
)
#: Other names accepted for a method: alias -> canonical name (the same map for images,
#: signals and sequences; ``xaikit.explain.temporal`` accepts the canonical names too).
METHOD_ALIASES: dict[str, str] = {"gradxinput": "inputxgrad"}
#: What ``reshape=`` accepts besides a callable.
RESHAPE_CHOICES: tuple[str, ...] = ("auto", "nchw", "nhwc", "tokens")
#: The files ``explain_files`` writes in its output folder: the summary and the journal.
RESULTS = "results.json"
JOURNAL = "results.jsonl"

# xaikit.evaluate --------------------------------------------------------------------------

#: What deleted pixels become in the deletion / insertion curves.
DELETION_BASELINES: tuple[str, ...] = ("zeros", "blur", "mean")
DEFAULT_STEPS = 32
#: The control maps the evaluation suite compares every method with.
DEFAULT_BASELINES: tuple[str, ...] = ("random", "gaussian")

# xaikit.viz.report, xaikit.demo -----------------------------------------------------------

#: Heatmap methods of the report's gallery: for CNNs, and for recurrent models.
REPORT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "layercam", "saliency")
REPORT_SEQUENCE_METHODS: tuple[str, ...] = ("inputxgrad", "ig", "occlusion")
#: The reference models ``xaikit demo`` needs, with the data set each is shown on.
DEMO_MODELS: dict[str, str] = {
    "shapes-multiclass": "shapes",
    "shapes-multilabel": "shapes-multilabel",
    "recall-lstm": "recall",
}
