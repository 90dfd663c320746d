"""A bundle is trusted only after every check passes; anything altered is refused by name."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile

import numpy as np
import pytest

from edge_anomaly import BundleError, Inspector, open_bundle
from edge_anomaly.bundle import write_tar
from edge_anomaly.placement import ALIGNED_SHARE, REACH


@pytest.fixture()
def bundle_copy(bundle_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle_dir, target)
    return target


def test_manifest_records_what_the_runtime_needs(bundle_dir):
    m = open_bundle(bundle_dir).manifest.to_json()  # what manifest.json holds, read back through the sections
    assert m == json.loads((bundle_dir / "manifest.json").read_text())
    assert m["format"] == "edge-anomaly-bundle" and m["format_version"] == 4
    assert m["fit"]["augmentation"] == "auto" and m["fit"]["layout"] == "auto"  # as asked; memory_bank: as applied
    assert m["input"]["size"] == 128 and m["input"]["mean"] == [0.5, 0.5, 0.5]
    assert m["encoder"]["name"] == "lite0" and m["encoder"]["strides"] == [8, 16]
    # "auto": crops of a fine weave look alike at each place, so the shots count as aligned and take no views
    assert m["memory_bank"]["shots"] == 3 and m["memory_bank"]["layout"] == "aligned"
    assert m["memory_bank"]["aligned_share"] >= ALIGNED_SHARE and m["memory_bank"]["reach"] == REACH
    assert m["memory_bank"]["augmentation"] == "none" and m["memory_bank"]["size"] == 3 * 16 * 16
    assert m["threshold"]["value"] > 0 and "each quarter of each shot" in m["threshold"]["method"]
    assert m["object"] == "fabric" and m["onnx"]["opset"] >= 17
    roles = sorted(e["role"] for e in m["files"].values())
    assert roles == ["decoder", "encoder", "memory_bank"] + ["normal_shot"] * 3
    assert all(len(e["sha256"]) == 64 for e in m["files"].values())


def test_tampered_memory_bank_is_refused(bundle_copy):
    path = bundle_copy / "memory_bank.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"memory_bank\.npy: sha256 does not match"):
        Inspector.load(bundle_copy)


def test_tampered_graph_is_refused(bundle_copy):
    with open(bundle_copy / "decoder.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"decoder\.onnx: sha256"):
        open_bundle(bundle_copy)


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder\.onnx: listed in the manifest but missing"):
        open_bundle(bundle_copy)


def test_unlisted_file_is_refused(bundle_copy):
    (bundle_copy / "extra.engine").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"extra\.engine: not listed"):
        open_bundle(bundle_copy)


def test_pickled_memory_bank_is_never_loaded(bundle_copy):
    """Even with a matching hash (an attacker can rewrite the manifest), an object array is refused."""
    path = bundle_copy / "memory_bank.npy"
    np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    _rehash(bundle_copy, "memory_bank.npy")
    with pytest.raises(BundleError, match="not a plain numpy array"):
        open_bundle(bundle_copy)


def test_memory_bank_of_wrong_width_is_refused(bundle_copy):
    np.save(bundle_copy / "memory_bank.npy", np.zeros((1536, 10), np.float32))
    _rehash(bundle_copy, "memory_bank.npy")
    with pytest.raises(BundleError, match=r"expected float32 \(768, 155\), found float32 \(1536, 10\)"):
        open_bundle(bundle_copy)


@pytest.mark.parametrize(
    "column, value, message",
    [
        (-3, 99.0, "must lie on the 16 x 16 grid"),  # grid row
        (-1, np.nan, "must be finite"),  # reach
        (-3, 0.0, "grid places with no normal patch in reach"),  # every row in the top row of the grid
    ],
    ids=["off the grid", "not finite", "a region out of reach"],
)
def test_memory_bank_with_impossible_places_is_refused(bundle_copy, column, value, message):
    """Places and reach ride in the bank (placement): a rewritten bank that would score a whole region as
    defective, or place patches nowhere, is refused at load, not met as false alarms."""
    path = bundle_copy / "memory_bank.npy"
    bank = np.load(path)
    bank[:, column] = value  # the fixture's bank is aligned (test_manifest_records_what_the_runtime_needs): reach 4
    np.save(path, bank)
    _rehash(bundle_copy, "memory_bank.npy")
    with pytest.raises(BundleError, match=message):
        open_bundle(bundle_copy)


def test_newer_format_version_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    _write_sealed(bundle_copy, manifest)
    with pytest.raises(BundleError, match="format version 99"):
        open_bundle(bundle_copy)


def test_path_outside_the_bundle_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["../outside.bin"] = {"role": "engine", "sha256": "0" * 64, "bytes": 1}
    _write_sealed(bundle_copy, manifest)
    with pytest.raises(BundleError, match="points outside the bundle"):
        open_bundle(bundle_copy)


def test_corrupt_manifest_is_refused(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(tmp_path / "nothing")
    (tmp_path / "file.bin").write_bytes(b"12345")
    with pytest.raises(BundleError, match="not a tar archive"):
        open_bundle(tmp_path / "file.bin")


def test_tar_bundle_round_trip(bundle_dir, tmp_path, synth_root):
    tar_path = write_tar(open_bundle(bundle_dir), tmp_path / "b.tar.gz")
    from_tar = Inspector.load(tar_path, backend="onnxruntime-cpu")
    from_dir = Inspector.load(bundle_dir, backend="onnxruntime-cpu")
    image = next((synth_root / "fabric" / "test" / "cut").iterdir())
    assert from_tar.inspect(image).score == pytest.approx(from_dir.inspect(image).score, rel=1e-6)


def test_tar_with_a_link_is_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BundleError, match="holds no manifest.json file"):
        open_bundle(evil)


def test_link_beside_a_real_bundle_in_a_tar_is_refused(bundle_dir, tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(bundle_dir).as_posix())
        info = tarfile.TarInfo("shots/0000.png.lnk")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BundleError, match="not a plain file"):
        open_bundle(evil)


def _rehash(root, name):
    """What someone who rewrites a file and its manifest entry does: hash the file, reseal the manifest."""
    from edge_anomaly.bundle import sha256_file

    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][name]["sha256"] = sha256_file(root / name)
    _write_sealed(root, manifest)


def _write_sealed(root, manifest):
    text = json.dumps(manifest).encode()
    (root / "manifest.json").write_bytes(text)
    (root / "manifest.sha256").write_text(hashlib.sha256(text).hexdigest() + "\n")


def test_fit_options_are_checked_before_any_work():
    from edge_anomaly import InputError
    from edge_anomaly.fit_options import DEFAULT_FIT, FitOptions

    assert DEFAULT_FIT.max_bank == 4096 and DEFAULT_FIT.stages == (2, 4)
    for wrong, words in [
        ({"image_size": 100}, "image_size must be a multiple of 16"),
        ({"layout": "sideways"}, "layout must be one of"),
        ({"head_weight": -1.0}, "head_weight must be a number of at least 0"),
        ({"max_bank": 0}, "max_bank must be a positive whole number"),
        ({"stages": ()}, "stages must be"),
        ({"neighbourhood": (2,)}, "neighbourhood must be odd sides"),
        ({"neighbourhood": (9,)}, "neighbourhood must be odd sides"),
        ({"neighbourhood": (3, 3)}, "must not repeat"),
    ]:
        with pytest.raises(InputError, match=words):
            FitOptions(**wrong)
