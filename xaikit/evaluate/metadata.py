"""Machine-readable metadata of every explanation-quality metric: direction, baseline, paper.

Each metric in :data:`METRICS` says whether a higher score is better, its range, the default
baseline it perturbs towards, the preprocessing applied to heatmaps before scoring and the paper
it implements, so a report (or a script) never has to guess how to read a number.
``metric_info("deletion_auc").to_dict()`` is what the JSON output of ``xaikit evaluate`` holds.
"""

from __future__ import annotations

import math
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


_Q = "; definition, defaults and quirks as Quantus 0.6 (Hedström et al., 2023, JMLR)"
_FEATURES = (
    "attributions broadcast to the input's channels and flattened to C*H*W features; "
    "divided per sample by max |a| (normalise) unless told otherwise"
)
_MASKS = "attributions (N, H, W) against the ground-truth mask of the explained class"
_CATALOGUE_ROWS = [
    # name, title, higher_is_better, range, baseline, preprocessing, paper, description
    (
        "faithfulness_correlation",
        "faithfulness correlation",
        True,
        (-1.0, 1.0),
        "'black': each sample's minimum value",
        _FEATURES,
        "Bhatt, Weller & Moura (2020), Evaluating and Aggregating Feature-based Model "
        "Explanations, IJCAI",
        "Pearson correlation over random subsets between their attribution sum and the output "
        "drop when they are removed",
    ),
    (
        "faithfulness_estimate",
        "faithfulness estimate",
        True,
        (-1.0, 1.0),
        "'black': each sample's minimum value",
        _FEATURES,
        "Alvarez-Melis & Jaakkola (2018), Towards Robust Interpretability with Self-Explaining "
        "Neural Networks, NeurIPS",
        "Pearson correlation between each feature group's attribution and the output drop when "
        "that group alone is removed",
    ),
    (
        "monotonicity",
        "monotonicity (Arya)",
        True,
        (0.0, 1.0),
        "'black': features inserted into the sample's minimum value",
        _FEATURES + "; abs",
        "Arya et al. (2019), One Explanation Does Not Fit All: A Toolkit and Taxonomy of AI "
        "Explainability Techniques, arXiv:1909.03012",
        "1 when inserting features least relevant first never lowers the output",
    ),
    (
        "monotonicity_correlation",
        "monotonicity correlation",
        True,
        (-1.0, 1.0),
        "'uniform': one U(0, 1) value per sample and draw",
        _FEATURES + "; abs",
        "Nguyen & Martínez (2020), On Quantitative Aspects of Model Interpretability, "
        "arXiv:2007.07584",
        "Spearman correlation between feature attributions and the output variance when the "
        "features are replaced by noise",
    ),
    (
        "pixel_flipping",
        "pixel flipping AUC",
        False,
        (0.0, math.inf),
        "'black': each sample's minimum value",
        _FEATURES,
        "Bach et al. (2015), On Pixel-wise Explanations for Non-Linear Classifier Decisions by "
        "Layer-wise Relevance Propagation, PLoS ONE",
        "area (trapezoid, unit spacing) under the softmax output as features are removed, most "
        "relevant first",
    ),
    (
        "region_perturbation",
        "region perturbation (MoRF)",
        True,
        (-math.inf, math.inf),
        "'black': each sample's minimum value",
        _FEATURES + "; 8 px patches",
        "Samek, Binder, Montavon, Lapuschkin & Müller (2017), Evaluating the Visualization of "
        "What a Deep Neural Network Has Learned, IEEE TNNLS",
        "area under the output drop as patches are removed by attribution sum (AOPC times steps)",
    ),
    (
        "selectivity",
        "selectivity AUC",
        False,
        (0.0, math.inf),
        "'black': each sample's minimum value",
        _FEATURES + "; 8 px patches",
        "Montavon, Samek & Müller (2018), Methods for Interpreting and Understanding Deep Neural "
        "Networks, Digital Signal Processing",
        "area under the softmax output as patches are removed, most relevant first",
    ),
    (
        "sensitivity_n",
        "sensitivity-n",
        True,
        (-1.0, 1.0),
        "'black': each sample's minimum value",
        _FEATURES + "; values per subset size n",
        "Ancona, Ceolini, Öztireli & Gross (2018), Towards Better Understanding of Gradient-based "
        "Attribution Methods for Deep Neural Networks, ICLR",
        "Pearson correlation across samples, per n, of output drop and removed attribution",
    ),
    (
        "infidelity",
        "infidelity",
        False,
        (0.0, math.inf),
        "'black' patches (4 px) removed one after another",
        _FEATURES,
        "Yeh, Hsieh, Suggala, Inouye & Ravikumar (2019), On the (In)fidelity and Sensitivity of "
        "Explanations, NeurIPS",
        "mean squared difference between the output drop and sum(a * (x - x_perturbed))",
    ),
    (
        "max_sensitivity",
        "max-sensitivity",
        False,
        (0.0, math.inf),
        "U(-0.2, 0.2) noise on every feature",
        "re-explained; " + _FEATURES,
        "Yeh et al. (2019), On the (In)fidelity and Sensitivity of Explanations, NeurIPS",
        "largest relative change ||a - a'|| / ||a|| over noisy inputs",
    ),
    (
        "avg_sensitivity",
        "avg-sensitivity",
        False,
        (0.0, math.inf),
        "U(-0.2, 0.2) noise on every feature",
        "re-explained; " + _FEATURES,
        "Yeh et al. (2019), On the (In)fidelity and Sensitivity of Explanations, NeurIPS",
        "mean relative change ||a - a'|| / ||a|| over noisy inputs",
    ),
    (
        "local_lipschitz_estimate",
        "local Lipschitz estimate",
        False,
        (0.0, math.inf),
        "N(0, 0.1^2) noise on every feature",
        "re-explained; " + _FEATURES,
        "Alvarez-Melis & Jaakkola (2018), On the Robustness of Interpretability Methods, ICML "
        "workshops",
        "largest ||a - a'|| / ||x - x'|| over noisy inputs",
    ),
    (
        "relative_input_stability",
        "relative input stability",
        False,
        (0.0, math.inf),
        "U(0.02, 0.2) noise; NaN when the prediction changes",
        "re-explained; " + _FEATURES,
        "Agarwal et al. (2022), Rethinking Stability for Attribution-based Explanations, "
        "arXiv:2203.06877",
        "largest relative attribution change over relative input change",
    ),
    (
        "relative_output_stability",
        "relative output stability",
        False,
        (0.0, math.inf),
        "U(0.02, 0.2) noise; NaN when the prediction changes",
        "re-explained; " + _FEATURES,
        "Agarwal et al. (2022), Rethinking Stability for Attribution-based Explanations, "
        "arXiv:2203.06877",
        "largest relative attribution change over logit change",
    ),
    (
        "relative_representation_stability",
        "relative representation stability",
        False,
        (0.0, math.inf),
        "U(0.02, 0.2) noise; NaN when the prediction changes",
        "re-explained; " + _FEATURES,
        "Agarwal et al. (2022), Rethinking Stability for Attribution-based Explanations, "
        "arXiv:2203.06877",
        "largest relative attribution change over relative change of internal representations",
    ),
    (
        "attribution_localisation",
        "attribution localisation",
        True,
        (0.0, 1.0),
        _MASKS,
        "abs; divided by max |a|",
        "Kohlbrenner et al. (2020), Towards Best Practice in Explaining Neural Network "
        "Decisions with LRP, IJCNN",
        "share of the total attribution inside the mask",
    ),
    (
        "top_k_intersection",
        "top-k intersection",
        True,
        (0.0, 1.0),
        _MASKS,
        "divided by max |a|; k = 1000 pixels (fewer for small images)",
        "Theiner, Müller-Budack & Ewerth (2022), Interpretable Semantic Photo Geolocation, WACV",
        "fraction of the k most relevant pixels inside the mask",
    ),
    (
        "relevance_rank_accuracy",
        "relevance rank accuracy",
        True,
        (0.0, 1.0),
        _MASKS,
        "divided by max |a|",
        "Arras, Osman & Samek (2022), CLEVR-XAI: A Benchmark Dataset for the Ground Truth "
        "Evaluation of Neural Network Explanations, Information Fusion",
        "fraction of the K most relevant pixels inside the K-pixel mask",
    ),
    (
        "relevance_mass_accuracy",
        "relevance mass accuracy",
        True,
        (0.0, 1.0),
        _MASKS,
        "divided by max |a|",
        "Arras, Osman & Samek (2022), CLEVR-XAI, Information Fusion",
        "relevance inside the mask over the total relevance",
    ),
    (
        "localisation_auc",
        "localisation ROC AUC",
        True,
        (0.0, 1.0),
        _MASKS + "; 0.5 is chance",
        "divided by max |a|",
        "Fawcett (2006), An Introduction to ROC Analysis, Pattern Recognition Letters",
        "ROC AUC of the attributions as a detector of mask pixels",
    ),
    (
        "sparseness",
        "sparseness (Gini)",
        True,
        (0.0, 1.0),
        "none (the map alone)",
        "abs; divided by max |a|",
        "Chalasani, Chen, Chowdhury, Wu & Jha (2020), Concise Explanations of Neural Networks "
        "using Adversarial Training, ICML",
        "Gini index of the attribution values",
    ),
    (
        "complexity",
        "complexity (entropy)",
        False,
        (0.0, math.inf),
        "none (the map alone)",
        "abs; divided by max |a|",
        "Bhatt, Weller & Moura (2020), Evaluating and Aggregating Feature-based Model "
        "Explanations, IJCAI",
        "entropy of the attributions as a distribution",
    ),
    (
        "effective_complexity",
        "effective complexity",
        False,
        (0.0, math.inf),
        "none (the map alone)",
        "abs; divided by max |a|; eps = 1e-5",
        "Nguyen & Martínez (2020), On Quantitative Aspects of Model Interpretability, "
        "arXiv:2007.07584",
        "number of features with attribution above eps",
    ),
    (
        "mprt",
        "model parameter randomisation",
        False,
        (-1.0, 1.0),
        "the method's maps on the model with every layer re-initialised, top-down",
        "abs; divided by max |a|; Spearman rank correlation",
        _SANITY,
        "Spearman correlation between the maps of the trained and the randomised model",
    ),
    (
        "smooth_mprt",
        "smooth MPRT",
        False,
        (-1.0, 1.0),
        "maps averaged over noisy inputs, on the model randomised bottom-up",
        "abs; divided by max |a|; Spearman rank correlation",
        "Hedström, Weber, Lapuschkin & Höhne (2024), A Fresh Look at Sanity Checks for Saliency "
        "Maps (sMPRT), xAI / TMLR",
        "Spearman correlation of noise-averaged maps of the trained and the randomised model",
    ),
    (
        "efficient_mprt",
        "efficient MPRT",
        True,
        (-1.0, math.inf),
        "the method's maps on the model randomised bottom-up",
        "entropy of a 100-bin histogram (Quantus: no abs, no normalisation)",
        "Hedström, Weber, Lapuschkin & Höhne (2024), A Fresh Look at Sanity Checks for Saliency "
        "Maps (eMPRT), xAI / TMLR",
        "relative rise of the explanation complexity from the trained to the randomised model",
    ),
    (
        "random_logit",
        "random logit",
        False,
        (-1.0, 1.0),
        "the map of a random other class (numpy seed 42, as Quantus)",
        "divided by max |a|; 1-D SSIM (window 7) of the flattened maps",
        "Sixt, Granz & Landgraf (2020), When Explanations Lie: Why Many Modified BP "
        "Attributions Fail, ICML",
        "similarity between the maps of the target class and of a random other class",
    ),
    (
        "completeness",
        "completeness",
        True,
        (0.0, 1.0),
        "'black': the sample's minimum everywhere",
        _FEATURES,
        "Sundararajan, Taly & Yan (2017), Axiomatic Attribution for Deep Networks, ICML",
        "1 when the attributions sum to f(x) - f(baseline) (exactly, as Quantus)",
    ),
    (
        "non_sensitivity",
        "non-sensitivity",
        False,
        (0.0, math.inf),
        "'black': each feature set to the sample's minimum alone",
        _FEATURES + "; abs",
        "Nguyen & Martínez (2020), On Quantitative Aspects of Model Interpretability, "
        "arXiv:2007.07584",
        "number of features where zero attribution and no output change disagree",
    ),
    (
        "input_invariance",
        "input invariance",
        True,
        (0.0, 1.0),
        "a constant shift (-1) of the input, compensated in the model",
        "none",
        "Kindermans et al. (2019), The (Un)reliability of Saliency Methods, in Explainable AI, "
        "Springer LNCS 11700",
        "1 when the map is unchanged by a compensated constant input shift",
    ),
    (
        "irof",
        "IROF",
        True,
        (0.0, math.inf),
        "superpixels (SLIC) replaced by the mean of the images perturbed so far (batch-wide, as "
        "Quantus)",
        _FEATURES,
        "Rieger & Hansen (2020), IROF: a low resource evaluation metric for explanation methods, "
        "ICLR workshops",
        "area over the y_perturbed / y curve as superpixels are removed, most relevant first",
    ),
    (
        "road",
        "ROAD (MoRF accuracy)",
        False,
        (0.0, 1.0),
        "noisy linear imputation (8-neighbour weights 1/6, 1/12; noise 0.01)",
        "attributions summed over channels; pixels ranked, most relevant first",
        "Rong, Leemann, Borisov, Kasneci & Kasneci (2022), A Consistent and Efficient Evaluation "
        "Strategy for Attribution Methods, ICML",
        "accuracy averaged over 1 %, 3 %, ..., 99 % of the pixels removed and imputed",
    ),
]

for _row in _CATALOGUE_ROWS:
    _name, _title, _higher, _range, _baseline, _pre, _paper, _text = _row
    METRICS[_name] = MetricInfo(
        name=_name,
        title=_title,
        higher_is_better=_higher,
        range=_range,
        baseline=_baseline,
        preprocessing=_pre,
        paper=_paper + _Q,
        description=_text,
    )


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of metric ``name`` (one of :data:`METRICS`)."""
    try:
        return METRICS[name]
    except KeyError:
        raise XaikitConfigError(
            f"unknown metric {name!r}; choose one of {', '.join(METRICS)}"
        ) from None
