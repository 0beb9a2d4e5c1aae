"""skim_assets.lib.prompts and skim_assets.lib.parsing: teacher / student prompts and the output parser."""

from __future__ import annotations

import time

import pytest

from skim_assets.lib.parsing import (
    MAX_INPUT_CHARS,
    REJECT_REASONS,
    ParseResult,
    clean_line,
    parse_generated_queries,
    parse_rate,
)
from skim_assets.lib.prompts import (
    CATEGORIES_HEADER,
    DEFAULT_METADATA_WORDS,
    END_MARKER,
    MAX_KNOWN_QUERIES,
    PROMPT_STYLES,
    QUERIES_HEADER,
    cap_words,
    student_prompt,
    student_target,
    teacher_messages,
)


def parse(text: str, **kwargs) -> list[str]:
    return parse_generated_queries(text, **kwargs).queries


def nonzero(result: ParseResult) -> dict[str, int]:
    return {reason: n for reason, n in result.rejected.items() if n}


# ----------------------------------------------------------------------------------------------------------------
# prompts
# ----------------------------------------------------------------------------------------------------------------


def test_constants():
    assert PROMPT_STYLES == ("url-queries", "wiki-categories")
    assert QUERIES_HEADER == "Queries:"
    assert CATEGORIES_HEADER == "Categories:"
    assert END_MARKER == "<end>"


def test_cap_words_normalizes_and_truncates():
    assert cap_words("  a  b\n\tc d  ", 3) == "a b c"
    assert cap_words("a b", 10) == "a b"
    assert cap_words("a b", 0) == ""
    assert cap_words("", 5) == ""


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_teacher_messages_structure(style):
    messages = teacher_messages("doc-1", "some metadata text", ["known one"], style)
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
    assert messages[0]["role"] == "system"
    roles = [m["role"] for m in messages[1:]]
    # examples as alternating user / assistant turns, then the real input as the last user message
    assert len(roles) >= 3 and len(roles) % 2 == 1
    assert roles[:-1] == ["user", "assistant"] * (len(roles[:-1]) // 2)
    assert roles[-1] == "user"
    header = QUERIES_HEADER if style == "url-queries" else CATEGORIES_HEADER
    for answer in messages[2:-1:2]:
        assert answer["content"].startswith(header + "\n")
    assert header in messages[0]["content"]
    last = messages[-1]["content"]
    assert "doc-1" in last and "some metadata text" in last and "known one" in last
    # the real input does not appear in the examples
    assert all("some metadata text" not in m["content"] for m in messages[:-1])


def test_url_teacher_examples_obey_their_own_rules():
    messages = teacher_messages("x", "y", [], "url-queries")
    assert len(messages) >= 5  # system + at least two worked examples + input
    for question, answer in zip(messages[1:-1:2], messages[2:-1:2]):
        lines = question["content"].splitlines()
        title = lines[0].removeprefix("Document: ")
        known = [line[2:] for line in lines if line.startswith("- ")]
        result = parse_generated_queries(answer["content"], title=title, known_queries=known)
        assert len(result.queries) == len(answer["content"].splitlines()) - 1
        assert result.n_rejected == 0


def test_wiki_teacher_example_is_indented_hierarchy():
    messages = teacher_messages("x", "y", [], "wiki-categories")
    answer = messages[2]["content"]
    lines = answer.splitlines()[1:]
    assert any(line.startswith("  - ") for line in lines) and any(not line.startswith(" ") for line in lines)
    result = parse_generated_queries(answer, style="wiki-categories", max_queries=100)
    assert len(result.queries) == len(lines)
    assert result.queries[0] == lines[0]  # immediate categories come first


def test_teacher_metadata_capped_default_and_explicit():
    words = [f"w{i}" for i in range(2000)]
    metadata = " ".join(words)
    last = teacher_messages("t", metadata, [], "url-queries")[-1]["content"]
    cap = DEFAULT_METADATA_WORDS["url-queries"]
    assert f" w{cap - 1}\n" in last and f"w{cap} " not in last and f"w{cap}\n" not in last
    last = teacher_messages("t", metadata, [], "url-queries", max_metadata_words=7)[-1]["content"]
    assert "w6" in last and "w7" not in last
    wiki = teacher_messages("t", metadata, [], "wiki-categories")[-1]["content"]
    cap = DEFAULT_METADATA_WORDS["wiki-categories"]
    assert f" w{cap - 1}\n" in wiki and f"w{cap} " not in wiki and f"w{cap}\n" not in wiki


def test_teacher_known_queries_included_or_omitted():
    with_known = teacher_messages("t", "m", ["red shoes", "  blue   shoes "], "url-queries")[-1]["content"]
    assert "Known queries:" in with_known
    assert "- red shoes" in with_known and "- blue shoes" in with_known
    without = teacher_messages("t", "m", [], "url-queries")[-1]["content"]
    assert "Known queries" not in without
    many = teacher_messages("t", "m", [f"q{i}" for i in range(20)], "url-queries")[-1]["content"]
    assert f"q{MAX_KNOWN_QUERIES - 1}" in many and f"q{MAX_KNOWN_QUERIES}" not in many


def test_teacher_n_queries_in_instruction():
    messages = teacher_messages("t", "m", [], "url-queries", n_queries=7)
    assert "up to 7" in messages[0]["content"] and "up to 7" in messages[-1]["content"]
    with pytest.raises(ValueError):
        teacher_messages("t", "m", [], "url-queries", n_queries=0)


def test_teacher_messages_deterministic():
    a = teacher_messages("t", "m", ["k"], "url-queries")
    b = teacher_messages("t", "m", ["k"], "url-queries")
    assert a == b


def test_unknown_style_raises_listing_styles():
    for call in (
        lambda: teacher_messages("t", "m", [], "tweets"),
        lambda: student_prompt("t", "m", [], "tweets"),
        lambda: parse_generated_queries("a query", style="tweets"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert all(style in str(info.value) for style in PROMPT_STYLES)


def test_student_prompt_layout():
    prompt = student_prompt("B0-XY", "a  long\nmetadata text", ["red shoes", "blue shoes"], "url-queries")
    assert prompt == "Document: B0-XY\nKnown queries: red shoes | blue shoes\nText: a long metadata text\nQueries:\n"
    assert "Known" not in student_prompt("B0-XY", "m", [], "url-queries")
    wiki = student_prompt("Hallstatt", "village", [], "wiki-categories")
    assert wiki == "Title: Hallstatt\nText: village\nCategories:\n"


def test_student_prompt_caps_metadata():
    metadata = " ".join(f"w{i}" for i in range(500))
    prompt = student_prompt("t", metadata, [], "url-queries")
    assert "w199" in prompt and "w200" not in prompt
    short = student_prompt("t", metadata, [], "url-queries", max_metadata_words=3)
    assert short == "Document: t\nText: w0 w1 w2\nQueries:\n"


def test_student_target_format():
    assert student_target(["red shoes", "  blue\tshoes ", ""]) == f"red shoes\nblue shoes\n{END_MARKER}"
    assert student_target([]) == END_MARKER


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_student_round_trip(style):
    queries = ["waterproof hiking boots", "boots for wide feet", "leather care tips", "resoling service near lyon"]
    assert parse(student_target(queries), style=style) == queries
    # and as a completion appended to its prompt
    full = student_prompt("item-7", "text", ["walking shoes"], style) + student_target(queries) + "\nleftover"
    assert parse(full, style=style) == queries


# ----------------------------------------------------------------------------------------------------------------
# parsing rules, one at a time
# ----------------------------------------------------------------------------------------------------------------


def test_plain_lines():
    result = parse_generated_queries("cheap flights to rome\nrome hotel deals")
    assert result.queries == ["cheap flights to rome", "rome hotel deals"]
    assert set(result.rejected) == set(REJECT_REASONS) and result.n_rejected == 0


def test_text_before_header_dropped():
    text = "Sure! The document is about boots.\nboot stuff\nQueries:\nwaterproof boots\nboot laces"
    assert parse(text) == ["waterproof boots", "boot laces"]


def test_last_header_wins():
    text = "Queries:\ndraft one\nLet me revise.\nQueries:\nfinal one\nfinal two"
    assert parse(text) == ["final one", "final two"]


@pytest.mark.parametrize(
    "header", ["queries:", "QUERIES:", "**Queries:**", "## Queries", "### Queries:", "**Queries**:"])
def test_header_variants(header):
    assert parse(f"preamble line\n{header}\nfirst query\nsecond query") == ["first query", "second query"]


def test_header_with_inline_item():
    assert parse("Queries: first query\nsecond query") == ["first query", "second query"]


def test_preamble_colon_line_without_header():
    assert parse("Here are some search queries:\nfirst query\nsecond query") == ["first query", "second query"]


@pytest.mark.parametrize(
    "line",
    ["1. wool socks", "1) wool socks", "(1) wool socks", "Q1: wool socks", "q12. wool socks", "Query 3: wool socks",
     "10. wool socks", "2 - wool socks"],
)
def test_numbering_removed(line):
    assert parse(line) == ["wool socks"]


def test_numbers_inside_queries_kept():
    assert parse("1.5 hp pool pump\n2020 tax rules\n3d printer filament") == [
        "1.5 hp pool pump", "2020 tax rules", "3d printer filament"]


@pytest.mark.parametrize("line", ["- wool socks", "* wool socks", "• wool socks", "+ wool socks", "  -  wool socks",
                                  "- 1. wool socks"])
def test_bullets_removed(line):
    assert parse(line) == ["wool socks"]


@pytest.mark.parametrize("line", ["**wool socks**", "*wool socks*", "_wool socks_", "__wool socks__", "`wool socks`",
                                  "### wool socks", "- **wool socks**", "1. **wool** socks"])
def test_markdown_removed(line):
    assert parse(line) == ["wool socks"]


@pytest.mark.parametrize("line", ['"wool socks"', "'wool socks'", "“wool socks”", "‘wool socks’",
                                  '"wool socks";',
                                  "«wool socks»", '- "wool socks",'])
def test_surrounding_quotes_removed(line):
    assert parse(line) == ["wool socks"]


def test_inner_quotes_kept():
    assert parse('"the martian" book review\nmovies like "heat" and "ronin"') == [
        '"the martian" book review', 'movies like "heat" and "ronin"']


@pytest.mark.parametrize("line", ["wool socks;", "wool socks,", "wool socks.", "wool socks ;", "wool socks:"])
def test_trailing_punctuation_removed(line):
    assert parse(line) == ["wool socks"]


def test_question_mark_kept():
    assert parse("are wool socks warm?") == ["are wool socks warm?"]


def test_blank_lines_and_whitespace_normalized():
    assert parse("\n\n  wool    socks \n\n\t\nmerino\t\tblend  \n") == ["wool socks", "merino blend"]


def test_crlf():
    assert parse("Queries:\r\nwool socks\r\nmerino blend\r\n") == ["wool socks", "merino blend"]
    assert parse("wool socks\rmerino blend") == ["wool socks", "merino blend"]


def test_end_marker_stops():
    assert parse(f"wool socks\nmerino blend\n{END_MARKER}\nignored query\nQueries:\nalso ignored") == [
        "wool socks", "merino blend"]
    assert parse(f"wool socks {END_MARKER} tail") == ["wool socks"]


@pytest.mark.parametrize("token", ["<|im_end|>", "</s>", "<|endoftext|>", "<|eot_id|>", "<|im_start|>"])
def test_chat_end_tokens_stop(token):
    assert parse(f"wool socks\nmerino blend{token}\nuser: more please") == ["wool socks", "merino blend"]


def test_empty_lines_counted():
    result = parse_generated_queries("wool socks\n-\n1.\n**\n---\n```")
    assert result.queries == ["wool socks"]
    assert nonzero(result) == {"empty": 5}


def test_empty_and_none_input():
    assert parse_generated_queries("").queries == []
    assert parse_generated_queries(None).queries == []  # type: ignore[arg-type]
    assert parse_generated_queries("Queries:\n").queries == []


def test_too_short():
    result = parse_generated_queries("ab\nabc\nx", min_chars=3)
    assert result.queries == ["abc"] and nonzero(result) == {"too_short": 2}


def test_too_long_chars_and_words():
    long_chars = "a" * 121
    many_words = " ".join(["word"] * 17)
    result = parse_generated_queries(f"{long_chars}\n{many_words}\nfine query")
    assert result.queries == ["fine query"] and nonzero(result) == {"too_long": 2}
    assert parse(many_words, max_words=20) == [many_words]
    assert parse("abcdef", max_chars=5) == []


def test_duplicates_case_whitespace_punctuation_insensitive():
    text = "Wool Socks\nwool  socks\nwool-socks\nWOOL SOCKS!\nmerino blend"
    result = parse_generated_queries(text)
    assert result.queries == ["Wool Socks", "merino blend"]  # the first spelling is kept
    assert nonzero(result) == {"duplicate": 3}


def test_copies_title_exact():
    result = parse_generated_queries("Rome\nrome!\nrome city guide", title="Rome")
    # one-word title: only exact copies go; containment is not applied
    assert result.queries == ["rome city guide"] and nonzero(result) == {"copies_title": 2}


def test_copies_title_containment_multiword():
    title = "Forgeline Cast Iron Skillet"
    text = "forgeline cast iron skillet\ncast iron skillet\nbuy forgeline cast iron skillet online\nskillet care\niron"
    result = parse_generated_queries(text, title=title)
    assert result.queries == ["skillet care"]
    assert nonzero(result) == {"copies_title": 4}


def test_copies_title_word_boundaries_and_urls():
    # 'pro' is not a word of the title, so the containment test does not fire on a substring
    assert parse("pro tips", title="product launch") == ["pro tips"]
    url = "https://shop.example.com/red-running-shoes"
    assert parse("red running shoes\nshoes for flat feet", title=url) == ["shoes for flat feet"]


def test_copies_known_query_exact_and_overlap():
    known = ["Wool Socks for Men", "merino blend"]
    text = ("wool socks for men\nmen's wool socks for\nsocks for men wool\nwool socks for women\n"
            "Merino-Blend\nthick hiking socks")
    result = parse_generated_queries(text, known_queries=known)
    # 'men's wool socks for' -> tokens {men, s, wool, socks, for}: 4/5 = 80% in the known query -> dropped
    assert result.queries == ["wool socks for women", "thick hiking socks"]
    assert nonzero(result) == {"copies_known_query": 4}


def test_known_query_overlap_threshold():
    known = ["a b c d e"]
    assert parse("a b c d x", known_queries=known) == []  # 4/5 = 0.8
    assert parse("a b c x y", known_queries=known) == ["a b c x y"]  # 3/5 = 0.6


def test_over_limit():
    text = "\n".join(f"query number {i}" for i in range(15))
    result = parse_generated_queries(text, max_queries=10)
    assert result.queries == [f"query number {i}" for i in range(10)]
    assert nonzero(result) == {"over_limit": 5}


def test_rejections_do_not_use_up_the_limit():
    result = parse_generated_queries("dup query\ndup query\nx\nother query", max_queries=2)
    assert result.queries == ["dup query", "other query"]
    assert nonzero(result) == {"duplicate": 1, "too_short": 1}


def test_input_length_capped():
    text = "first query\n" + "x" * MAX_INPUT_CHARS + "\nlate query"
    assert parse(text) == ["first query"]


def test_hostile_input_is_fast_and_inert():
    start = time.perf_counter()
    for text in ["Queries" + " " * 19_000 + "x", "a" + ";" * 19_000 + "b", "__import__('os').system('echo hi')",
                 "(" * 19_000, "- " * 9_000, "*" * 19_000 + "a"]:
        parse_generated_queries(text)
    assert time.perf_counter() - start < 2.0
    assert parse("eval(os.system('echo hi'))") == ["eval(os.system('echo hi'))"]  # text, never evaluated


def test_clean_line_direct():
    assert clean_line('  - 3. **"Best wool socks"**;  ') == "Best wool socks"


def test_messy_realistic_output():
    text = (
        "Sure! Based only on the metadata, here are ten queries for https://shop.example.com/p/KT-2291:\r\n"
        "\r\n"
        "**Queries:**\r\n"
        "1. **pan that works on induction and campfire**\r\n"
        "2) \"pre-seasoned frying pan flaxseed oil\";\r\n"
        "(3) Oven safe skillet 260 C.\r\n"
        "- cast iron skillet\r\n"  # known query
        "* `heavy skillet with helper handle`\r\n"
        "Q6: oven-safe skillet 260c\r\n"  # not a duplicate: '260c' is one token
        "Q7: Oven Safe Skillet, 260 C\r\n"  # duplicate of (3)
        "• how to clean a seasoned iron pan\r\n"
        "8. ok\r\n"  # too short
        "9. cookware made in portugal\r\n"
        "10. kt 2291\r\n"  # copies the title
        "11. cast-iron skillets\r\n"  # 2 of its 3 tokens in the known query: not a copy, but over the limit
        "<|im_end|>\r\n"
        "I hope these help!"
    )
    result = parse_generated_queries(text, title="https://shop.example.com/p/KT-2291",
                                     known_queries=["cast iron skillet"], max_queries=7)
    assert result.queries == [
        "pan that works on induction and campfire",
        "pre-seasoned frying pan flaxseed oil",
        "Oven safe skillet 260 C",
        "heavy skillet with helper handle",
        "oven-safe skillet 260c",
        "how to clean a seasoned iron pan",
        "cookware made in portugal",
    ]
    assert nonzero(result) == {
        "copies_known_query": 1, "duplicate": 1, "too_short": 1, "copies_title": 1, "over_limit": 1}


# ----------------------------------------------------------------------------------------------------------------
# wiki-categories style
# ----------------------------------------------------------------------------------------------------------------


def test_wiki_indented_hierarchy_flattened():
    text = (
        "Categories:\n"
        "Villages in Upper Austria\n"
        "  - Populated places in Upper Austria\n"
        "  - Villages in Austria\n"
        "Salt mines in Austria\n"
        "  - Mines in Austria\n"
        "  - Villages in Austria\n"  # repeated parent: duplicate
    )
    result = parse_generated_queries(text, style="wiki-categories", max_queries=50)
    assert result.queries == [
        "Villages in Upper Austria", "Salt mines in Austria",
        "Populated places in Upper Austria", "Villages in Austria", "Mines in Austria"]
    assert nonzero(result) == {"duplicate": 1}


def test_wiki_dash_marks_parents_without_indentation():
    text = "Categories:\nRivers of Chile\n- Rivers of South America\nLakes of Chile\n- Bodies of water of Chile"
    assert parse(text, style="wiki-categories") == [
        "Rivers of Chile", "Lakes of Chile", "Rivers of South America", "Bodies of water of Chile"]


def test_wiki_bulleted_and_numbered_top_level_with_tabs():
    text = "Categories:\n1. Rivers of Chile\n\t- Rivers of South America\n2. Lakes of Chile\n\t* Lakes of South America"
    assert parse(text, style="wiki-categories") == [
        "Rivers of Chile", "Lakes of Chile", "Rivers of South America", "Lakes of South America"]
    flat = "- Rivers of Chile\n- Lakes of Chile"
    assert parse(flat, style="wiki-categories") == ["Rivers of Chile", "Lakes of Chile"]


def test_wiki_header_and_rules_apply():
    text = (
        "The article describes a river.\n## Categories\n**Biobío River**\n  - Category:Rivers of Chile\n"
        "Rivers of Chile\n  - x\n<end>\nNot a category"
    )
    result = parse_generated_queries(text, title="Biobío River", style="wiki-categories", max_queries=2,
                                     known_queries=["Geography of Chile"])
    assert result.queries == ["Rivers of Chile"]
    assert nonzero(result) == {"copies_title": 1, "duplicate": 1, "too_short": 1}


def test_wiki_max_queries_as_given():
    text = "Categories:\n" + "\n".join(f"Category number {i}\n  - Parent number {i}" for i in range(6))
    result = parse_generated_queries(text, style="wiki-categories", max_queries=8)
    assert result.queries == [f"Category number {i}" for i in range(6)] + ["Parent number 0", "Parent number 1"]
    assert nonzero(result) == {"over_limit": 4}


def test_wiki_other_header_is_a_preamble():
    # the wiki style looks for "Categories:"; a first line ending with ':' is still dropped as a preamble
    assert parse("Queries:\nRivers of Chile\nLakes of Chile", style="wiki-categories") == [
        "Rivers of Chile", "Lakes of Chile"]


# ----------------------------------------------------------------------------------------------------------------
# parse_rate
# ----------------------------------------------------------------------------------------------------------------


def test_parse_rate():
    results = [parse_generated_queries(t) for t in ["a query", "", "another query\nthird one", "<end>"]]
    assert parse_rate(results) == 0.5
    assert parse_rate([]) == 0.0
    assert parse_rate([ParseResult(queries=["q"])]) == 1.0
