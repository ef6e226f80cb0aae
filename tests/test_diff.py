"""`playbook diff`: what changed between two versions of a playbook, by id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cli import main
from engine import load_playbook
from engine.diff import diff_playbooks
from tests.conftest import FIXTURES

PIPELINE = FIXTURES / "pipeline.yaml"


def _edited(tmp_path: Path, edit: Any) -> Path:
    data = yaml.safe_load(PIPELINE.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _review_edit(data: dict[str, Any]) -> None:
    data["playbook"]["version"] = "2"
    data["parameters"]["high_win_rate"]["value"] = 70
    funnel = data["decisions"]["funnel_layer"]
    funnel["label"]["en"] = "funnel position"
    funnel["rows"][0]["when"] = {"opportunity.weeks_to_close": {"gt": 12}}
    progress = data["decisions"]["progress"]["rows"]
    progress[1], progress[2] = progress[2], progress[1]  # under `first` the order is the meaning
    data["decisions"]["attention"]["rows"].insert(
        2, {"id": "hot", "label": {"zh": "热", "en": "hot"}, "when": {"tags": {"contains": "hot"}}, "then": "high"}
    )
    data["rules"][1]["source"]["quote"] = "积极跟进、机会难得"
    data["rules"].append(
        {
            "id": "chase",
            "label": {"zh": "追", "en": "chase"},
            "source": {"policy": "SP-1", "text": "追"},
            "when": {"attention": "high"},
            "then": {"recommend": [{"action": "call"}]},
        }
    )
    data["actions"]["call"] = {"label": {"zh": "打电话", "en": "call"}, "source": {"policy": "SP-1", "text": "追"}}


def test_every_change_is_named_by_its_id_with_what_it_was_and_is(tmp_path: Path) -> None:
    old, new = load_playbook(PIPELINE), load_playbook(_edited(tmp_path, _review_edit))
    changes = {(c.kind, c.id, c.change): c.fields for c in diff_playbooks(old, new)}
    assert changes == {
        ("playbook", "pipeline", "changed"): (("version", "1", "2"),),
        ("parameter", "high_win_rate", "changed"): (("value", 60, 70),),
        ("table", "funnel_layer", "changed"): (("label.en", "funnel layer", "funnel position"),),
        ("row", "funnel_layer.surface", "changed"): (("when.opportunity.weeks_to_close.gt", 10, 12),),
        ("row", "progress.one", "moved"): (),
        ("row", "progress.two", "moved"): (),
        ("row", "attention.hot", "added"): (),
        ("action", "call", "added"): (),
        ("rule", "push", "changed"): (("source.quote", "积极跟进", "积极跟进、机会难得"),),
        ("rule", "chase", "added"): (),
    }


def test_the_same_playbook_has_no_differences_and_exits_0_like_diff() -> None:
    result = CliRunner().invoke(main, ["diff", str(PIPELINE), str(PIPELINE)])
    assert (result.exit_code, result.output) == (0, "")


def test_a_removed_table_is_one_change_not_one_per_row(tmp_path: Path) -> None:
    def drop_tags(data: dict[str, Any]) -> None:
        del data["decisions"]["tags"]
        data["rules"][1]["when"] = {"attention": "high"}

    result = CliRunner().invoke(main, ["diff", str(PIPELINE), str(_edited(tmp_path, drop_tags))])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "- table tags (removed)",
        "~ rule push",
        '    when.all: [{"attention": "high"}, {"tags": {"contains": "hot"}}] → (none)',
        "    when.attention: (none) → high",
    ]


@pytest.mark.parametrize("fmt", ["text", "md", "json"])
def test_each_format_lists_the_changes_and_exits_1(tmp_path: Path, fmt: str) -> None:
    new = _edited(tmp_path, _review_edit)
    result = CliRunner().invoke(main, ["diff", str(PIPELINE), str(new), "--format", fmt])
    assert result.exit_code == 1, result.output
    if fmt == "json":
        document = json.loads(result.output)
        assert document["old"] == str(PIPELINE) and len(document["changes"]) == 10
        assert {
            "kind": "parameter",
            "id": "high_win_rate",
            "change": "changed",
            "fields": [{"field": "value", "old": 60, "new": 70}],
        } in document["changes"]
    elif fmt == "md":
        assert "| changed | parameter | `high_win_rate` | value | 60 | 70 |" in result.output.splitlines()
    else:
        assert "~ parameter high_win_rate\n    value: 60 → 70\n" in result.output
        assert "> row progress.one (moved)" in result.output


def test_an_invalid_playbook_is_trouble_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(PIPELINE.read_text("utf-8").replace("rules:", "rulez:", 1), "utf-8")
    result = CliRunner().invoke(main, ["diff", str(PIPELINE), str(broken)])
    assert result.exit_code == 2 and "unknown key 'rulez'" in result.output
