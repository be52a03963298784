"""The example program of docs/objectives.md runs and behaves as the page says."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pyromm.infer import IWAE, RateELBO, SiteError

OBJECTIVES = Path(__file__).resolve().parents[1] / "docs" / "objectives.md"


@pytest.fixture(scope="module")
def two_views():
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", OBJECTIVES.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) == 1
    namespace: dict = {"__name__": "objectives_example"}
    exec(compile(blocks[0], "docs/objectives.md", "exec"), namespace)
    torch.manual_seed(0)
    return namespace["TwoViews"]()


def test_the_example_logs_the_terms_the_page_names_and_they_sum_to_the_loss(two_views):
    data = {"a": torch.randn(5, 2), "b": torch.randn(5, 2)}
    loss, terms = RateELBO("analytic").loss_and_terms(two_views.model, two_views.guide, data, {"beta": 1.0, "alpha": 0.5})
    assert sorted(terms) == ["rate", "rate/z|a", "rec/a", "rec/b"]
    torch.testing.assert_close(loss.detach(), sum(terms.values()))


def test_the_example_rate_of_term_is_alpha_times_the_kl_and_iwae_refuses_it(two_views):
    data = {"a": torch.randn(5, 2), "b": torch.randn(5, 2)}
    half = RateELBO("analytic").loss_and_terms(two_views.model, two_views.guide, data, {"beta": 1.0, "alpha": 0.5})[1]
    full = RateELBO("analytic").loss_and_terms(two_views.model, two_views.guide, data, {"beta": 1.0, "alpha": 1.0})[1]
    torch.testing.assert_close(full["rate/z|a"], 2 * half["rate/z|a"])
    with pytest.raises(SiteError, match="'z\\|a'"):
        IWAE(4).loss(two_views.model, two_views.guide, data, {"beta": 1.0, "alpha": 0.5})
