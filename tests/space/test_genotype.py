import json

import pytest
import torch

from arnas_ray.errors import SpecError
from arnas_ray.space import DARTS_PRIMITIVES, GENOTYPES, PRIMITIVES, Genotype, derive_genotype


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_json_round_trip_is_exact(name):
    g = GENOTYPES[name]
    text = g.to_json()
    assert Genotype.from_json(text) == g
    assert Genotype.from_json(text).to_json() == text
    assert json.loads(g.to_json(indent=2)) == json.loads(text)


def test_published_arnas_genotype_content():
    g = GENOTYPES["ARNAS"]
    assert g["accurate"].edges[:2] == (("skip_connect", 0), ("skip_connect", 1))
    assert all(op.startswith("dil_conv") for op, _ in g["robust"].edges)
    assert g["reduce"].concat == (2, 3, 4, 5)


def _raw():
    return json.loads(GENOTYPES["ARNAS"].to_json())


@pytest.mark.parametrize(
    "mutate,field,message",
    [
        (lambda d: d["cells"]["accurate"]["edges"][0].__setitem__(0, "conv_9x9"), "genotype.cells.accurate.edges[0]", "unknown op"),
        (lambda d: d["cells"]["robust"]["edges"][2].__setitem__(1, 3), "genotype.cells.robust.edges[2]", "node 3"),
        (lambda d: d["cells"]["robust"]["edges"][0].__setitem__(1, -1), "genotype.cells.robust.edges[0]", "node 2"),
        (lambda d: d["cells"]["reduce"]["edges"].pop(), "genotype.cells.reduce.edges", "2 edges per node"),
        (lambda d: d["cells"]["reduce"].__setitem__("concat", [2, 9]), "genotype.cells.reduce.concat", "states are 0..5"),
        (lambda d: d["cells"]["reduce"].__setitem__("concat", [2, 2]), "genotype.cells.reduce.concat", "repeats"),
        (lambda d: d["cells"]["reduce"].__setitem__("concat", []), "genotype.cells.reduce.concat", "at least one"),
        (lambda d: d["cells"]["reduce"]["edges"].__setitem__(0, "skip"), "genotype.cells.reduce.edges[0]", "expected [op, input]"),
        (lambda d: d["cells"]["reduce"]["edges"][0].__setitem__(1, "0"), "genotype.cells.reduce.edges[0]", "input '0'"),
        (lambda d: d["cells"].__setitem__("robust", "x"), "genotype.cells.robust", "expected"),
        (lambda d: d.__setitem__("cells", {}), "genotype.cells", "non-empty"),
        (lambda d: d.__setitem__("extra", 1), "genotype.extra", "unknown field"),
        (lambda d: d["cells"]["accurate"]["edges"][0].__setitem__(0, "none"), "genotype.cells.accurate.edges[0]", "unknown op"),
    ],
)
def test_every_validation_error_names_its_path(mutate, field, message):
    d = _raw()
    mutate(d)
    with pytest.raises(SpecError) as exc:
        Genotype.from_dict(d)
    assert exc.value.field == field
    assert message in str(exc.value)


def test_unknown_op_error_lists_allowed_ops():
    d = _raw()
    d["cells"]["accurate"]["edges"][0][0] = "conv_9x9"
    with pytest.raises(SpecError, match="sep_conv_3x3"):
        Genotype.from_dict(d)


def test_invalid_json_and_unknown_name():
    with pytest.raises(SpecError, match="JSON"):
        Genotype.from_json("{not json")
    with pytest.raises(SpecError, match="ARNAS"):
        Genotype.resolve("NO_SUCH_GENOTYPE")


def _alphas_for(choices, prims, n_edges=14, hot=5.0):
    """choices: per node, {edge_index: op_name}; everything else gets 0."""
    a = torch.zeros(n_edges, len(prims))
    start = 0
    for node, picks in enumerate(choices):
        for j, op in picks.items():
            a[start + j, prims.index(op)] = hot
        start += 2 + node
    return a


def test_from_alphas_reads_off_hand_built_answer():
    choices = [
        {0: "sep_conv_3x3", 1: "skip_connect"},
        {2: "dil_conv_5x5", 0: "max_pool_3x3"},
        {3: "avg_pool_3x3", 1: "sep_conv_5x5"},
        {4: "dil_conv_3x3", 2: "sep_conv_3x3"},
    ]
    a = _alphas_for(choices, list(PRIMITIVES))
    # make the first-listed edge of each node the strongest so the order is defined
    start = 0
    for node, picks in enumerate(choices):
        j, op = next(iter(picks.items()))
        a[start + j, PRIMITIVES.index(op)] = 6.0
        start += 2 + node
    g = derive_genotype({"accurate": a}, PRIMITIVES)
    assert g["accurate"].edges == (
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("dil_conv_5x5", 2), ("max_pool_3x3", 0),
        ("avg_pool_3x3", 3), ("sep_conv_5x5", 1),
        ("dil_conv_3x3", 4), ("sep_conv_3x3", 2),
    )
    assert g["accurate"].concat == (2, 3, 4, 5)


def test_from_alphas_never_picks_none():
    prims = list(DARTS_PRIMITIVES)
    a = torch.zeros(14, len(prims))
    a[:, prims.index("none")] = 10.0  # `none` dominates every edge
    a[0, prims.index("sep_conv_3x3")] = 1.0
    g = Genotype.from_alphas({"normal": a, "reduce": a.clone()}, prims)
    assert all(op != "none" for op, _ in g["normal"].edges)
    assert g["normal"].edges[0] == ("sep_conv_3x3", 0)


def test_from_alphas_rejects_wrong_shape():
    with pytest.raises(SpecError, match="shape"):
        derive_genotype({"accurate": torch.zeros(3, 7)}, PRIMITIVES)
