"""engine/loader.py: one interface for loading playbooks; the disk cache never serves a stale or damaged entry."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from engine.analyse import analyse
from engine.audit import ImportItem, import_cases
from engine.compile import compile_playbook
from engine.errors import PlaybookError
from engine.evaluate import Evaluator
from engine.loader import CachedLoader, MemoryLoader, PlaybookLoader, default_cache_dir, default_loader
from engine.model import Playbook
from engine.store import Store
from engine.validate import load_playbook
from tests.conftest import FIXTURES, ROOT

COURSE = ROOT / "playbooks" / "course.yaml"


def _copy(tmp_path: Path, source: Path = FIXTURES / "pipeline.yaml", name: str = "pipeline.yaml") -> Path:
    target = tmp_path / name
    shutil.copyfile(source, target)
    return target


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pickle"))


@pytest.mark.parametrize("source", [FIXTURES / "pipeline.yaml", FIXTURES / "portfolio.yaml", COURSE])
def test_a_cached_load_gives_the_playbook_a_fresh_load_gives(tmp_path: Path, source: Path) -> None:
    path = _copy(tmp_path, source, source.name)
    loader = CachedLoader(tmp_path / "cache")
    first = loader.load(path)
    (entry,) = _entries(tmp_path / "cache")
    again = loader.load(path)
    assert again is not first  # read back from the entry, not kept in memory
    assert again == first == load_playbook(path)
    assert again.content_hash == first.content_hash and again.text == first.text
    assert [r.id for r in again.rules] == [r.id for r in first.rules] and again.order == first.order
    assert again.groups == first.groups
    assert _entries(tmp_path / "cache") == [entry]


def test_a_changed_file_is_never_served_from_the_cache(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    loader = CachedLoader(tmp_path / "cache")
    before = loader.load(path)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace('version: "1"', 'version: "1" # now with a problem\n  surprise: 1', 1), encoding="utf-8"
    )
    with pytest.raises(PlaybookError):  # the changed file is checked, not served from the cache
        loader.load(path)
    path.write_text(text.replace('version: "1"', 'version: "2"', 1), encoding="utf-8")
    assert loader.load(path).version == "2"
    path.write_text(text + "\n# a comment changes the text, so the content hash\n", encoding="utf-8")
    after = loader.load(path)
    assert after.content_hash != before.content_hash
    assert after.text.endswith("content hash\n")
    assert len(_entries(tmp_path / "cache")) == 3


def test_the_same_text_under_another_name_is_its_own_entry(tmp_path: Path) -> None:
    """Locations carry the file name: a copy elsewhere must not say the first file's name."""
    loader = CachedLoader(tmp_path / "cache")
    one, two = _copy(tmp_path, name="one.yaml"), _copy(tmp_path, name="two.yaml")
    assert loader.load(one).file == str(one)
    assert loader.load(two).file == str(two)
    assert loader.load(two).rules[0].location.file == str(two)


@pytest.mark.parametrize(
    "damage",
    [
        lambda content: content[: len(content) // 2],  # cut short
        lambda content: content[:-10] + bytes(10),  # overwritten
        lambda content: b"",
        lambda content: b"not a cache entry at all",
    ],
)
def test_a_damaged_entry_is_ignored_and_written_again(tmp_path: Path, damage: object) -> None:
    path = _copy(tmp_path)
    loader = CachedLoader(tmp_path / "cache")
    built = loader.load(path)
    (entry,) = _entries(tmp_path / "cache")
    good = entry.read_bytes()
    assert callable(damage)
    entry.write_bytes(damage(good))
    assert loader.load(path) == built
    assert entry.read_bytes() == good  # rewritten whole


def test_an_entry_that_is_not_this_texts_playbook_is_not_served(tmp_path: Path) -> None:
    """A well-formed entry holding another playbook (a copied file, say) is ignored."""
    path, other = _copy(tmp_path), _copy(tmp_path, FIXTURES / "portfolio.yaml", "portfolio.yaml")
    loader = CachedLoader(tmp_path / "cache")
    loader.load(path)
    entry = loader.entry(path.read_text(encoding="utf-8"), str(path))
    other_entry = loader.entry(other.read_text(encoding="utf-8"), str(other))
    loader.load(other)
    shutil.copyfile(other_entry, entry)
    assert loader.load(path).content_hash == load_playbook(path).content_hash


def test_a_cache_directory_others_may_write_is_not_used(tmp_path: Path) -> None:
    """An entry is a pickle: it is read only from a directory no one else can write."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    path = _copy(tmp_path)
    assert CachedLoader(directory).load(path) == load_playbook(path)
    assert _entries(directory) == []


def test_problems_are_not_cached(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("id: x\n", encoding="utf-8")
    loader = CachedLoader(tmp_path / "cache")
    for _ in range(2):
        with pytest.raises(PlaybookError):
            loader.load(path)
    assert _entries(tmp_path / "cache") == []
    with pytest.raises(PlaybookError) as unreadable:
        loader.load(tmp_path / "missing.yaml")
    assert unreadable.value.problems[0].code == "file_unreadable"


def test_the_memory_loader_builds_each_version_once(tmp_path: Path) -> None:
    built: list[str] = []

    class Counting(PlaybookLoader):
        def load_text(self, text: str, file: str = "<string>") -> Playbook:
            built.append(file)
            return super().load_text(text, file)

    path = _copy(tmp_path)
    loader = MemoryLoader(Counting())
    first = loader.load(path)
    assert loader.load(path) is first
    assert built == [str(path)]
    path.write_text(path.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert loader.load(path) is not first
    assert built == [str(path)] * 2


def test_stored_versions_are_loaded_by_content_hash(tmp_path: Path, db_url: str) -> None:
    """What ``why``, ``replay`` and the service read: the version the audit log keeps, by any loader."""
    playbook = load_playbook(FIXTURES / "pipeline.yaml")
    with compile_playbook(playbook) as compiled, Store(db_url) as store:
        items = [ImportItem("run:1", ("c-1", {}))]
        list(import_cases(store, Evaluator(compiled), items, dt.date(2026, 11, 27), source="test"))
        built = PlaybookLoader().stored(store, playbook.content_hash)
        assert built.file == f"<playbook {playbook.content_hash[:12]}>"
        assert built.content_hash == playbook.content_hash and [r.id for r in built.rules] == [
            r.id for r in playbook.rules
        ]
        memory, cached = MemoryLoader(), CachedLoader(tmp_path / "cache")
        assert memory.stored(store, playbook.content_hash) is memory.stored(store, playbook.content_hash)
        assert cached.stored(store, playbook.content_hash) == cached.stored(store, playbook.content_hash) == built
        assert len(_entries(tmp_path / "cache")) == 1
        with pytest.raises(LookupError):
            PlaybookLoader().stored(store, "0" * 64)


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLAYBOOK_CACHE", "off")
    assert default_cache_dir() is None and type(default_loader()) is PlaybookLoader
    monkeypatch.setenv("PLAYBOOK_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("PLAYBOOK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "playbook"


def test_check_reports_the_same_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The playbook and its analysis come from the cache the second time, and say the same."""
    monkeypatch.setenv("PLAYBOOK_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "warned.yaml"  # a playbook that checks but draws warnings: a rule nothing reaches
    text = (FIXTURES / "pipeline.yaml").read_text(encoding="utf-8")
    unused = "actions:\n  unused:\n    label: {zh: 无用, en: unused}\n    source: {guide: G-19, quote: 等待观察}\n"
    path.write_text(text.replace("actions:\n", unused, 1), encoding="utf-8")
    runs = [CliRunner().invoke(cli.main, ["check", "--format", "json", str(path)]) for _ in range(2)]
    assert runs[0].exit_code == runs[1].exit_code
    assert runs[0].stdout == runs[1].stdout
    assert len(_entries(tmp_path / "cache")) == 2  # the playbook, its analysis
    problems = json.loads(runs[1].stdout)["problems"]
    assert [p["code"] for p in problems] == ["action_unreachable"]
    assert problems == [p.to_json() for p in analyse(load_playbook(path))]


def test_a_derived_value_is_kept_per_text_and_computed_again_when_damaged(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    loader = CachedLoader(tmp_path / "cache")
    playbook = loader.load(path)
    calls: list[str] = []

    def rule_ids(built: Playbook) -> list[str]:
        calls.append(built.file)
        return [rule.id for rule in built.rules]

    first = loader.derived(playbook, "rule ids", rule_ids)
    assert loader.derived(loader.load(path), "rule ids", rule_ids) == first
    assert len(calls) == 1
    entry = loader.entry(playbook.text, playbook.file, "rule ids")
    entry.write_bytes(entry.read_bytes()[:-3])
    assert loader.derived(playbook, "rule ids", rule_ids) == first
    assert len(calls) == 2
    path.write_text(path.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert loader.derived(loader.load(path), "rule ids", rule_ids) == first
    assert len(calls) == 3  # another text: computed for it
