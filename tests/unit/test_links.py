"""The viewer page of a storage URL: one mapping for the operator's status and the viewer."""

from __future__ import annotations

import pytest

from kubemill.runner.links import viewer_link

VIEWER, ROOT = "https://nb.example/kubemill", "s3://results/runs/"


@pytest.mark.parametrize(
    ("url", "page"),
    [
        ("s3://results/runs/ns/r/output.ipynb", f"{VIEWER}/view/ns/r/output.ipynb"),
        # Each segment percent-encoded once: a space, a hash, a question mark, non-ASCII.
        (
            "s3://results/runs/a b/#1?/Zürich.ipynb",
            f"{VIEWER}/view/a%20b/%231%3F/Z%C3%BCrich.ipynb",
        ),
        # Outside the root, the root itself, and keys the viewer would refuse: no page.
        ("s3://results/other/ns/r/output.ipynb", None),
        ("s3://results/runsx/output.ipynb", None),
        ("s3://results/runs/", None),
        ("s3://results/runs/ns//output.ipynb", None),
        ("s3://results/runs/ns/../secret.ipynb", None),
        ("", None),
    ],
)
def test_a_page_for_each_object_under_the_root(url: str, page: str | None) -> None:
    assert viewer_link(url, VIEWER, ROOT) == page


def test_the_settings_may_omit_slashes_and_be_empty() -> None:
    assert viewer_link("s3://b/x.ipynb", "https://v/", "s3://b") == "https://v/view/x.ipynb"
    assert viewer_link("s3://b/x.ipynb", "", "s3://b/") is None
    assert viewer_link("s3://b/x.ipynb", "https://v", "") is None
