"""Loading fails early with a message that names the file and says what to pass instead."""

from __future__ import annotations

import pytest

from deployments.models import ModelLoadError, ModelSpec, build_preprocessor, load_backend


def test_models_onnx_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"not found: .*absent\.onnx"):
        load_backend(ModelSpec(kind="onnx", path=str(tmp_path / "absent.onnx")))
    with pytest.raises(ModelLoadError, match=r"not found: .*absent\.onnx"):
        build_preprocessor(ModelSpec(kind="onnx", path=str(tmp_path / "absent.onnx")))


def test_models_onnx_without_path_or_url():
    with pytest.raises(ModelLoadError, match="set `path`"):
        load_backend(ModelSpec(kind="onnx"))


@pytest.mark.parametrize("content", [b"this is a text file, not a model\n", b"", b"\x00\x01junk"])
def test_models_onnx_not_a_model(tmp_path, content):
    f = tmp_path / "notes.onnx"
    f.write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"not an ONNX model file.*notes\.onnx"):
        load_backend(ModelSpec(kind="onnx", path=str(f)))
    with pytest.raises(ModelLoadError, match="not an ONNX model file"):
        build_preprocessor(ModelSpec(kind="onnx", path=str(f)))


def test_models_caffe_needs_config(tmp_path):
    with pytest.raises(ModelLoadError, match="needs `config`"):
        load_backend(ModelSpec(kind="caffe", path=str(tmp_path / "x.caffemodel")))


def test_models_caffe_missing_files_named(tmp_path):
    proto = tmp_path / "MobileNetSSD_deploy.prototxt"
    with pytest.raises(ModelLoadError, match=r"prototxt file not found: .*MobileNetSSD_deploy\.prototxt"):
        load_backend(ModelSpec(kind="caffe", config=str(proto), path=str(tmp_path / "m.caffemodel")))
    proto.write_text('name: "x"\n')
    with pytest.raises(ModelLoadError, match=r"caffemodel file not found: .*MobileNetSSD_deploy\.caffemodel"):
        load_backend(
            ModelSpec(kind="caffe", config=str(proto), path=str(tmp_path / "MobileNetSSD_deploy.caffemodel"))
        )


def test_models_caffe_garbage_files(tmp_path):
    proto, weights = tmp_path / "a.prototxt", tmp_path / "a.caffemodel"
    proto.write_text("layer { this is not { a prototxt\n")
    weights.write_bytes(b"\x00\x01junk")
    with pytest.raises(ModelLoadError, match=r"OpenCV cannot read the Caffe model .*a\.prototxt"):
        load_backend(ModelSpec(kind="caffe", config=str(proto), path=str(weights)))


def test_models_callable_bad_targets():
    with pytest.raises(ModelLoadError, match="needs `callable`"):
        load_backend(ModelSpec(kind="callable"))
    with pytest.raises(ModelLoadError, match="must look like 'package.module:function'"):
        load_backend(ModelSpec(kind="callable", callable="json.dumps"))
    with pytest.raises(ModelLoadError, match="cannot import module 'no_such_module_rayrtc'"):
        load_backend(ModelSpec(kind="callable", callable="no_such_module_rayrtc:fn"))
    with pytest.raises(ModelLoadError, match="has no attribute 'nope'"):
        load_backend(ModelSpec(kind="callable", callable="json:nope"))
    with pytest.raises(ModelLoadError, match="not a callable"):
        load_backend(ModelSpec(kind="callable", callable="json:__doc__"))
