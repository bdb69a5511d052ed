"""Sizes of the reference implementation (ARNAS.md) reproduced exactly."""

import pytest

from arnas_ray.space import GENOTYPES, Layout, Network, Supernet, count_macs, count_params


@pytest.mark.parametrize("C,cells,params", [(24, 8, 1_882_930), (8, 5, 206_562)])
def test_arnas_supernet_params_equal_reference(C, cells, params):
    assert count_params(Supernet(Layout.preset("arnas"), C, 10, cells)) == params


def test_arnas_supernet_macs_within_one_percent():
    macs = count_macs(Supernet(Layout.preset("arnas"), 24, 10, 8), image_size=32)
    assert abs(macs - 461.2e6) / 461.2e6 < 0.01


@pytest.mark.parametrize("C,params,macs", [(64, 4_520_394, 1240e6), (36, 1_533_718, 424e6)])
def test_published_arnas_network_size(C, params, macs):
    net = Network(GENOTYPES["ARNAS"], Layout.preset("arnas"), C, 10, 20, auxiliary=True)
    assert count_params(net) == params  # auxiliary head excluded
    assert count_params(net, exclude=()) > params  # ... but it exists
    assert abs(count_macs(net) - macs) / macs < 0.01


def test_darts_v2_size_matches_darts_paper():
    net = Network(GENOTYPES["DARTS_V2"], Layout.preset("darts"), 36, 10, 20, auxiliary=True)
    assert abs(count_params(net) - 3.349e6) / 3.349e6 < 0.005
