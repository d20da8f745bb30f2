"""Machine-readable metadata of every explanation-quality metric: direction, baseline, paper.

Each metric in :data:`METRICS` says whether a higher score is better, its range, the default
baseline it perturbs towards, the preprocessing applied to heatmaps before scoring and the paper
it implements, so a report (or a script) never has to guess how to read a number.
``metric_info("deletion_auc").to_dict()`` is what the JSON output of ``xaikit evaluate`` holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from xaikit.errors import XaikitConfigError


@dataclass(frozen=True)
class MetricInfo:
    """What one metric means and how it is computed.

    Attributes:
        name: the key used in results and JSON (``"deletion_auc"``).
        title: a short human title for tables.
        higher_is_better: ``True`` when a larger value means a better explanation.
        range: the smallest and largest value the metric can take.
        baseline: what perturbed pixels become, or what the score is compared against.
        preprocessing: what is done to a heatmap before scoring.
        paper: the reference the implementation follows.
        description: one sentence on what is measured.
    """

    name: str
    title: str
    higher_is_better: bool
    range: tuple[float, float]
    baseline: str
    preprocessing: str
    paper: str
    description: str

    @property
    def arrow(self) -> str:
        """``"↑"`` when higher is better, ``"↓"`` when lower is better."""
        return "↑" if self.higher_is_better else "↓"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field plus the direction arrow."""
        out = asdict(self)
        out["range"] = list(self.range)
        out["arrow"] = self.arrow
        return out


_RANKING = (
    "heatmap upsampled bilinearly to the input size; pixels ranked by value, highest first, "
    "ties broken by pixel index (row-major, earlier first); perturbation in input space, "
    "before the model's normalization when one is given"
)
_RISE = "Petsiuk, Das & Saenko (2018), RISE: Randomized Input Sampling for Explanation, BMVC"
_POINTING = (
    "Zhang, Bargal, Lin, Brandt, Shen & Sclaroff (2018), Top-down Neural Attention by "
    "Excitation Backprop, IJCV"
)
_ENERGY = (
    "Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu (2020), Score-CAM: Score-Weighted "
    "Visual Explanations for Convolutional Neural Networks, CVPR workshops"
)
_SANITY = (
    "Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018), Sanity Checks for Saliency "
    "Maps, NeurIPS"
)

_CONTRAST = (
    "xaikit's class-contrast score, a sanity check in the spirit of " + _SANITY + "; class-"
    "insensitive maps: Sixt, Granz & Landgraf (2020), When Explanations Lie: Why Many "
    "Modified BP Attributions Fail, ICML"
)

METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo(
            name="deletion_auc",
            title="deletion AUC",
            higher_is_better=False,
            range=(0.0, 1.0),
            baseline="zeros (removed pixels set to 0, as in RISE); 'blur' and 'mean' available",
            preprocessing=_RANKING,
            paper=_RISE,
            description="area under the target-class probability as the most salient pixels "
            "are removed step by step; a faithful map makes it drop fast",
        ),
        MetricInfo(
            name="insertion_auc",
            title="insertion AUC",
            higher_is_better=True,
            range=(0.0, 1.0),
            baseline="a Gaussian-blurred copy of the image (sigma 5 px, 11x11 kernel, as in "
            "RISE) into which the original pixels are inserted",
            preprocessing=_RANKING,
            paper=_RISE,
            description="area under the target-class probability as the most salient pixels "
            "are inserted into the blurred image; a faithful map makes it rise fast",
        ),
        MetricInfo(
            name="pointing_game",
            title="pointing game",
            higher_is_better=True,
            range=(0.0, 1.0),
            baseline="the ground-truth mask of the explained class (tolerance 0 px by default; "
            "the paper's 15 px is for 224x224 images)",
            preprocessing="heatmap upsampled bilinearly to the mask size; the maximum is the "
            "first one in row-major order",
            paper=_POINTING,
            description="fraction of maps whose maximum lies inside (within the tolerance of) "
            "the ground-truth mask of the explained class; maps for absent classes are skipped",
        ),
        MetricInfo(
            name="pointing_game_exact",
            title="pointing game (0 px)",
            higher_is_better=True,
            range=(0.0, 1.0),
            baseline="the ground-truth mask of the explained class, no tolerance (reported "
            "beside pointing_game when that one uses a tolerance)",
            preprocessing="heatmap upsampled bilinearly to the mask size; the maximum is the "
            "first one in row-major order",
            paper=_POINTING,
            description="fraction of maps whose maximum pixel itself lies inside the "
            "ground-truth mask of the explained class",
        ),
        MetricInfo(
            name="energy_pointing_game",
            title="energy pointing game",
            higher_is_better=True,
            range=(0.0, 1.0),
            baseline="the ground-truth mask of the explained class (pixel masks, not boxes)",
            preprocessing="heatmap upsampled bilinearly to the mask size; must be non-negative; "
            "an all-zero map scores 0",
            paper=_ENERGY,
            description="fraction of the heatmap's total energy (sum) that falls inside the "
            "ground-truth mask of the explained class",
        ),
        MetricInfo(
            name="randomization_spearman",
            title="randomization Spearman",
            higher_is_better=False,
            range=(-1.0, 1.0),
            baseline="the method's maps on the trained model",
            preprocessing="Spearman rank correlation with average ranks for ties, per map; "
            "two constant maps correlate 1, one constant map 0; reported after randomizing "
            "the top layers of a cascade (head first)",
            paper=_SANITY,
            description="similarity between maps of the trained model and of a copy whose top "
            "layers are re-initialized; a method that explains the model must change",
        ),
        MetricInfo(
            name="randomization_ssim",
            title="randomization SSIM",
            higher_is_better=False,
            range=(-1.0, 1.0),
            baseline="the method's maps on the trained model",
            preprocessing="maps min-max normalized to [0, 1]; Gaussian window 11 px, sigma 1.5 "
            "(shrunk to the map size), C1 = 0.01^2, C2 = 0.03^2",
            paper=_SANITY,
            description="structural similarity between maps of the trained model and of the "
            "randomized copy (same cascade step as the Spearman figure)",
        ),
        MetricInfo(
            name="class_contrast",
            title="class contrast (1-Spearman)",
            higher_is_better=True,
            range=(0.0, 2.0),
            baseline="maps of the same image for its other top-k classes",
            preprocessing="1 - Spearman rank correlation between the maps of each pair of the "
            "model's top-k classes, averaged over pairs and images",
            paper=_CONTRAST,
            description="how much the maps for different classes of one image differ; "
            "class-insensitive maps score near 0",
        ),
        MetricInfo(
            name="class_contrast_l1",
            title="class contrast (L1)",
            higher_is_better=True,
            range=(0.0, 1.0),
            baseline="maps of the same image for its other top-k classes",
            preprocessing="maps min-max normalized to [0, 1]; mean absolute difference per "
            "pixel, averaged over class pairs and images",
            paper=_CONTRAST,
            description="mean per-pixel distance between normalized maps of different classes",
        ),
    )
}


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of metric ``name`` (one of :data:`METRICS`)."""
    try:
        return METRICS[name]
    except KeyError:
        raise XaikitConfigError(
            f"unknown metric {name!r}; choose one of {', '.join(METRICS)}"
        ) from None
