"""engine/load.py: safe YAML with locations, and what it refuses."""

from __future__ import annotations

import pytest

from engine.errors import PlaybookError
from engine.load import MAX_BYTES, load_text


def codes(text: str) -> list[tuple[str, int, int]]:
    with pytest.raises(PlaybookError) as info:
        load_text(text, "f.yaml")
    return [(p.code, p.location.line, p.location.col) for p in info.value.problems]


def test_marks_point_at_keys_and_values() -> None:
    doc = load_text("a:\n  bb: 1\n  cc: [x, y]\n", "f.yaml")
    assert doc.data == {"a": {"bb": 1, "cc": ["x", "y"]}}
    assert str(doc.at(("a", "cc"), key=True)) == "f.yaml:3:3"
    assert str(doc.at(("a", "cc", 1))) == "f.yaml:3:11"
    # an unknown path falls back to its nearest known parent
    assert str(doc.at(("a", "cc", 7))) == "f.yaml:3:7"


def test_duplicate_keys_are_all_reported() -> None:
    assert codes("a: 1\nb: 2\na: 3\nb: 4\n") == [("yaml_duplicate_key", 3, 1), ("yaml_duplicate_key", 4, 1)]


def test_aliases_are_refused_before_expansion() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(20)
    )
    assert codes(bomb)[0][0] == "yaml_alias"


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    assert codes("x: " + "[" * 5000 + "]" * 5000)[0][0] == "yaml_too_deep"


def test_oversized_text_is_refused() -> None:
    assert codes("x: '" + "a" * MAX_BYTES + "'")[0][0] == "yaml_too_large"


@pytest.mark.parametrize("word", ["no", "yes", "on", "off", "No", "ON"])
def test_yaml_11_booleans_are_flagged(word: str) -> None:
    assert codes(f"a: {word}\n") == [("yaml_ambiguous_bool", 1, 4)]


def test_quoted_and_literal_booleans_are_fine() -> None:
    assert load_text("a: 'no'\nb: true\nc: false\n").data == {"a": "no", "b": True, "c": False}


def test_dates_stay_text() -> None:
    assert load_text("d: 2026-11-27\n").data == {"d": "2026-11-27"}


def test_syntax_error_has_a_location() -> None:
    assert codes("a: {b: 1\nc: 2\n")[0][0] == "yaml_syntax"


def test_a_key_without_its_colon_is_quoted_short_however_long_the_line() -> None:
    # found by the fuzzer (corpus/playbook/crash-6554d584e127): a line of 4,400 digits quoted whole
    for line, quoted in (("foo", "'foo'"), ("9" * 4400, f"'{'9' * 80}…' (4400 characters)")):
        with pytest.raises(PlaybookError) as info:
            load_text(f"a:\n  {line}\n  b: 2\n")
        [problem] = info.value.problems
        assert (problem.code, problem.location.line, problem.location.col) == ("yaml_syntax", 2, 3)
        assert problem.message.startswith(f"a missing ':' after the key {quoted} (the parser says: ")
        assert len(problem.message) < 200


def test_empty_document() -> None:
    assert codes("# nothing\n")[0][0] == "yaml_empty"


def test_two_files_in_a_row_do_not_share_locations() -> None:
    first = load_text("a:\n  b: 1\n", "one.yaml")
    second = load_text("b: 1\n", "two.yaml")
    assert str(first.at(("a", "b"))) == "one.yaml:2:6"
    assert str(second.at(("b",))) == "two.yaml:1:4"
    assert ("a", "b") not in second.value_marks


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b", "\ufffe"])
def test_a_control_character_is_a_located_error(character: str) -> None:
    assert codes(f"a: 1\nb: x{character}y\n") == [("yaml_bad_character", 2, 5)]


def test_an_integer_too_long_for_python_is_a_located_error() -> None:
    assert codes("a: 1\nb: " + "9" * 4400 + "\n") == [("number_too_long", 2, 4)]


@pytest.mark.parametrize("number", [".inf", "-.inf", ".nan", ".NaN", "1.0e+999"])
def test_numbers_that_are_not_finite_are_refused(number: str) -> None:
    assert codes(f"a:\n  lt: {number}\n") == [("number_not_finite", 2, 7)]


@pytest.mark.parametrize(
    "number", ["010", "-017", "00", "0o10", "-0o17", "1:30", "1:20", "-1:20", "190:20:30", "1:30.5", "0b10", "-0b1_0"]
)
def test_yaml_11_octal_sexagesimal_and_binary_numbers_are_refused(number: str) -> None:
    assert codes(f"a: {number}\n") == [("yaml_ambiguous_number", 1, 4)]


def test_the_refusal_names_the_base_yaml_11_would_read() -> None:
    with pytest.raises(PlaybookError) as caught:
        load_text("a: 0b10\nb: 010\nc: 1:30\n")
    assert [p.message.split(" number")[0] for p in caught.value.problems] == [
        "unquoted '0b10' is a base-2",
        "unquoted '010' is a base-8",
        "unquoted '1:30' is a base-60",
    ]


def test_plain_and_quoted_numbers_are_fine() -> None:
    data = load_text("a: 0\nb: 10\nc: '010'\nd: '1:30'\ne: 0.5\nf: -3\ng: 1.5e+3\nh: '0o10'\ni: 0o9\n").data
    assert data == {"a": 0, "b": 10, "c": "010", "d": "1:30", "e": 0.5, "f": -3, "g": 1500.0, "h": "0o10", "i": "0o9"}
