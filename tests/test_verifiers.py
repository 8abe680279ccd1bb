"""Verifiers on hand-written trajectories: exact error spans, hint placement, no false alarms, and the reasons
given when nothing is found. Also the bundled demo tasks."""

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest

from opd_studio.hints import HINT_MODELS, ArithmeticVerifier, ReferenceVerifier, ToolCallVerifier
from opd_studio.hints.inline import inline_hint
from opd_studio.records import Record, read_records

DEMO_TASKS = Path(__file__).resolve().parents[1] / "assets" / "demo_tasks.jsonl"


def answer(*contents, reference=None, tools=None) -> Record:
    """A user question followed by one assistant message per content (a dict is used as the message itself)."""
    messages = [{"role": "user", "content": "Question?"}]
    for content in contents:
        messages.append(content if isinstance(content, dict) else {"role": "assistant", "content": content})
    return Record("t", messages, tools=tools, reference=reference)


def spliced(record: Record, proposal) -> str:
    content = record.messages[proposal.message]["content"]
    return content[: proposal.hint_char] + proposal.text + content[proposal.hint_char:]


def flagged(record: Record, proposal) -> str:
    return record.messages[proposal.message]["content"][proposal.char_start: proposal.char_end]


# ------------------------------------------------------------------------------------------------------------------
# Placement


def test_inline_hint_goes_before_the_space_and_brings_its_own_when_there_is_none():
    assert inline_hint("17 + 25 = 32.", 10, "x") == (9, " (Hint: x)")
    assert inline_hint("17 + 25 =32.", 9, "x") == (9, " (Hint: x) ")
    assert inline_hint("Lyon.", 0, "x") == (0, "(Hint: x) ")
    assert inline_hint("Answer:\n32", 8, "x") == (8, "(Hint: x) ")


def test_registry_names_match_and_build_hint_models():
    for name, factory in HINT_MODELS.items():
        model = factory()
        assert model.name == name and callable(model.propose)


# ------------------------------------------------------------------------------------------------------------------
# Arithmetic


def test_wrong_sum_is_flagged_at_its_exact_characters():
    record = answer("17 + 25 = 32.")
    result = ArithmeticVerifier().propose(record)
    [proposal] = result.proposals
    assert (proposal.message, proposal.char_start, proposal.char_end) == (1, 10, 12)
    assert proposal.hint_char == 9
    assert spliced(record, proposal) == "17 + 25 = (Hint: 17 + 25 = 42.) 32."
    assert proposal.confidence == 1.0 and proposal.source == "verifier:arithmetic"
    assert proposal.to_error().char_start == 10 and proposal.to_hint().status == "proposed"


@pytest.mark.parametrize("content, note", [
    ("17 + 25 = 32.", "7 + 5 = 12, so carry the 1 into the tens place."),
    ("478 + 356 = 724", "8 + 6 = 14, so carry the 1 into the tens place."),
    ("356 + 478 = 734", "5 + 7 + 1 = 13, so carry the 1 into the hundreds place."),
    ("52 - 17 = 45", "the ones place needs a borrow, so take 1 from the tens."),
    ("2 + 3 × 4 = 20", "multiply and divide before you add and subtract."),
    ("23 × 14 = 262", "recompute 23 × 14 carefully."),
])
def test_nudge_points_at_the_slip_without_the_answer(content, note):
    [proposal] = ArithmeticVerifier(style="nudge").propose(answer(content)).proposals
    assert proposal.text == f" (Hint: {note})"


@pytest.mark.parametrize("content", [
    "2 + 3 × 4 = 14", "(2 + 3) × 4 = 20", "12 + 5 = 17 + 3 = 20", "2 + 3 × 4 = 2 + 12 = 14",
    "1,234 + 5,678 = 6,912", "10 / 3 = 3.33", "10 / 3 ≈ 3.3", "0.1 + 0.2 = 0.3", "-5 + 3 = -2", "3 × -2 = -6",
    "So (12 + 5 = 17) apples.", "6 x 7 = 42", "8 ÷ 2 = 4", "9 − 4 = 5", "17 plus 25 equals 42", "48+37=85",
    "First 17 + 25 = 42, then 42 - 2 = 40.",
])
def test_correct_arithmetic_is_not_flagged(content):
    result = ArithmeticVerifier().propose(answer(content))
    assert result.proposals == []
    assert re.fullmatch(r"all \d+ arithmetic statements are correct", result.reason)


def test_running_chain_flags_the_wrong_step_once():
    record = answer("12 + 5 = 18 + 3 = 21")
    [proposal] = ArithmeticVerifier().propose(record).proposals
    assert (proposal.char_start, proposal.char_end) == (9, 11) and flagged(record, proposal) == "18"
    assert proposal.text == " (Hint: 12 + 5 = 17.)"


def test_later_step_of_a_chain_is_checked_against_the_step_before():
    record = answer("2 + 3 = 5 + 4 = 10")
    [proposal] = ArithmeticVerifier().propose(record).proposals
    assert (proposal.char_start, proposal.char_end) == (16, 18)
    assert proposal.text == " (Hint: 5 + 4 = 9.)"


def test_every_wrong_statement_in_every_message_gets_a_proposal():
    record = answer("48 + 37 = 114. Then 114 - 4 = 100.", "And 3 × -2 = -5 too.")
    result = ArithmeticVerifier().propose(record)
    assert [(p.message, flagged(record, p)) for p in result.proposals] == [(1, "114"), (1, "100"), (2, "-5")]
    assert result.reason == "3 of 3 arithmetic statements are wrong"


def test_commas_and_decimals_in_wrong_results():
    record = answer("1,234 + 1,000 = 2,334", "2.5 + 2.5 = 5.5", "10 / 3 = 3.4")
    commas, exact, rounded = ArithmeticVerifier().propose(record).proposals
    assert flagged(record, commas) == "2,334" and commas.text == " (Hint: 1,234 + 1,000 = 2,234.)"
    assert flagged(record, exact) == "5.5" and exact.confidence == 1.0 and exact.text == " (Hint: 2.5 + 2.5 = 5.)"
    assert flagged(record, rounded) == "3.4" and rounded.confidence < 1.0


@pytest.mark.parametrize("content, reason", [
    ("Hello! How can I help?", "no arithmetic found"),
    ("Solve 2x + 3 = 7 for x.", "no arithmetic found"),
    ("It grew 3 + 4 = 7% this year.", "no arithmetic found"),
    ("Here 5 / 0 = 0 is undefined.", "no arithmetic found"),
    ("3 + 4 = 7", "all 1 arithmetic statements are correct"),
])
def test_arithmetic_says_why_it_found_nothing(content, reason):
    assert ArithmeticVerifier().propose(answer(content)).reason == reason


def test_arithmetic_rejects_an_unknown_style():
    with pytest.raises(ValueError, match="style 'loud'"):
        ArithmeticVerifier(style="loud")


# ------------------------------------------------------------------------------------------------------------------
# Tool calls

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "required": ["city"], "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer"}, "hourly": {"type": "boolean"}}}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": {
        "type": "object", "required": ["query"], "properties": {
            "query": {"type": "string"}, "sites": {"type": "array", "items": {"type": "string"}}}}}},
]
SIGNATURES = "get_weather(city: string, unit?: 'c'|'f', days?: integer, hourly?: boolean), search(query: string, " \
             "sites?: array)"


def structured(*calls, content=None) -> dict:
    return {"role": "assistant", "content": content, "tool_calls": [
        {"id": f"call{n}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for n, (name, arguments) in enumerate(calls)]}


def check_tools(*contents):
    record = answer(*contents, tools=TOOLS)
    return record, ToolCallVerifier().propose(record)


def test_valid_calls_in_every_form_pass():
    _, result = check_tools(
        '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c", "days": 3}}]</tool_call>',
        'Let me look. {"name": "search", "arguments": {"query": "news", "sites": ["bbc.com"]}}',
        '<tool_call>\n{"function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\", \\"days\\": 2.0}"}}'
        '\n</tool_call>',
        structured(("get_weather", '{"city": "Rome", "hourly": false}'), ("search", {"query": "pizza"})),
    )
    assert result.proposals == [] and result.reason == "all 5 tool calls valid"


def test_unknown_tool_is_flagged_at_its_name_and_the_hint_lists_the_tools():
    content = '<tool_call>[{"name": "get_wether", "arguments": {"city": "Paris"}}]</tool_call>'
    record, result = check_tools(content)
    [proposal] = result.proposals
    assert (proposal.char_start, proposal.char_end) == (22, 32) and flagged(record, proposal) == "get_wether"
    assert proposal.hint_char == 0
    assert proposal.text == f"(Hint: there is no tool 'get_wether'. Available tools: {SIGNATURES}.) "
    assert result.reason == "1 of 1 tool calls are invalid"


def test_unknown_argument_is_flagged_at_its_key():
    content = 'Sure! {"name": "get_weather", "arguments": {"location": "Paris"}}'
    record, result = check_tools(content)
    [proposal] = result.proposals
    assert (proposal.char_start, proposal.char_end) == (45, 53) and flagged(record, proposal) == "location"
    assert proposal.hint_char == 5 and spliced(record, proposal).startswith("Sure! (Hint: get_weather has no "
                                                                            "argument 'location'; get_weather needs "
                                                                            "'city'. Use get_weather(")


def test_missing_required_argument_spans_the_arguments_object():
    content = '<tool_call>{"name": "search", "arguments": {"sites": ["a.org"]}}</tool_call>'
    record, result = check_tools(content)
    [proposal] = result.proposals
    assert flagged(record, proposal) == '{"sites": ["a.org"]}'
    assert "search needs 'query'. Use search(query: string, sites?: array)." in proposal.text


@pytest.mark.parametrize("arguments, value, message", [
    ('{"city": "Paris", "unit": "kelvin"}', "kelvin", "'unit' must be 'c'|'f', not \"kelvin\""),
    ('{"city": "Paris", "days": "3"}', "3", "'days' must be integer, not \"3\""),
    ('{"city": "Paris", "days": 2.5}', "2.5", "'days' must be integer, not 2.5"),
    ('{"city": "Paris", "hourly": 1}', "1", "'hourly' must be boolean, not 1"),
    ('{"city": 75001}', "75001", "'city' must be string, not 75001"),
])
def test_wrongly_typed_argument_is_flagged_at_its_value(arguments, value, message):
    content = f'<tool_call>{{"name": "get_weather", "arguments": {arguments}}}</tool_call>'
    record, result = check_tools(content)
    [proposal] = result.proposals
    assert flagged(record, proposal) == value
    assert message in proposal.text


def test_array_items_are_type_checked():
    record, result = check_tools('{"name": "search", "arguments": {"query": "x", "sites": ["a", 2]}}')
    [proposal] = result.proposals
    assert flagged(record, proposal) == '["a", 2]'


def test_malformed_json_spans_the_whole_call():
    content = 'Calling now.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"</tool_call>'
    record, result = check_tools(content)
    [proposal] = result.proposals
    assert (proposal.char_start, proposal.char_end) == (13, len(content))
    assert proposal.hint_char == 13 and proposal.text.startswith("(Hint: the tool call is not valid JSON")
    assert f"Available tools: {SIGNATURES}" in proposal.text


def test_truncated_bare_call_is_malformed_but_other_json_is_not_a_call():
    cut = 'Here:\n{\n  "name": "search",\n  "arguments": {\n    "query": '
    record, result = check_tools('Data: {"name": "Ada", "age": 36}.', cut)
    [proposal] = result.proposals
    assert proposal.message == 2 and (proposal.char_start, proposal.char_end) == (6, len(cut))


def test_each_call_of_a_list_is_checked_on_its_own_text():
    content = ('<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
               '{"name": "search", "arguments": {}}]</tool_call>')
    record, result = check_tools(content)
    [proposal] = result.proposals
    assert flagged(record, proposal) == "{}" and content[proposal.hint_char:].startswith(' {"name": "search"')
    assert result.reason == "1 of 2 tool calls are invalid"


def test_structured_calls_span_the_whole_turn_and_name_their_index():
    record, result = check_tools(structured(("get_weather", '{"city": "Paris"}'), ("search", '{"q": "x"}'),
                                            ("search", "{bad json"), content="Checking."))
    unknown, malformed = result.proposals
    assert (unknown.char_start, unknown.char_end, unknown.hint_char) == (0, len("Checking."), 0)
    assert unknown.rationale.startswith("tool_calls[1]: search has no argument 'q'")
    assert malformed.rationale.startswith("tool_calls[2]: the arguments are not valid JSON")
    _, result = check_tools(structured(("lookup", "{}")))
    assert (result.proposals[0].char_start, result.proposals[0].char_end) == (0, 1)


def test_tools_verifier_says_why_it_found_nothing():
    assert ToolCallVerifier().propose(answer('{"name": "x", "arguments": {}}')).reason == "record has no tools schema"
    assert check_tools("It is sunny.")[1].reason == "no tool calls found in the assistant messages"


# ------------------------------------------------------------------------------------------------------------------
# Reference


def check_reference(content, reference, style="reveal"):
    record = answer(content, reference=reference)
    return record, ReferenceVerifier(style=style).propose(record)


def test_wrong_fact_is_flagged_at_the_answer_words():
    record, result = check_reference("The capital of France is Lyon.", "Paris")
    [proposal] = result.proposals
    assert (proposal.char_start, proposal.char_end) == (25, 29)
    assert spliced(record, proposal) == "The capital of France is (Hint: the answer is Paris.) Lyon."
    assert result.reason == "answer differs from the reference"


@pytest.mark.parametrize("content, reference, given", [
    ("The largest ocean is the Atlantic Ocean, which is huge.", "Pacific", "the Atlantic Ocean"),
    ("The answer is: Sydney", "Canberra", "Sydney"),
    ("Lyon", "Paris", "Lyon"),
    ("50 - 25 = 35", "25", "35"),
    ("The Eiffel Tower was completed in 1887.", "1889", "1887"),
    ("The Titanic sank on April 1, 1997, at 22:30.", "1912", "1997"),
    ("The answer is 41. Check: 41 - 25 = 16", "42", "41"),
    ("I am not sure.", "42", "I am not sure"),
])
def test_reference_divergence_spans_the_given_answer(content, reference, given):
    record, result = check_reference(content, reference)
    [proposal] = result.proposals
    assert flagged(record, proposal) == given


@pytest.mark.parametrize("content, reference", [
    ("The capital of France is Paris.", "Paris"), ("PARIS!", "paris"), ("Sao Paulo, of course.", "São Paulo"),
    ("It is 1000.", "1,000"), ("There are eight planets.", "8"), ("3.50", "3.5"),
    ("It is the Pacific ocean.", "The Pacific Ocean"), ("17 + 25 = 42. So the answer is 42.", "42"),
    ("50 - 25 = 25.", "25"),
])
def test_matching_answers_are_not_flagged(content, reference):
    _, result = check_reference(content, reference)
    assert result.proposals == [] and result.reason == "answer matches the reference"


def test_only_the_final_answer_is_judged():
    record = answer("I think it is Lyon.", "Sorry, it is Paris.", reference="Paris")
    assert ReferenceVerifier().propose(record).proposals == []
    record = answer("It is Paris.", "No wait, the answer is Lyon.", reference="Paris")
    [proposal] = ReferenceVerifier().propose(record).proposals
    assert proposal.message == 2 and flagged(record, proposal) == "Lyon"


def test_reference_nudge_does_not_reveal_the_answer():
    _, result = check_reference("The capital of France is Lyon.", "Paris", style="nudge")
    assert result.proposals[0].text == " (Hint: Lyon is not the answer; think again.)"


def test_reference_verifier_says_why_it_found_nothing():
    assert ReferenceVerifier().propose(answer("Paris.")).reason == "record has no reference"
    no_answer = Record("t", [{"role": "user", "content": "Capital of France?"}], reference="Paris")
    assert ReferenceVerifier().propose(no_answer).reason == "record has no assistant answer"


# ------------------------------------------------------------------------------------------------------------------
# Demo tasks


def test_demo_tasks_parse_and_have_the_promised_families_and_splits():
    tasks = read_records(DEMO_TASKS)
    families = {"arithmetic": [], "tools": [], "qa": []}
    for task in tasks:
        families[task.meta["family"]].append(task)
        assert task.messages[-1]["role"] == "user"
        assert re.fullmatch(r"(arith|tools|qa)-\d{3}", task.id)
    for family, members in families.items():
        assert len(members) >= 15, family
        heldout = sum(t.meta["split"] == "heldout" for t in members)
        assert {t.meta["split"] for t in members} == {"curation", "heldout"}
        assert 0.25 <= heldout / len(members) <= 0.4, family
    assert "What is 17 + 25?" in [t.messages[0]["content"] for t in families["arithmetic"]]


def test_demo_arithmetic_references_are_right():
    for task in read_records(DEMO_TASKS):
        if task.meta["family"] != "arithmetic":
            continue
        a, op, b = re.fullmatch(r"What is (\d+) ([+\-×]) (\d+)\?", task.messages[-1]["content"]).groups()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]
        assert Fraction(task.reference) == value, task.id


def test_demo_tool_tasks_have_a_schema_and_a_valid_example_call():
    for task in read_records(DEMO_TASKS):
        if task.meta["family"] == "tools":
            assert 2 <= len(task.tools) <= 3 and task.reference is None
            names = {t["function"]["name"] for t in task.tools}
            assert all(name in task.messages[0]["content"] for name in names)  # the template drops `tools`
            assert ToolCallVerifier().propose(task).reason == "all 1 tool calls valid", task.id
            assert json.loads(task.messages[2]["content"])["name"] in names
        elif task.meta["family"] == "qa":
            assert task.reference and task.tools is None
