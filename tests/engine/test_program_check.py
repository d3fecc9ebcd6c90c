"""Export programs are read op by op before anything runs them (palm.engine.program_check).

An attacker who edits an export's model.json can recompute the SHA-256s in palm_meta.json,
so the hashes do not stop a program that writes files (Paddle's pd_op.save_combine), reads
them, or runs a custom op: only the ops of palm's own exports may run. The grafted programs
below are wired as an attacker would wire them (the logits go through the foreign op), and
unchecked Paddle 3.3 runs the save op (the process dies with SIGSEGV, exit 139).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paddle
import pytest

from palm.engine.checkpoint import save_checkpoint
from palm.engine.export import META_NAME, export_model
from palm.engine.inference import INT8_META_KEY, load_predictor
from palm.engine.program_check import (ProgramRefused, allowlist, check_openvino_model,
                                       check_program, program_ops)
from palm.engine.quantize import export_onnx, quantize_onnx
from palm.serve.model_runner import ModelRunner
from palm.serve.config import ServiceConfig
from palm.serve.app import create_app
from palm.models import build_model
from palm.weights import file_sha256

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
META = {"model": "resnet18", "num_classes": 1, "class_names": ["non-PM", "PM"],
        "image_size": SIZE, "normalize": "minus_one_one", "fundus_crop": False,
        "threshold": 0.5, "epoch": 1, "metrics": {}, "model_kwargs": {}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    paddle.seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pdparams"
    save_checkpoint(path, build_model("resnet18", num_classes=1), META)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    """palm's own export of resnet18 at 32 px: the fast case of 'every zoo export passes'."""
    model = build_model("resnet18", num_classes=1)
    model.set_state_dict(paddle.load(str(checkpoint)))
    return export_model(model, tmp_path_factory.mktemp("export") / "resnet18", dict(META))


# --- grafts: each inserts ops before the fetch and routes the logits through them ----------

def _graft(export: Path, dst: Path, make_ops: Callable[[int, dict, int], list[dict]]) -> Path:
    """A copy of `export` in `dst` whose model.json runs `make_ops(logits id, logits type,
    first free id)` (the last op's first output becomes the fetched logits), with the
    hashes in palm_meta.json recomputed."""
    dst.mkdir(parents=True)
    for name in ("model.pdiparams", META_NAME):
        (dst / name).write_bytes((export / name).read_bytes())
    program = json.loads((export / "model.json").read_text())
    ops = program["program"]["regions"][0]["blocks"][0]["ops"]
    fetch = ops[-1]
    logits, logits_type = fetch["I"][0]["%"], fetch["O"][0]["TT"]
    free = 1 + max(out["%"] for op in ops for out in op.get("O", [])
                   if isinstance(out, dict) and "%" in out)
    new_ops = make_ops(logits, logits_type, free)
    ops[-1:-1] = new_ops
    fetch["I"] = [{"%": new_ops[-1]["O"][0]["%"]}]
    (dst / "model.json").write_text(json.dumps(program))
    meta = json.loads((dst / META_NAME).read_text())
    meta["export"]["sha256"]["model.json"] = file_sha256(dst / "model.json")
    (dst / META_NAME).write_text(json.dumps(meta))
    return dst


def _attr(name: str, kind: str, value: Any) -> dict:
    return {"AT": {"#": kind, "D": value}, "N": name}


def save_ops(target: Path) -> Callable[[int, dict, int], list[dict]]:
    """builtin.combine + pd_op.save_combine writing the logits to `target`."""
    def make(logits: int, tt: dict, free: int) -> list[dict]:
        combine = {"#": "0.combine", "A": [], "I": [{"%": logits}],
                   "O": [{"%": free, "TT": {"#": "0.t_vec", "D": [tt]}}], "OA": []}
        save = {"#": "1.save_combine", "I": [{"%": free}], "O": [{"%": free + 1, "TT": tt}],
                "OA": [], "A": [_attr("file_path", "0.a_str", str(target)),
                                _attr("overwrite", "0.a_bool", True),
                                _attr("save_as_fp16", "0.a_bool", False),
                                _attr("save_to_memory", "0.a_bool", False)]}
        return [combine, save]
    return make


def custom_op(logits: int, tt: dict, free: int) -> list[dict]:
    """An op of the custom-op dialect (a compiled extension's kernel)."""
    return [{"#": "3.palm_backdoor", "A": [], "I": [{"%": logits}],
             "O": [{"%": free, "TT": tt}], "OA": []}]


def if_op(logits: int, tt: dict, free: int) -> list[dict]:
    """pd_op.if, control flow palm never emits, both branches yielding the logits."""
    branch = [{"#": "region", "blocks": [{"#": "block", "args": [], "ops": [
        {"#": "2.yield", "A": [], "I": [{"%": logits}], "O": [], "OA": []}]}]}]
    cond_type = {"#": "0.t_dtensor", "D": [{"#": "0.t_bool"}, [], "NCHW", [], 0]}
    return [{"#": "1.full", "A": [_attr("shape", "1.a_intarray", []),
                                  _attr("value", "0.a_f64", 1.0),
                                  _attr("dtype", "1.a_dtype", "bool"),
                                  _attr("place", "1.a_place", [0, 0, ""])],
             "I": [], "O": [{"%": free, "TT": cond_type}], "OA": []},
            {"#": "1.if", "A": [], "I": [{"%": free}], "O": [{"%": free + 1, "TT": tt}],
             "OA": [], "regions": copy.deepcopy(branch) + copy.deepcopy(branch)}]


def save_hidden_in_region(target: Path) -> Callable[[int, dict, int], list[dict]]:
    """The save op nested in a region of an allowed op: the walk must look inside."""
    def make(logits: int, tt: dict, free: int) -> list[dict]:
        hidden = save_ops(target)(logits, tt, free)
        relu = {"#": "1.relu", "A": [], "I": [{"%": logits}], "O": [{"%": free + 2, "TT": tt}],
                "OA": [], "regions": [{"#": "r", "blocks": [{"#": "b", "args": [],
                                                             "ops": hidden}]}]}
        return [relu]
    return make


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def _tool(name: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *map(str, argv)],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _assert_refused_line(run: subprocess.CompletedProcess, op: str) -> None:
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and op in errors[0] and "Traceback" not in run.stderr, run.stderr


# --- palm's own exports run ------------------------------------------------------------------

def test_palms_own_export_passes_and_runs(exported):
    check_program(exported / "model.json")
    logits = load_predictor(exported).predict(np.zeros((2, 3, SIZE, SIZE), np.float32))
    assert logits.shape == (2, 1)


# --- the grafted save op: refused by every way into an export --------------------------------

def test_predict_refuses_a_grafted_save_op(exported, palm_root, tmp_path):
    target = tmp_path / "written_by_the_program.bin"
    graft = _graft(exported, tmp_path / "graft", save_ops(target))
    before = _files(tmp_path)
    out = tmp_path / "preds.csv"
    run = _tool("predict.py", "--checkpoint", graft, "--output", out, "--device", "cpu",
                "--input", palm_root / "PALM-Validation400", "--no-progress")
    _assert_refused_line(run, "pd_op.save_combine")
    assert _files(tmp_path) == before and not target.exists() and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["eval.py", "cam.py", "quantize.py"])
def test_other_tools_refuse_a_grafted_save_op(tool, exported, palm_root, tmp_path):
    target = tmp_path / "written_by_the_program.bin"
    graft = _graft(exported, tmp_path / "graft", save_ops(target))
    before = _files(tmp_path)
    out = tmp_path / "out"
    argv = {"eval.py": ["--data-root", palm_root, "--output", out],
            "cam.py": ["--input", palm_root / "PALM-Validation400", "--output", out],
            "quantize.py": ["--data-root", palm_root, "--output", out,
                            "--calib-images", "2"]}[tool]
    run = _tool(tool, "--checkpoint", graft, *argv)
    # cam runs checkpoints only: it refuses the folder as not a checkpoint
    _assert_refused_line(run, "pd_op.save_combine" if tool != "cam.py" else str(graft))
    assert _files(tmp_path) == before and not target.exists() and not out.exists()


def test_serve_refuses_a_grafted_save_op(exported, tmp_path):
    target = tmp_path / "written_by_the_program.bin"
    graft = _graft(exported, tmp_path / "graft", save_ops(target))
    with pytest.raises(ProgramRefused, match="pd_op.save_combine"):
        ModelRunner(graft)
    with pytest.raises(ProgramRefused, match="pd_op.save_combine"):
        create_app(ServiceConfig(checkpoint=str(graft)))
    assert not target.exists()


@pytest.mark.parametrize("make_ops, op", [
    (custom_op, "custom_op.palm_backdoor"),
    (if_op, "pd_op.if"),
])
def test_custom_and_control_flow_ops_are_refused(make_ops, op, exported, tmp_path):
    graft = _graft(exported, tmp_path / "graft", make_ops)
    with pytest.raises(ProgramRefused, match=op) as refused:
        load_predictor(graft)
    assert "\n" not in str(refused.value) and str(graft / "model.json") in str(refused.value)
    with pytest.raises(ProgramRefused, match=op):
        ModelRunner(graft)


@pytest.mark.slow
def test_a_custom_op_is_refused_by_the_predict_tool(exported, palm_root, tmp_path):
    graft = _graft(exported, tmp_path / "graft", custom_op)
    run = _tool("predict.py", "--checkpoint", graft, "--output", tmp_path / "p.csv",
                "--input", palm_root / "PALM-Validation400", "--device", "cpu", "--no-progress")
    _assert_refused_line(run, "custom_op.palm_backdoor")
    assert not (tmp_path / "p.csv").exists()


def test_a_save_op_nested_in_a_region_is_found(exported, tmp_path):
    target = tmp_path / "written_by_the_program.bin"
    graft = _graft(exported, tmp_path / "graft", save_hidden_in_region(target))
    with pytest.raises(ProgramRefused, match="pd_op.save_combine"):
        load_predictor(graft)
    assert not target.exists()


def test_programs_palm_cannot_read_are_refused(exported, tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    for path in exported.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    # a legacy program (protobuf) is not parsed, so it does not run
    (folder / "model.json").rename(folder / "model.pdmodel")
    with pytest.raises(ProgramRefused, match="model.pdmodel: refusing to run it: palm checks "
                                             "only PIR programs"):
        load_predictor(folder)
    for name, text in [("notjson.json", "{"), ("deep.json", "[" * 100_000),
                       ("notpir.json", '{"base_code": {"magic": "x"}, "program": {}}'),
                       ("badops.json", '{"base_code": {"magic": "pir"}, '
                                       '"program": {"regions": [{"blocks": [{"ops": 5}]}]}}')]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ProgramRefused, match=f"{name}: refusing to run it"):
            check_program(tmp_path / name)


def test_an_op_name_in_a_form_palm_never_writes_is_refused(exported, tmp_path):
    """"pd_op.save_combine" spelt out (not "1.save_combine") is named as written."""
    def spelt_out(logits: int, tt: dict, free: int) -> list[dict]:
        ops = save_ops(tmp_path / "x.bin")(logits, tt, free)
        ops[1]["#"] = "pd_op.save_combine"
        return ops
    graft = _graft(exported, tmp_path / "graft", spelt_out)
    with pytest.raises(ProgramRefused, match="op pd_op.save_combine"):
        check_program(graft / "model.json")


# --- OpenVINO INT8 models ---------------------------------------------------------------------

IR = """<?xml version="1.0"?>
<net name="m" version="11"><layers>
<layer id="0" name="x" type="Parameter" version="opset1"/>
<layer id="1" name="y" type="{type}" version="{version}"/>
<layer id="2" name="r" type="Result" version="opset1"/>
</layers><edges/></net>"""


@pytest.mark.parametrize("layer_type, version", [("Extension", "opset1"),
                                                 ("Convolution", "custom_ext")])
def test_foreign_openvino_layers_are_refused(layer_type, version, tmp_path):
    xml = tmp_path / "model_int8.xml"
    xml.write_text(IR.format(type=layer_type, version=version))
    with pytest.raises(ProgramRefused, match=f"type {layer_type}/{version}, which palm's INT8"):
        check_openvino_model(xml)


def test_openvino_ir_with_entities_is_refused(tmp_path):
    xml = tmp_path / "model_int8.xml"
    xml.write_text('<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "aaaa">]>'
                   '<net><layers><layer type="Parameter" version="opset1"/></layers></net>')
    with pytest.raises(ProgramRefused, match="DTD or entities"):
        check_openvino_model(xml)


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory) -> Path:
    """The export quantized as tools/quantize.py does (random calibration images), with the
    INT8 record quantize writes."""
    folder = tmp_path_factory.mktemp("int8") / "resnet18"
    folder.mkdir()
    for path in exported.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    calibration = [np.random.default_rng(i).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype("float32")
                   for i in range(2)]
    quantize_onnx(export_onnx(folder, tmp_path_factory.mktemp("onnx") / "m.onnx"), calibration,
                  folder / "model_int8.xml")
    _record_int8(folder)
    return folder


def _record_int8(folder: Path) -> None:
    meta = json.loads((folder / META_NAME).read_text())
    meta[INT8_META_KEY] = {"format": "openvino-ir", "model_file": "model_int8.xml",
                           "sha256": {n: file_sha256(folder / n)
                                      for n in ("model_int8.xml", "model_int8.bin")}}
    (folder / META_NAME).write_text(json.dumps(meta))


@pytest.mark.slow
def test_palms_int8_model_passes_and_a_foreign_layer_in_it_is_refused(quantized, tmp_path):
    batch = np.zeros((1, 3, SIZE, SIZE), np.float32)
    assert load_predictor(quantized).predict(batch).shape == (1, 1)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    for path in quantized.iterdir():
        (hostile / path.name).write_bytes(path.read_bytes())
    xml = (hostile / "model_int8.xml").read_text()
    first_relu = xml.index('type="ReLU" version="opset1"')
    (hostile / "model_int8.xml").write_text(
        xml[:first_relu] + 'type="ReLU" version="custom_ext"' +
        xml[first_relu + len('type="ReLU" version="opset1"'):])
    _record_int8(hostile)  # hashes recomputed, as an attacker would
    with pytest.raises(ProgramRefused, match="ReLU/custom_ext"):
        load_predictor(hostile)


# --- every zoo network's export passes (the allowlist is complete) ---------------------------

# Deeper or wider variants of one network's code, built of the same layers (checked below)
# and so exported to the same ops: the export test spends its minutes on the network named.
# Exporting them all took about 5 of the suite's minutes (densenet169 alone 55 s).
SAME_LAYERS_AS: dict[str, tuple[str, dict]] = {
    "resnet34": ("resnet18", {}), "resnet101": ("resnet50", {}), "resnet152": ("resnet50", {}),
    "densenet169": ("densenet121", {}),
    **{f"vgg{d}": ("vgg11", {}) for d in (13, 16, 19)},
    **{f"vgg{d}_bn": ("vgg11_bn", {}) for d in (13, 16, 19)},
    **{f"vit_{size}_patch16": ("vit_tiny_patch16", {}) for size in ("small", "base", "large")},
    "retfound": ("vit_tiny_patch16", {"global_pool": "avg"}),
}


def _zoo_variants() -> list[tuple[str, dict, tuple[int, ...]]]:
    """program_zoo's variants, with those of SAME_LAYERS_AS networks moved onto the network
    they are built like (retfound's drop path onto an average-pooled ViT-Tiny)."""
    from palm.engine.program_zoo import zoo_variants
    variants = []
    for name, kwargs, sizes in zoo_variants():
        if name in SAME_LAYERS_AS:
            name, like = SAME_LAYERS_AS[name]
            kwargs = {**like, **kwargs}
        if (name, kwargs, sizes) not in variants:
            variants.append((name, kwargs, sizes))
    return variants


def _layers(model: paddle.nn.Layer) -> tuple:
    """What decides a network's exported ops: its class, its layers' classes and its public
    settings (a ViT's global_pool)."""
    settings = {k: v for k, v in vars(model).items()
                if not k.startswith("_") and isinstance(v, (str, bool))}
    return (type(model).__name__, sorted({type(m).__name__ for m in model.sublayers()}),
            settings)


@pytest.mark.parametrize("name", sorted(SAME_LAYERS_AS))
def test_the_variants_left_out_are_built_of_the_same_layers(name):
    like, kwargs = SAME_LAYERS_AS[name]
    with paddle.LazyGuard():  # no weights allocated
        assert _layers(build_model(name)) == _layers(build_model(like, **kwargs))


@pytest.mark.slow
@pytest.mark.parametrize("name, model_kwargs, sizes", _zoo_variants(),
                         ids=lambda v: v if isinstance(v, str) else json.dumps(v, sort_keys=True))
def test_every_zoo_export_passes(name, model_kwargs, sizes, tmp_path):
    from palm.engine.program_zoo import export_zoo_model
    folder = export_zoo_model(name, model_kwargs, tmp_path / name, sizes)
    ops = set(program_ops(folder / "model.json"))
    assert ops <= allowlist()["paddle"], ops - allowlist()["paddle"]
    check_program(folder / "model.json")


def test_the_allowlist_holds_no_file_or_control_flow_op():
    names = allowlist()["paddle"]
    assert {"pd_op.conv2d", "pd_op.fetch", "builtin.parameter"} <= names
    assert names.isdisjoint({"pd_op.save", "pd_op.save_combine", "pd_op.load",
                             "pd_op.load_combine", "pd_op.read_file", "pd_op.print",
                             "pd_op.if", "pd_op.while", "pd_op.pylayer"})
    assert not {op for op in names if op.startswith(("custom_op.", "cf."))}
    assert all("/opset" in layer for layer in allowlist()["openvino"])
