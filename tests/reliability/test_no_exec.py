"""Nothing executes what it reads (issue 9, item 2).

Each payload below really runs code when read the unsafe way (the tests show that first, into a
separate marker), and arnas-ray refuses it with a clear error while the marker never appears.
A source scan pins the rule for the whole package: no ``eval(``/``exec(``/``pickle.load``/
``yaml.load(``/``yaml.unsafe_load`` and no ``torch.load(`` without ``weights_only=True``.
"""

from __future__ import annotations

import builtins
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from arnas_ray.checkpoint import load_checkpoint
from arnas_ray.cli import main
from arnas_ray.errors import CheckpointError, SpecError
from arnas_ray.space.genotype import Genotype
from arnas_ray.sweep.spec import load_spec

PACKAGE = Path(__file__).resolve().parents[2] / "arnas_ray"


class _Payload:
    """Unpickling this creates (truncates) ``path``: arbitrary code execution on load."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1, "evil": _Payload(marker)}, path)
    return path


def test_payload_is_live(tmp_path):
    """Control: the checkpoint payload runs when loaded without weights_only."""
    proof = tmp_path / "proof"
    ckpt = _malicious_checkpoint(tmp_path / "proof.pt", proof)
    torch.load(ckpt, weights_only=False)  # the unsafe way, on purpose
    assert proof.exists()


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _malicious_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt)
    message = str(info.value)
    assert message.startswith(f"{ckpt}: refused: ") and "weights_only=True" in message
    assert "io.open" in message  # names what it refused (the payload reduces to open())
    assert "weights_only=False" not in message and "\n" not in message  # no unsafe advice
    assert not marker.exists()


def test_raw_pickle_file_is_refused(tmp_path):
    """A plain pickle (not a torch zip) named like a checkpoint is refused too."""
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "plain.pt"
    ckpt.write_bytes(pickle.dumps({"evil": _Payload(marker)}))
    with pytest.raises(CheckpointError, match=re.escape(str(ckpt))):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_cli_eval_refuses_malicious_checkpoint(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = _malicious_checkpoint(tmp_path / "evil.pt", marker)
    assert main(["eval", str(ckpt), "--attacks", "natural"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"arnas-ray: error: {ckpt}: refused")
    assert "weights_only=False" not in err
    assert not marker.exists()


_YAML_PAYLOADS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    'name: x\nstorage: !!python/object/apply:os.system ["touch {marker}"]\n',
    'name: !!python/object/new:subprocess.Popen [["touch", "{marker}"]]\n',
    'name: x\ngrid: !!python/name:os.system\n',
]


@pytest.mark.parametrize("template", _YAML_PAYLOADS)
def test_yaml_python_tags_are_refused(tmp_path, template):
    marker = tmp_path / "pwned"
    spec = tmp_path / "sweep.yaml"
    spec.write_text(template.format(marker=marker))
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert info.value.field == "spec" and str(spec) in str(info.value) and "tags" in str(info.value)
    assert not marker.exists()


def test_yaml_payload_is_live(tmp_path):
    """Control: the first YAML payload runs a command under an unsafe loader."""
    proof = tmp_path / "proof"
    yaml.unsafe_load(_YAML_PAYLOADS[0].format(marker=proof))
    assert proof.exists()


def test_cli_refuses_yaml_tags_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    spec = tmp_path / "sweep.yaml"
    spec.write_text(_YAML_PAYLOADS[0].format(marker=marker))
    assert main(["sweep", "validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("arnas-ray: error: spec:")
    assert not marker.exists()


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch {marker}')",
    "ARNAS",  # a name is not JSON: no eval-based lookup of genotypes
    json.dumps({"cells": {"a": {"edges": [["__import__('os').system('touch {marker}')", 0]] * 2}}}),
])
def test_genotype_json_is_data(tmp_path, text):
    marker = tmp_path / "pwned"
    with pytest.raises(SpecError):
        Genotype.from_json(text.replace("{marker}", str(marker)))
    path = tmp_path / "g.json"
    path.write_text(text.replace("{marker}", str(marker)))
    with pytest.raises(SpecError):
        Genotype.resolve(str(path))
    assert not marker.exists()


# ---- source scan -------------------------------------------------------------------------
_FORBIDDEN = {
    r"(?<![\w.])eval\(": "eval()",
    r"(?<![\w.])exec\(": "exec()",
    r"\bpickle\.loads?\(": "pickle.load",
    r"\bcloudpickle\.loads?\(": "cloudpickle.load",
    r"\byaml\.load\(": "yaml.load (use yaml.safe_load)",
    r"\byaml\.unsafe_load": "yaml.unsafe_load",
    r"\byaml\.(Full|Unsafe)?Loader\b": "a non-safe yaml Loader",
    r"\bmarshal\.loads?\(": "marshal.load",
    r"allow_pickle\s*=\s*True": "numpy allow_pickle=True",
    r"\bshell\s*=\s*True": "subprocess shell=True",
}


def _calls(source: str, name: str) -> list[str]:
    """The argument text of every ``name(`` call in ``source`` (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", source):
        depth, i = 1, m.end()
        while depth and i < len(source):
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        out.append(source[m.end(): i - 1])
    return out


def scan(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        for pattern, what in _FORBIDDEN.items():
            for m in re.finditer(pattern, source):
                line = source.count("\n", 0, m.start()) + 1
                problems.append(f"{path.relative_to(root.parent)}:{line}: {what}")
        for args in _calls(source, "torch.load"):
            if not re.search(r"weights_only\s*=\s*True", args):
                problems.append(f"{path.relative_to(root.parent)}: torch.load({args}) without weights_only=True")
    return problems


def test_package_never_executes_what_it_reads():
    assert scan(PACKAGE) == []


def test_scan_catches_each_pattern(tmp_path):
    """The scanner is not vacuous: each forbidden form in a file is reported."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "x = eval('1')\nexec('y=1')\nimport pickle; pickle.load(f)\nyaml.load(s)\n"
        "torch.load(p, map_location='cpu')\nmodel.eval()\ntorch.load(p, weights_only=True)\n"
    )
    found = scan(pkg)
    assert len(found) == 5, found
    assert any("torch.load(p, map_location='cpu')" in f for f in found)
