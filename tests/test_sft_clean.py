"""sft-clean on one shard: PII scrubbed in every turn and inside tool-call arguments."""

from __future__ import annotations

import json

import pyarrow as pa

from stages.sft_clean import SftClean, SftCleanConfig
from stages.sft_read import MESSAGE


def test_every_turn_and_tool_argument_scrubbed():
    convs = [[
        {"role": "system", "content": "Support desk. Escalations: boss@example.com"},
        {"role": "user", "content": "Mail me at jane.doe@example.org please"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": None, "type": "function", "function": {
            "name": "send", "arguments": json.dumps({"to": ["jane.doe@example.org"], "n": 3})}}]},
        {"role": "tool", "content": "sent to jane.doe@example.org"},
        {"role": "assistant", "content": "Done. Card 4111 1111 1111 1111 was not charged."},
    ]]
    table = pa.table({"id": ["a"], "text": ["Mail me at jane.doe@example.org please"],
                      "messages": pa.array(convs, pa.list_(MESSAGE))})
    st = SftClean(SftCleanConfig())
    res = st.process(table)
    assert res.rejected.num_rows == 0
    out = res.kept.column("messages").to_pylist()[0]
    blob = json.dumps(out)
    assert "example.org" not in blob and "example.com" not in blob and "4111" not in blob
    assert out[1]["content"] == "Mail me at <EMAIL> please"
    assert json.loads(out[2]["tool_calls"][0]["function"]["arguments"]) == {"to": ["<EMAIL>"], "n": 3}
    assert res.kept.column("pii_total").to_pylist() == [5]  # 4 e-mails (one in the arguments) + 1 card
    assert res.kept.column("text").to_pylist() == ["Mail me at <EMAIL> please"]
