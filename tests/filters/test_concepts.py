"""Concepts: the NMF matches scikit-learn's, DFF matches pytorch-grad-cam's, the Sobol
importance finds the concept that decides, and the bank survives a save / load."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF as SkNMF

from xaikit.filters import ConceptBank, activations, concept_maps, concepts
from xaikit.filters.concepts import dff, nmf, nmf_init, nmf_transform, sobol_importance

dff_module = pytest.importorskip(
    "pytorch_grad_cam.feature_factorization.deep_feature_factorization"
)

BLOCK2 = "features.block2"


def _data(rows: int = 40, cols: int = 30, rank: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    W = torch.rand(rows, rank, generator=gen, dtype=torch.float64)
    H = torch.rand(rank, cols, generator=gen, dtype=torch.float64)
    return W @ H + 0.01 * torch.rand(rows, cols, generator=gen, dtype=torch.float64)


def test_nmf_error_decreases_and_equals_sklearns_multiplicative_updates():
    V = _data()
    W0, H0 = nmf_init(V, 4, seed=3)
    ours = nmf(V, 4, steps=150, W=W0, H=H0)
    assert (ours.errors[1:] <= ours.errors[:-1] + 1e-12).all()
    assert ours.errors[-1] < 0.2 * ours.errors[0]
    sk = SkNMF(4, solver="mu", init="custom", max_iter=150, tol=0)
    W = sk.fit_transform(V.numpy(), W=W0.numpy().copy(), H=H0.numpy().copy())
    np.testing.assert_allclose(ours.W.numpy(), W, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.H.numpy(), sk.components_, rtol=1e-8, atol=1e-10)
    # against scikit-learn's default solver (coordinate descent) from its own seeded start:
    # the same quality of fit once converged (multiplicative updates converge slowly)
    cd = SkNMF(4, init="random", random_state=0, max_iter=500)
    cd_W = cd.fit_transform(V.numpy())
    cd_error = np.linalg.norm(V.numpy() - cd_W @ cd.components_)
    assert float(nmf(V, 4, steps=5000, seed=0).errors[-1]) < 1.05 * cd_error
    # the initialization has scikit-learn's scale: sqrt(mean / r) * |N(0, 1)|
    assert float(W0.mean()) == pytest.approx(float((V.mean() / 4).sqrt()) * 0.798, rel=0.1)
    # batched: each matrix of the batch is factorized on its own
    batch = nmf(
        torch.stack([V, 2 * V]), 4, steps=20, W=torch.stack([W0, W0]), H=torch.stack([H0, H0])
    )
    single = nmf(V, 4, steps=20, W=W0, H=H0)
    torch.testing.assert_close(batch.W[0], single.W)
    # transform: fixed components recover known coefficients
    coeffs = nmf_transform(ours.W @ ours.H, ours.H, steps=2000)
    torch.testing.assert_close(coeffs @ ours.H, ours.W @ ours.H, rtol=1e-3, atol=1e-3)


class _SameStartNMF:
    """pytorch-grad-cam's NMF(...) call, run with solver='mu' from our start."""

    steps = 100

    def __init__(self, n_components, init=None, random_state=None):
        self.n_components = n_components

    def fit_transform(self, X):
        W0, H0 = nmf_init(torch.from_numpy(X), self.n_components, seed=0)
        model = SkNMF(self.n_components, solver="mu", init="custom", max_iter=self.steps, tol=0)
        W = model.fit_transform(X, W=W0.numpy().copy(), H=H0.numpy().copy())
        self.components_ = model.components_
        return W


def test_dff_equals_pytorch_grad_cams(striped, monkeypatch):
    model, images, _, norm = striped
    acts = activations(model, images[:12], BLOCK2, normalization=norm)[BLOCK2].double()
    # pytorch-grad-cam as it is (scikit-learn's coordinate descent from its own start):
    # the same concepts (best-match cosine) and the same reconstruction error
    default_concepts, default_maps = dff_module.dff(acts.numpy().copy(), n_components=3)
    concepts_, maps_, offset, _ = dff(acts, 3, steps=200, seed=0)
    ours_w = (concepts_ - offset[:, None]).numpy()
    theirs_w = default_concepts - offset.numpy()[:, None]
    cosine = (ours_w / np.linalg.norm(ours_w, axis=0)).T @ (
        theirs_w / np.linalg.norm(theirs_w, axis=0)
    )
    assert (cosine.max(axis=1) > 0.999).all(), cosine
    V = acts.transpose(0, 1).reshape(acts.shape[1], -1).numpy() - offset.numpy()[:, None]
    ours_error = np.linalg.norm(V - ours_w @ maps_.transpose(0, 1).reshape(3, -1).numpy())
    theirs_error = np.linalg.norm(V - theirs_w @ default_maps.transpose(1, 0, 2, 3).reshape(3, -1))
    assert ours_error < 1.001 * theirs_error
    monkeypatch.setattr(dff_module, "NMF", _SameStartNMF)
    theirs_concepts, theirs_maps = dff_module.dff(acts.numpy().copy(), n_components=3)
    ours_concepts, ours_maps, _, _ = dff(acts, 3, steps=100, seed=0)
    np.testing.assert_allclose(ours_concepts.numpy(), theirs_concepts, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours_maps.numpy(), theirs_maps, rtol=1e-7, atol=1e-9)
    # the whole pipeline: the class on the model and its layer, and our concepts()
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    model64 = model.double()
    try:
        factorization = dff_module.DeepFeatureFactorization(model64, model64.features.block2)
        c_theirs, _ = factorization(((images[:12] - mean) / std).double(), n_components=3)
        bank = concepts(
            model64,
            BLOCK2,
            images[:12],
            3,
            method="dff",
            nmf_steps=100,
            importance=False,
            normalization=norm,
        )
    finally:
        model.float()
    np.testing.assert_allclose(bank.concepts.double().numpy(), c_theirs, rtol=1e-5, atol=1e-6)


def test_sobol_importance_finds_the_deciding_concept():
    # class 0 is decided by concept 1 alone; class 1 by 2*c0 + c2 (total indices 4/5, 1/5)
    def fn(masks):
        return torch.stack([5 * masks[:, 1], 2 * masks[:, 0] + masks[:, 2]], dim=1)

    total = sobol_importance(fn, 4, n_designs=256, seed=0)  # (r, K)
    np.testing.assert_allclose(total[:, 0].numpy(), [0, 1, 0, 0], atol=1e-4)
    np.testing.assert_allclose(total[:, 1].numpy(), [0.8, 0, 0.2, 0], atol=0.05)
    again = sobol_importance(fn, 4, n_designs=256, seed=0)
    torch.testing.assert_close(again, total)


@pytest.mark.parametrize("method", ["craft", "dff"])
def test_concepts_on_the_striped_model_and_the_bank_round_trip(striped, method, tmp_path):
    model, images, labels, norm = striped
    data = list(zip(images[:45], labels[:45].tolist()))
    bank = concepts(
        model,
        BLOCK2,
        data,
        3,
        method=method,
        k=4,
        normalization=norm,
        n_designs=16,
        importance_images=3,
        steps=4,
        seed=1,
    )
    assert bank.basis.shape == (3, 16) and (bank.basis >= 0).all()
    assert bank.errors[-1] < 0.6 * bank.errors[0]
    assert bank.exemplars.shape[:2] == (3, 4) and bank.maximization.shape == (3, 3, 16, 16)
    assert bank.classes == [0, 1, 2] and bank.importance.shape == (3, 3)
    assert (bank.importance >= 0).all()
    # each class has a concept that matters for it (the stripes decide the class)
    assert (bank.importance.amax(dim=1) > 0.5).all(), bank.importance
    maps = concept_maps(bank, model, images[:2])
    assert maps.shape == (2, 3, 16, 16) and (maps >= 0).all()
    files = bank.save(tmp_path)
    assert sorted(files) == ["concepts.json", "concepts.safetensors"]
    loaded = ConceptBank.load(tmp_path)
    for name in (
        "basis",
        "offset",
        "importance",
        "exemplars",
        "exemplar_index",
        "exemplar_boxes",
        "exemplar_score",
        "maximization",
        "errors",
    ):
        torch.testing.assert_close(getattr(loaded, name), getattr(bank, name), rtol=0, atol=0)
    assert loaded.summary() == bank.summary()
    torch.testing.assert_close(concept_maps(loaded, model, images[:2]), maps)
    assert json.loads((tmp_path / "concepts.json").read_text())["method"] == method


def _concepts_argv(checkpoint, out, *, k):
    """``xaikit filters --mode concepts``: 3 DFF concepts at block 2, 2 maximization steps."""
    return [
        "filters",
        "--model",
        str(checkpoint),
        "--mode",
        "concepts",
        "--data",
        "striped",
        "--layer",
        BLOCK2,
        "--out",
        str(out),
        "--n-concepts",
        "3",
        "--k",
        str(k),
        "--steps",
        "2",
        "--concept-method",
        "dff",
        "--quiet",
    ]


def test_the_cli_writes_a_concept_bank(tmp_path, monkeypatch, striped_cli, capsys):
    cli, checkpoint = striped_cli(30)
    out = tmp_path / "out"
    argv = _concepts_argv(checkpoint, out, k=3)
    assert cli.main(argv) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["method"] == "dff" and len(index["concepts"]) == 3
    assert "concepts.png" in index["files"] and "concepts/concept_02.png" in index["files"]
    bank = ConceptBank.load(out)
    assert bank.n_concepts == 3 and bank.importance.shape == (3, 3)
    # --resume with the same settings reuses the bank: nothing is factorized again
    concepts_module = sys.modules["xaikit.filters.concepts"]  # the package exports the function
    before = (out / "concepts.safetensors").read_bytes()
    monkeypatch.setattr(
        concepts_module, "concepts", lambda *a, **k: pytest.fail("the bank was recomputed")
    )
    assert cli.main([*argv, "--resume"]) == 0
    assert (out / "concepts.safetensors").read_bytes() == before
    assert json.loads((out / "index.json").read_text())["concepts"] == index["concepts"]
    # other settings: refused, the bank kept
    other = [*argv]
    other[other.index("--n-concepts") + 1] = "4"
    assert cli.main([*other, "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert (out / "concepts.safetensors").read_bytes() == before

    # a run without --resume drops the record first: killed before its bank is complete, it
    # leaves no settings that a later --resume would take for the bank's
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(concepts_module, "concepts", killed)
    assert cli.main(other) == 130
    assert not (out / "concepts.run.json").exists()


def test_a_concepts_run_over_the_limits_is_refused(tmp_path, monkeypatch, striped_cli, capsys):
    cli, checkpoint = striped_cli(12)
    monkeypatch.setenv("XAIKIT_LIMIT_SECONDS", "0.000001")
    out = tmp_path / "out"
    argv = _concepts_argv(checkpoint, out, k=2)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "concepts: 3 concepts, 2 steps, 8 files" in err and "pass --yes" in err
    assert not (out / "concepts.safetensors").exists()
    assert cli.main([*argv, "--yes"]) == 0
    assert ConceptBank.load(out).n_concepts == 3
