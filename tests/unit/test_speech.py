"""Speech-first output: markdown and markup cleaning, streaming sentence segmentation, questions."""

from __future__ import annotations

import random

import pytest

from nodes.speech import (
    SentenceSplitter,
    clean_for_speech,
    ends_with_question,
    has_control_markup,
    split_sentences,
    storable_text,
)

# ----------------------------------------------------------------------------------------------------
# clean_for_speech: markdown
# ----------------------------------------------------------------------------------------------------


def test_plain_prose_is_left_unchanged() -> None:
    text = "Dr. Smith paid 3.5 dollars, e.g. for apples! Isn't that nice? 🎉"
    assert clean_for_speech(text) == text


def test_heading_marks_are_removed_and_the_heading_becomes_a_sentence() -> None:
    assert clean_for_speech("## Quick summary\nIt works.") == "Quick summary. It works."


def test_heading_that_already_ends_with_punctuation_gets_no_extra_period() -> None:
    assert clean_for_speech("# Ready?") == "Ready?"


def test_hashtag_without_space_is_not_a_heading() -> None:
    assert clean_for_speech("#1 fan") == "#1 fan"


def test_bold_and_italic_markers_are_removed() -> None:
    assert clean_for_speech("This is **very** *really* __truly__ _quite_ ***wild***.") == (
        "This is very really truly quite wild."
    )


def test_underscores_inside_words_are_kept() -> None:
    assert clean_for_speech("Call my_function_name now.") == "Call my_function_name now."


def test_spaced_asterisks_for_multiplication_are_kept() -> None:
    assert clean_for_speech("It is 2 * 3 * 4.") == "It is 2 * 3 * 4."


def test_unpaired_bold_markers_are_removed() -> None:
    assert clean_for_speech("**This starts bold.") == "This starts bold."
    assert clean_for_speech("And ends here.**") == "And ends here."


def test_strikethrough_markers_are_removed() -> None:
    assert clean_for_speech("That is ~~wrong~~ right.") == "That is wrong right."


def test_inline_code_keeps_its_text() -> None:
    assert clean_for_speech("Type `hello` and press ``enter``.") == "Type hello and press enter."


def test_fence_lines_are_dropped_and_code_is_kept_as_text() -> None:
    assert clean_for_speech("Try this:\n```python\nprint(1)\n```\nDone.") == "Try this: print(1) Done."


def test_link_becomes_its_text() -> None:
    assert clean_for_speech("Read [the guide](https://example.com/a_(b)) today.") == "Read the guide today."


def test_image_becomes_its_alt_text() -> None:
    assert clean_for_speech("![a happy robot](robot.png)") == "a happy robot"


def test_bullet_items_become_sentences_with_periods() -> None:
    assert clean_for_speech("You need:\n- flour\n* sugar\n+ eggs") == "You need: flour. sugar. eggs."


def test_numbered_items_become_sentences_with_periods() -> None:
    assert clean_for_speech("1. Open the box\n2) Take it out!") == "Open the box. Take it out!"


def test_list_item_period_goes_before_a_trailing_emoji() -> None:
    assert clean_for_speech("- Have fun 🎉") == "Have fun. 🎉"


def test_list_item_ending_in_a_quote_gets_its_period_after_the_quote() -> None:
    assert clean_for_speech('- Say "cheese"') == 'Say "cheese".'


def test_negative_number_is_not_a_bullet() -> None:
    assert clean_for_speech("-5 degrees") == "-5 degrees"


def test_blockquote_markers_are_removed() -> None:
    assert clean_for_speech("> Be kind.\n> > Always.") == "Be kind. Always."


def test_table_rows_become_comma_separated_sentences() -> None:
    table = "| Name | Age |\n|------|:---:|\n| Ada | 36 |"
    assert clean_for_speech(table) == "Name, Age. Ada, 36."


def test_horizontal_rule_is_dropped() -> None:
    assert clean_for_speech("One.\n---\nTwo.") == "One. Two."


def test_simple_html_tags_are_removed() -> None:
    assert clean_for_speech("Line one<br>line <b>two</b>.") == "Line one line two."


def test_whitespace_is_collapsed_and_trimmed() -> None:
    assert clean_for_speech("  Hello \t there.\n\n\n  Bye.  ") == "Hello there. Bye."


def test_markdown_only_text_cleans_to_nothing() -> None:
    assert clean_for_speech("```\n---\n**") == ""


# ----------------------------------------------------------------------------------------------------
# clean_for_speech: role labels, thinking, template markup
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["Assistant:", "NAILA:", "AI:", "assistant :", "**NAILA:**"])
def test_role_label_at_the_start_is_removed(label: str) -> None:
    assert clean_for_speech(f"{label} Hello there.") == "Hello there."


def test_role_label_at_the_start_of_a_later_line_is_removed() -> None:
    assert clean_for_speech("Sure.\nNAILA: Here it is.") == "Sure. Here it is."


def test_role_word_inside_a_sentence_is_kept() -> None:
    assert clean_for_speech("I am your assistant: NAILA.") == "I am your assistant: NAILA."


def test_think_block_is_removed() -> None:
    assert clean_for_speech("<think>The user wants a joke.\nOkay.</think>\nWhy not?") == "Why not?"


def test_unfinished_think_block_is_removed() -> None:
    assert clean_for_speech("Hi! <think>hmm, what next") == "Hi!"


def test_text_before_a_lone_closing_think_tag_is_removed() -> None:
    assert clean_for_speech("reasoning here</think>Hello.") == "Hello."


@pytest.mark.parametrize(
    "raw",
    [
        "Hello.<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.",
        "<|im_start|>assistant\nHello.<|im_end|>",
        "<s>[INST] Hello. [/INST]</s>",
        "<start_of_turn>model\nHello.<end_of_turn>",
        "Hello.<｜end▁of▁sentence｜>",
    ],
)
def test_template_markup_is_removed(raw: str) -> None:
    assert clean_for_speech(raw) == "Hello."


@pytest.mark.parametrize(
    "text",
    [
        "Hi<|eot_id|>",
        "<|im_start|>user",
        "<s>hi",
        "hi</s>",
        "[INST] hi",
        "<start_of_turn>model",
        "<<SYS>> be nice",
        "<|endoftext|>",
        "ok<｜end▁of▁sentence｜>",
    ],
)
def test_control_markup_is_detected(text: str) -> None:
    assert has_control_markup(text)


@pytest.mark.parametrize(
    "text",
    [
        "Hello! How are you? 🎉",
        "a < b and c > d",
        "Use | to pipe and <think> to think",
        "x <| y",
        "[inst] lowercase brackets",
        "",
    ],
)
def test_ordinary_text_has_no_control_markup(text: str) -> None:
    assert not has_control_markup(text)


# ----------------------------------------------------------------------------------------------------
# clean_for_speech applied sentence by sentence equals applying it to the whole text
# ----------------------------------------------------------------------------------------------------

PROSE = [
    "Hello there! I'm NAILA. How can I help you today?",
    "Dr. Smith said it costs 3.5 dollars. That's cheap, e.g. for a robot! Isn't it? 🎉 Yes.",
    "Here's a **fun fact**: octopuses have three hearts. *Three!* Amazing, right?",
    "NAILA: The answer is 42. It comes from a book by Douglas Adams.",
    "Read [the guide](https://example.com) first. Then try `hello` again...",
    "You will need:\n- flour\n- sugar\n- two eggs\nMix them well. Bake for 20 minutes!",
    "## Steps\n1. Open the box.\n2. Take out the robot.\nThat's it!",
    "I love the rain. It's calming. Well… maybe not always! Ha ha 😄",
    "**This is bold. Across two sentences.** And normal.",
]


@pytest.mark.parametrize("text", PROSE)
def test_cleaning_each_sentence_equals_cleaning_the_whole_text(text: str) -> None:
    by_sentence = " ".join(c for c in (clean_for_speech(s) for s in split_sentences(text)) if c)
    assert by_sentence == clean_for_speech(text)


# ----------------------------------------------------------------------------------------------------
# SentenceSplitter
# ----------------------------------------------------------------------------------------------------


def test_splits_on_period_exclamation_and_question_mark() -> None:
    assert split_sentences("Hi. Wow! Really? Yes") == ["Hi.", "Wow!", "Really?", "Yes"]


def test_keeps_punctuation_runs_together() -> None:
    assert split_sentences("What?! No way... Okay…") == ["What?!", "No way...", "Okay…"]


def test_ellipsis_followed_by_a_lowercase_word_does_not_split() -> None:
    assert split_sentences("Well… maybe later. Okay.") == ["Well… maybe later.", "Okay."]


def test_closing_quotes_and_brackets_belong_to_the_sentence() -> None:
    assert split_sentences('He said "Stop!" Then (really.) left.') == ['He said "Stop!"', "Then (really.)", "left."]


@pytest.mark.parametrize("text", ["It costs 3.5 dollars.", "A 0.5B model is small.", "Version 1.2.3 works."])
def test_decimals_do_not_split(text: str) -> None:
    assert split_sentences(text) == [text]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Who is here.",
        "Mr. and Mrs. Smith met Ms. Jones.",
        "Fruit, e.g. Apples, and i.e. pears.",
        "Cats vs. dogs is old.",
        "He lives on St. Mary road.",
        "Bring pens, paper, etc. and a bag.",
        "We meet at 9 a.m. and leave at 5 p.m. sharp.",
    ],
)
def test_abbreviations_do_not_split(text: str) -> None:
    assert split_sentences(text) == [text]


def test_etc_at_the_end_of_a_sentence_splits_before_a_capital() -> None:
    assert split_sentences("Bring pens, paper, etc. The rest is here.") == [
        "Bring pens, paper, etc.",
        "The rest is here.",
    ]


def test_initials_do_not_split() -> None:
    assert split_sentences("J. R. R. Tolkien wrote it. Read it.") == ["J. R. R. Tolkien wrote it.", "Read it."]


def test_number_abbreviation_before_a_number_does_not_split() -> None:
    assert split_sentences("See No. 5 on the list. Done.") == ["See No. 5 on the list.", "Done."]


def test_no_as_an_answer_still_ends_a_sentence() -> None:
    assert split_sentences("No. I don't think so.") == ["No.", "I don't think so."]


def test_list_number_at_the_start_does_not_split() -> None:
    assert split_sentences("1. Open the box. 2. Close it.") == ["1. Open the box.", "2. Close it."]


def test_sentence_ending_with_a_number_splits() -> None:
    assert split_sentences("The answer is 1234. Nice.") == ["The answer is 1234.", "Nice."]


def test_newline_ends_a_sentence() -> None:
    assert split_sentences("Title\nFirst line\n\nSecond paragraph") == ["Title", "First line", "Second paragraph"]


def test_newline_ends_a_sentence_even_after_an_abbreviation() -> None:
    assert split_sentences("Ask Dr.\nSmith") == ["Ask Dr.", "Smith"]


def test_no_split_without_whitespace_after_the_period() -> None:
    assert split_sentences("Visit example.com today.") == ["Visit example.com today."]


def test_emoji_after_final_punctuation_belongs_to_that_sentence() -> None:
    assert split_sentences("Great job! 🎉 Next one.") == ["Great job! 🎉", "Next one."]


def test_several_emoji_and_sequences_stay_whole() -> None:
    text = "Well done! 👍🏽 👨‍👩‍👧 Keep going."
    assert split_sentences(text) == ["Well done! 👍🏽 👨‍👩‍👧", "Keep going."]


def test_emoji_only_text_is_one_sentence() -> None:
    assert split_sentences("🎉🎉 🤖") == ["🎉🎉 🤖"]


def test_cjk_full_stop_splits_without_a_space() -> None:
    assert split_sentences("你好。今天很好。") == ["你好。", "今天很好。"]


def test_think_block_is_never_split() -> None:
    assert split_sentences("<think>Hmm. Let me see.\nOk.</think>Hello there. Bye.") == [
        "<think>Hmm. Let me see.\nOk.</think>Hello there.",
        "Bye.",
    ]


def test_period_at_the_end_of_the_buffer_waits_for_the_next_character() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello.") == []
    assert splitter.feed(" W") == ["Hello."]


def test_abbreviation_at_the_end_of_the_buffer_is_not_emitted_early() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Ask Dr. ") == []
    assert splitter.feed("Smith. ") == []
    assert splitter.feed("Now") == ["Ask Dr. Smith."]


def test_flush_returns_the_remainder() -> None:
    splitter = SentenceSplitter()
    splitter.feed("One. Two")
    assert splitter.flush() == "Two"


def test_flush_returns_a_pending_final_sentence() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("All done! ") == []
    assert splitter.flush() == "All done!"


def test_flush_of_nothing_returns_none() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hi.\n") == ["Hi."]
    splitter.feed("  \t ")
    assert splitter.flush() is None


def test_splitter_is_reusable_after_flush() -> None:
    splitter = SentenceSplitter()
    splitter.feed("<think>unfinished")
    splitter.flush()
    assert splitter.feed("Fresh start. Yes") == ["Fresh start."]


def test_empty_text_has_no_sentences() -> None:
    assert split_sentences("") == []


CHUNKING_TEXTS = [
    *PROSE,
    "J. R. R. Tolkien wrote No. 5 at 9 a.m. on St. Mary road, e.g. in 1937. Then? 🎉 Done!! ok",
    'Say "hi." (Yes!) 3.5 vs. 4... no way… It costs $0.5. <think>a. b.</think>Answer. 你好。再见',
    "Emoji: 👨‍👩‍👧‍👦 family! 🏳️‍🌈 flag. Keycap 1️⃣ one.",
]


def _feed_in_chunks(text: str, sizes: list[int]) -> list[str]:
    splitter = SentenceSplitter()
    sentences: list[str] = []
    pos = 0
    for size in sizes:
        sentences += splitter.feed(text[pos : pos + size])
        pos += size
    sentences += splitter.feed(text[pos:])
    rest = splitter.flush()
    return sentences + ([rest] if rest else [])


@pytest.mark.parametrize("text", CHUNKING_TEXTS)
def test_one_character_at_a_time_gives_the_same_sentences(text: str) -> None:
    assert _feed_in_chunks(text, [1] * len(text)) == split_sentences(text)


@pytest.mark.parametrize("text", CHUNKING_TEXTS)
@pytest.mark.parametrize("seed", range(5))
def test_random_chunking_gives_the_same_sentences(text: str, seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randint(1, 7) for _ in range(len(text))]
    assert _feed_in_chunks(text, sizes) == split_sentences(text)


def test_sentences_reassemble_the_text_up_to_whitespace() -> None:
    text = "Hi there!  Dr. Who paid 3.5.\nNew line… ok? Done 🎉"
    assert " ".join(split_sentences(text)).split() == text.split()


# ----------------------------------------------------------------------------------------------------
# ends_with_question
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["How are you?", "Really?!", "Shall we play? 🎲", 'He asked "why?"  ', "¿Qué hora es?", "你好吗？", "Okay? 👍🏽\n"],
)
def test_question_endings_are_recognised(text: str) -> None:
    assert ends_with_question(text)


@pytest.mark.parametrize("text", ["Fine.", "Why? Because I said so.", "Wow!", "🎉", "", "What is 3?5"])
def test_other_endings_are_not_questions(text: str) -> None:
    assert not ends_with_question(text)


# ----------------------------------------------------------------------------------------------------
# storable_text: what every memory backend and the UTF-8 wire can hold
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "storable"),
    [
        ("hi\u0000there", "hithere"),  # PostgreSQL text refuses U+0000
        ("bell\x07 esc\x1b del\x7f", "bell esc del"),
        ("lone \ud800 high, lone \udfff low", "lone \ufffd high, lone \ufffd low"),
        ("a pair \ud83d\ude00 joins", "a pair 😀 joins"),
        ("tab\tnew\nline\r\n kept", "tab\tnew\nline\r\n kept"),
        ("Grüße 👋🏽 ok", "Grüße 👋🏽 ok"),
    ],
)
def test_storable_text(text: str, storable: str) -> None:
    assert storable_text(text) == storable
    storable_text(text).encode("utf-8")


def test_model_output_with_nul_and_surrogates_is_cleaned_to_storable_speech() -> None:
    assert clean_for_speech("Hello\x00 **there**.\ud800 Bye\x07!") == "Hello there.\ufffd Bye!"


def test_the_stream_and_the_whole_answer_agree_on_unstorable_characters() -> None:
    answer = "One\x00 two. Three\udcff four!\x00 Five\x1f six?"
    streamed = " ".join(c for c in (clean_for_speech(s) for s in split_sentences(answer)) if c)
    assert streamed == clean_for_speech(answer) == "One two. Three\ufffd four! Five six?"
