"""UserError: the bot's sentence and the outside text it quotes, kept apart."""

from __future__ import annotations

import pytest

from commands.errors import NotFound, UserError


def test_a_plain_sentence_is_one_piece_braces_and_all() -> None:
    err = UserError("Use `{x}` as {shown}.")
    assert err.message == str(err) == "Use `{x}` as {shown}."
    assert err.parts == (("Use `{x}` as {shown}.", False),)


def test_values_are_filled_in_and_marked_as_outside_text() -> None:
    err = NotFound("{key!s} and {text!r} in `{{braces}}`.", key="INC-*1*", text="a'_b")
    assert err.message == str(err) == 'INC-*1* and "a\'_b" in `{braces}`.'
    assert isinstance(err, UserError)
    outside = [text for text, mine in err.parts if mine]
    assert outside == ["INC-*1*", '"a\'_b"']
    assert "".join(text for text, _ in err.parts) == err.message


def test_an_empty_value_adds_no_piece() -> None:
    assert UserError("[{x}]", x="").parts == (("[", False), ("]", False))


@pytest.mark.parametrize(
    ("template", "values"),
    [("{0} is wrong", {"x": 1}), ("{x.y}", {"x": 1}), ("{x}", {"x": 1, "unused": 2})],
)
def test_a_template_that_hides_a_value_is_refused(template: str, values: dict) -> None:
    with pytest.raises(ValueError):
        UserError(template, **values)
