"""The learned proxy confidence (proxy_confidence=learned): its features by hand, its file,
the shipped network against the hand-made measures on the real Motorcycle pair, and the
train / compare command on rendered pairs."""

import json

import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter, ProxyConfig, compute_proxy
from stereo_adapt_ros.adaptation.proxy import proxy_features
from stereo_adapt_ros.cli.main import main
from stereo_adapt_ros.data.io import write_image_rgb, write_kitti_disparity
from stereo_adapt_ros.network import load_model, save_weights
from stereo_adapt_ros.network.proxy_confidence import (LR_CLIP, ProxyConfidenceNet,
                                                       correct_labels,
                                                       read_proxy_confidence,
                                                       save_proxy_confidence, shipped_path)
from stereo_adapt_ros.training_data.synthetic import SynthConfig, TextureBank, render_batch, \
    to_samples
from stereo_adapt_ros.training.proxy_confidence import (ProxyConfidenceTraining,
                                                        compare_measures, make_examples)
from weights_header import with_metadata


def test_features_by_hand():
    gray = np.array([[0, 255, 51, 102]], dtype=np.uint8)
    disparity = np.array([[np.nan, 1.0, 1.0, 5.0]], dtype=np.float32)
    # Right pixel x matches left pixel x + d: right x=0 sees left x=1 (d 1) and so on.
    right = np.array([[1.0, 4.0, np.nan, 1.0]], dtype=np.float32)
    unique = np.array([[0.0, 1.0, 0.5, 1.0]], dtype=np.float32)
    features = proxy_features(gray, disparity, right, unique, max_disparity=10)
    assert features.shape == (5, 1, 4) and features.dtype == np.float32
    np.testing.assert_allclose(features[0, 0], [0.0, 0.1, 0.1, 0.5])
    np.testing.assert_array_equal(features[1, 0], [0, 1, 1, 1])
    # x=0: no disparity; x=1 lands on right x=0 (1 vs 1: agrees); x=2 lands on right x=1
    # (4 vs 1: 3 px apart); x=3 lands on x=-2, outside the image.
    np.testing.assert_allclose(features[2, 0], [1.0, 0.0, 3 / LR_CLIP, 1.0])
    np.testing.assert_allclose(features[3, 0], [0.0, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(features[4, 0], [-0.5, 0.5, 0.2 - 0.5, 0.4 - 0.5], atol=1e-6)


def test_labels_are_within_two_pixels_where_the_truth_is_known():
    proxy = np.array([[1.0, 5.0, np.nan, 3.0]], dtype=np.float32)
    truth = np.array([[2.5, 1.0, 4.0, np.nan]], dtype=np.float32)
    labels, known = correct_labels(proxy, truth)
    np.testing.assert_array_equal(labels[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(known[0], [True, True, True, False])


def test_the_file_round_trips_and_bad_files_are_refused(tmp_path):
    torch.manual_seed(1)
    network = ProxyConfidenceNet()
    path = save_proxy_confidence(tmp_path / "c.safetensors", network, "a test")
    loaded = read_proxy_confidence(path)
    features = torch.rand(1, 5, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features), network(features))
        assert loaded(features).shape == (1, 1, 20, 24)
        assert network(features, padded=False).shape == (1, 1, 12, 16)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_proxy_confidence(tmp_path / "bad.safetensors")
    model, info, _ = load_model("random")
    save_weights(tmp_path / "madnet.safetensors", model.state_dict(), info)
    with pytest.raises(ValueError, match="no proxy confidence network"):
        read_proxy_confidence(tmp_path / "madnet.safetensors")
    with pytest.raises(ValueError, match="cannot read"):
        read_proxy_confidence(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("pad", [False, True], ids=["unpadded", "padded"])
def test_the_shipped_network_keeps_as_precise_and_more_proxy_pixels_on_the_real_pair(
        motorcycle, pad):
    """On the real Motorcycle pair (never trained on) at the default tau 0.8, the learned
    confidence keeps SGBM pixels at least as precisely as the hand-made combined measure.
    Unpadded (as it was trained) it keeps many more of the right ones (measured: precision
    0.962 vs 0.947, recall 0.952 vs 0.786); padded (as adaptation runs the proxy, which gives
    the hand-made measure the left band too) about as many (0.963 / 0.940 vs 0.953 / 0.959)."""
    from stereo_adapt_ros.data.sample import StereoSample

    assert shipped_path().is_file()
    left, right, truth = motorcycle
    sample = StereoSample(left, right, truth, "motorcycle")
    table = compare_measures([sample], "sgbm", 128, 0.8, proxy_pad=pad,
                             measures=("combined", "learned"))
    learned, combined = table["learned"], table["combined"]
    assert learned["precision"] >= combined["precision"] - 0.01, table
    assert learned["recall"] >= combined["recall"] + (-0.05 if pad else 0.1), table
    assert learned["precision"] > table["all"]["precision"] + (0.05 if pad else 0.15), table


def test_training_learns_from_padded_proxies_only_when_asked(motorcycle):
    """By default the examples are unpadded SGBM proxies, as the shipped network learned from
    (the left band has no match); with proxy_pad (--proxy-pad) they are the padded ones the
    adapter runs, with proxy disparities in the band."""
    from stereo_adapt_ros.data.sample import StereoSample

    left, right, truth = motorcycle
    sample = StereoSample(left, right, truth, "motorcycle")
    assert not ProxyConfidenceTraining().proxy_pad
    has_proxy = {}
    for pad in (True, False):
        examples = make_examples([sample], ProxyConfidenceTraining(methods=("sgbm",),
                                                                   proxy_pad=pad))
        has_proxy[pad] = examples[0].features[1][:, :120].mean()  # feature 1: has a proxy
    assert has_proxy[False] == 0 and has_proxy[True] > 0.5, has_proxy


def test_compute_proxy_learned_is_a_probability_and_zero_without_a_match(motorcycle_crop):
    left, right, _ = motorcycle_crop
    labels = compute_proxy(left, right, ProxyConfig(proxy_method="sgbm",
                                                    proxy_confidence="learned",
                                                    max_disparity=48, proxy_sgbm_mode="sgbm",
                                                    proxy_pad=False))
    assert labels.confidence.shape == left.shape[:2]
    assert labels.confidence.min() >= 0 and labels.confidence.max() <= 1
    assert (labels.confidence[~np.isfinite(labels.disparity)] == 0).all()
    assert 0.2 < labels.density(0.8) < 1


def test_an_adapter_adapts_with_the_learned_proxy_confidence(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("random", AdapterConfig(
        adaptation_mode="full", adaptation_loss="proxy", proxy_confidence="learned",
        proxy_max_disparity=48))
    result = adapter.step(left, right)
    assert result.adapted and 0 < result.proxy_density <= 1


@pytest.mark.slow
def test_train_and_compare_commands_on_rendered_pairs(tmp_path):
    config = SynthConfig(height=96, width=192, max_disparity=24.0)
    bank = TextureBank("cpu")
    for name, seed in (("train", 11), ("heldout", 12)):
        root = tmp_path / name
        for folder in ("image_2", "image_3", "disp_occ_0"):
            (root / folder).mkdir(parents=True)
        batch = render_batch(4, config, seed=seed, bank=bank)
        for index, (sample, _) in enumerate(to_samples(batch, [str(i) for i in range(4)])):
            file = f"{index:06d}_10.png"
            write_image_rgb(root / "image_2" / file, sample.left)
            write_image_rgb(root / "image_3" / file, sample.right)
            write_kitti_disparity(root / "disp_occ_0" / file, sample.disparity)
    out = tmp_path / "net.safetensors"
    assert main(["proxy-confidence", "train", str(tmp_path / "train"), "--out", str(out),
                 "--steps", "60", "--batch", "8", "--max-disparity", "32"]) == 0
    read_proxy_confidence(out)
    table_file = tmp_path / "table.json"
    assert main(["proxy-confidence", "compare", str(tmp_path / "heldout"), "--weights",
                 str(out), "--max-disparity", "32", "--json", str(table_file)]) == 0
    written = json.loads(table_file.read_text())
    assert written["proxy_pad"] is True
    table = written["table"]
    assert set(table) == {"lr", "peak", "combined", "learned", "all"}
    for row in table.values():
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    # Even 60 steps learn something: the kept pixels are more often right than all of them.
    assert table["learned"]["precision"] > table["all"]["precision"]
    assert main(["proxy-confidence", "compare", str(tmp_path / "heldout"), "--weights",
                 str(out), "--max-disparity", "32", "--no-proxy-pad", "--json",
                 str(table_file)]) == 0
    unpadded = json.loads(table_file.read_text())
    assert unpadded["proxy_pad"] is False
    # Unpadded, the left 32 columns have no proxy: fewer of the known pixels are right.
    assert unpadded["table"]["all"]["precision"] < table["all"]["precision"]
    assert main(["proxy-confidence", "train", str(tmp_path / "train"), "--out", str(out),
                 "--methods", "sgbm,nope"]) == 2


def _bad_confidence_files(folder):
    """Every kind of unusable proxy confidence file, by name: (path, what the reason says)."""
    torch.manual_seed(2)
    good = save_proxy_confidence(folder / "good.safetensors", ProxyConfidenceNet(), "a test")
    raw = good.read_bytes()
    files = {}

    def write(name, data):
        path = folder / f"{name}.safetensors"
        path.write_bytes(data)
        return path
    files["missing"] = (folder / "missing.safetensors", "cannot read")
    files["random bytes"] = (write("random", np.random.default_rng(0).bytes(4096)),
                             "not a safetensors file")
    files["truncated"] = (write("truncated", raw[:len(raw) // 2]), "not a safetensors file")
    files["empty"] = (write("empty", b""), "not a safetensors file")
    model, info, _ = load_model("random")
    files["wrong kind"] = (save_weights(folder / "madnet.safetensors", model.state_dict(), info),
                           "no proxy confidence network")
    other = save_proxy_confidence(folder / "other.safetensors", ProxyConfidenceNet(8, 32), "x")
    files["wrong architecture"] = (with_metadata(other, architecture=json.dumps(
        {"channels": 16, "hidden": 32})), "does not load")
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    header["__metadata__"] = ["kind", "stereo_adapt_ros.proxy_confidence"]
    body = json.dumps(header).encode()
    files["metadata as a list"] = (write("list", len(body).to_bytes(8, "little") + body
                                         + raw[8 + size:]), "not a safetensors file")
    broken = ProxyConfidenceNet()
    with torch.no_grad():
        broken.output.weight[0, 3] = float("nan")
    files["nan"] = (save_proxy_confidence(folder / "nan.safetensors", broken, "x"),
                    "NaN or infinite")
    return files


@pytest.fixture
def shipped_confidence(tmp_path, monkeypatch):
    """Points the shipped proxy confidence at a folder of the test's (STEREO_ADAPT_MODELS),
    and forgets it afterwards."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("STEREO_ADAPT_MODELS", str(folder))
    shipped_path.cache_clear()
    yield folder / "proxy_confidence.safetensors"
    shipped_path.cache_clear()


def test_every_unusable_proxy_confidence_file_is_refused_at_load_and_by_the_adapter(
        tmp_path, shipped_confidence):
    """A learned confidence that does not load would make every step's proxy fail, leaving
    every frame unadapted: the file is refused at load, and an adapter whose loss uses the
    proxy refuses to start, naming the file and the problem."""
    model, info, _ = load_model("random")
    for kind, (path, reason) in _bad_confidence_files(tmp_path).items():
        with pytest.raises(ValueError, match=reason) as refused:
            read_proxy_confidence(path)
        assert str(path) in str(refused.value), kind
        if not path.exists():
            continue  # a missing file here falls back to the source tree's shipped one
        shipped_confidence.write_bytes(path.read_bytes())
        with pytest.raises(ValueError, match="proxy_confidence learned cannot run") as refused:
            OnlineAdapter(model, info, AdapterConfig(proxy_confidence="learned"))
        assert str(shipped_confidence) in str(refused.value), kind
    # Without the proxy in the loss, or with a hand-made measure, no file is needed.
    OnlineAdapter(model, info, AdapterConfig(adaptation_loss="photometric"))
    OnlineAdapter(model, info, AdapterConfig(proxy_confidence="combined"))
