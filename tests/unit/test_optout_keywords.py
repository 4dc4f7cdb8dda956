"""Opt-out / opt-in keyword matching: whole message, case-, space- and punctuation-blind."""

from __future__ import annotations

import pytest

from sms_pipeline.services.optout import (
    KeywordAction,
    classify,
    classify_message,
    normalise_keyword,
)
from sms_pipeline.settings import load_settings

SETTINGS = load_settings()
OUT = SETTINGS.sms_opt_out_keywords
IN = SETTINGS.sms_opt_in_keywords


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        " stop ",
        "Stop!",
        "stop.",
        "S T O P",
        "stop all",
        "StopAll",
        "\tSTOP\n",
        "стоп",
        "СТОП",
        "Стоп!!!",
        "ВІДПИСКА",
        "відписка",
        "Відписатися",
        "отписка",
        "unsubscribe",
        "ＳＴＯＰ",  # fullwidth letters, as some phone keyboards send
    ],
)
def test_opt_out_words_in_any_case_spacing_or_punctuation(text: str) -> None:
    assert classify(text, OUT, IN) is KeywordAction.OPT_OUT


@pytest.mark.parametrize("text", ["start", "START", " Start! ", "старт", "СТАРТ", "unstop"])
def test_opt_in_words(text: str) -> None:
    assert classify(text, OUT, IN) is KeywordAction.OPT_IN


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!!",
        "OK, thanks",
        "Дякую!",
        "Stop sending me codes",  # a sentence, not the keyword
        "Cancel my appointment",  # CANCEL is a keyword only on its own
        "End of treatment?",
        "stops",
        "restart",
        "nonstop",
    ],
)
def test_other_messages_are_not_keywords(text: str) -> None:
    assert classify(text, OUT, IN) is None


def test_none_is_not_a_keyword() -> None:
    assert classify(None, OUT, IN) is None


def test_normalise_keeps_letters_and_digits_only() -> None:
    assert normalise_keyword(" Stop-All! 2 ") == "stopall2"
    assert normalise_keyword("ВІДПИСКА") == "відписка"


def test_keyword_lists_come_from_settings(settings_env: object) -> None:
    settings = settings_env(SMS_OPT_OUT_KEYWORDS="HALT, Досить", SMS_OPT_IN_KEYWORDS="GO")  # type: ignore[operator]
    assert classify_message("halt", settings) is KeywordAction.OPT_OUT
    assert classify_message("ДОСИТЬ!", settings) is KeywordAction.OPT_OUT
    assert classify_message("stop", settings) is None
    assert classify_message("go", settings) is KeywordAction.OPT_IN


def test_a_word_in_both_lists_opts_out() -> None:
    assert classify("stop", ["STOP"], ["stop"]) is KeywordAction.OPT_OUT
