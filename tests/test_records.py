import copy
import json

import pytest

from opd_studio.records import Hint, Record, RecordError, parse_records, read_records, write_records
from tests.conftest import ADD, MULTI_TURN


def test_round_trip_keeps_every_field(tmp_path):
    records = [Record.from_dict(ADD), Record.from_dict(MULTI_TURN)]
    path = tmp_path / "records.jsonl"
    write_records(path, records)
    again = read_records(path)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in records]
    assert again[0].hints[0].char == 10 and again[0].error.char_end == 12


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    (json.dumps({"id": "x", "messages": []}), "line 2: 'messages' must be a non-empty list"),
    (json.dumps({"id": "x", "messages": [{"role": "robot", "content": "hi"}]}), "role 'robot' is not one of"),
    (json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}], "hints": [{"text": "h"}]}),
     "hints[0]: a hint needs either 'token' or both 'message' and 'char'"),
    (json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}],
                 "hints": [{"text": "h", "token": -1}]}), "'token' must be a non-negative integer"),
    (json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}], "colour": 1}), "unknown field"),
    (json.dumps({"id": "add-17-25", "messages": [{"role": "user", "content": "hi"}]}), "already used on line 1"),
    (json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}], "response_token_ids": ["a"]}),
     "'response_token_ids' must be a list of token ids"),
])
def test_bad_lines_name_the_line_and_the_problem(line, message):
    with pytest.raises(RecordError) as error:
        parse_records([json.dumps(ADD), line], source="upload.jsonl")
    assert "upload.jsonl, line 2" in str(error.value)
    assert message in str(error.value)


def test_template_hint_needs_placeholder():
    with pytest.raises(RecordError, match="containing {hint}"):
        Hint(text="h", token=3, placement="template", template="no placeholder")
    assert Hint(text="h", token=3, placement="template", template="[{hint}]").inserted_text == "[h]"


def test_failed_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "out.jsonl"
    write_records(path, [Record.from_dict(ADD)])
    before = path.read_text()

    class Boom:
        def to_json(self):
            raise RuntimeError("disk full")

    with pytest.raises(TypeError):
        write_records(path, [Record.from_dict(ADD), Boom()])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_copy_shares_nothing_with_the_original():
    # per-turn sampled ids and log-probabilities: one list (or null) per assistant message
    raw = {**MULTI_TURN, "meta": {"tags": ["a"]}, "hints": [{"text": " (check)", "message": 4, "char": 3}]}
    turns = sum(m["role"] == "assistant" for m in raw["messages"])
    raw["response_token_ids"] = [[1, 2]] + [None] * (turns - 1)
    raw["response_logprobs"] = [[-0.5, -0.25]] + [None] * (turns - 1)
    record = Record.from_dict(raw)
    twin = copy.deepcopy(record)
    assert twin == record and twin.to_json() == record.to_json()
    twin.response_token_ids[0].append(3)
    twin.response_logprobs[0][0] = 0.0
    twin.messages[0]["content"] = "changed"
    twin.hints[0].text = "changed"
    twin.meta["tags"].append("b")
    assert record.to_dict() == Record.from_dict(raw).to_dict()  # the original is as it was
    assert list(record.to_dict()) == ["id", "messages", "tools", "hints", "error", "reference", "meta",
                                      "response_token_ids", "response_logprobs"]
