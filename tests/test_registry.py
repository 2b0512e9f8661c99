"""The block registry: entry points, decorator registration, duplicates, missing parts, broken plugins."""

import warnings
from importlib import metadata

import pytest

from sgtriton import registry
from sgtriton.blocks.base import BlockType
from sgtriton.blocks.moddemod import ModDemodBlock


def test_builtins_come_from_entry_points_of_the_sgtriton_distribution():
    names = {ep.name for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert {"adain", "revised", "moddemod"} <= names
    entries = {e.name: e for e in registry.available_blocks()}
    for name in ("adain", "revised", "moddemod"):
        assert entries[name].source == "sgtriton"
        assert "reference" in entries[name].implementations
        assert entries[name].description


def test_register_decorator_and_duplicate_name():
    class Variant(ModDemodBlock):
        name = "test-variant"
        description = "a moddemod variant for the registry test"

    try:
        registry.register_block(Variant)
        assert registry.get_block_class("test-variant") is Variant
        with pytest.raises(registry.BlockRegistrationError, match="'test-variant'.*already registered"):
            registry.register_block(Variant)
    finally:
        registry.unregister_block("test-variant")


def test_builtin_name_cannot_be_taken():
    class Impostor(ModDemodBlock):
        description = "tries to take the moddemod name"

    with pytest.raises(registry.BlockRegistrationError, match="'moddemod'.*already registered"):
        registry.register_block(Impostor)


@pytest.mark.parametrize("missing", ["description", "make_torgb"])
def test_missing_part_is_named(missing):
    attrs = {"name": "incomplete", "description": "x", "make_layer": lambda self, n: None,
             "make_torgb": lambda self, n: None}
    del attrs[missing]
    cls = type("Incomplete", (BlockType,), attrs)
    with pytest.raises(registry.BlockRegistrationError, match=missing):
        registry.register_block(cls)
    assert "incomplete" not in {e.name for e in registry.available_blocks()}


def test_not_a_block_type_is_refused():
    with pytest.raises(registry.BlockRegistrationError, match="subclass of"):
        registry.validate_block_class(object, "thing")


def test_unknown_block_lists_registered_names():
    with pytest.raises(ValueError, match="block='nope'.*moddemod"):
        registry.get_block_class("nope")


def test_broken_plugin_warns_and_the_rest_still_work(monkeypatch):
    class FakeDist:
        name = "broken-plugin-dist"

    class BrokenEntryPoint:
        name = "broken"
        value = "broken_plugin_module:Block"
        dist = FakeDist()

        def load(self):
            raise ImportError("No module named 'broken_plugin_module'")

    real = metadata.entry_points

    def fake_entry_points(group):
        return [*real(group=group), BrokenEntryPoint()]

    monkeypatch.setattr(registry.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_blocks", {})
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [e.name for e in registry.available_blocks()]
    assert {"adain", "moddemod", "revised"} <= set(names) and "broken" not in names
    messages = [str(w.message) for w in caught]
    assert any("'broken'" in m and "broken-plugin-dist" in m and "ImportError" in m for m in messages)


def test_block_kwargs_are_validated():
    with pytest.raises(TypeError, match="block_kwargs: unexpected keys \\['bank_size'\\]"):
        registry.create_block("moddemod", {"bank_size": 4})
