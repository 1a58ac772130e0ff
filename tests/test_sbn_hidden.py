"""An SBN's deterministic layers: ``hidden`` as a list (Jang et al. 2017's 512-256 nets), mirrored
between the recognition and generative directions; an integer keeps the one-layer nets unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from exact_enumeration import X, X_ALL, exact_log_px, tiny_sbn


def _widths(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_a_list_of_widths_runs_bottom_up_in_q_and_top_down_in_p():
    model = tiny_sbn(sizes=(3, 2), hidden=[5, 7])
    assert _widths(model.inference[0]) == [(4, 5), (5, 7), (7, 3)]        # x -> 5 -> 7 -> z_1
    assert _widths(model.inference[1]) == [(3, 5), (5, 7), (7, 2)]        # z_1 -> 5 -> 7 -> z_2
    assert _widths(model.generative["layers"][0]) == [(2, 7), (7, 5), (5, 3)]  # z_2 -> 7 -> 5 -> z_1
    assert _widths(model.generative["likelihood"]) == [(3, 7), (7, 5), (5, 4)]  # z_1 -> 7 -> 5 -> x
    # still a normalised model of the visibles: sum_x p(x) = 1 by exact enumeration
    assert torch.logsumexp(exact_log_px(model, X_ALL), 0).item() == pytest.approx(0.0, abs=1e-5)


def test_an_integer_width_is_the_one_layer_net_it_always_was():
    a, b = tiny_sbn(hidden=6), tiny_sbn(hidden=[6])
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    torch.manual_seed(3)
    wa = a.log_weights(X, 5)
    torch.manual_seed(3)
    assert torch.equal(wa, b.log_weights(X, 5))
    assert _widths(tiny_sbn(hidden=0).inference[0]) == _widths(tiny_sbn(hidden=[]).inference[0]) == [(4, 3)]


@pytest.mark.parametrize("bad", [-1, [0], [8, -2]])
def test_a_bad_width_names_the_option(bad):
    with pytest.raises(ValueError, match="model.hidden"):
        tiny_sbn(hidden=bad)
