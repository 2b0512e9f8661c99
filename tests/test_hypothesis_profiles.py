"""The hypothesis profiles: ``thorough`` raises every property test, and a pin that would not follow
the profile is caught at collection."""

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from sgtriton.testing.profiles import examples, pinned_below_profile


def item(test, name):
    return SimpleNamespace(obj=test, nodeid=name)


def decorated(max_examples):
    @settings(max_examples=max_examples)
    @given(st.integers())
    def test(x):
        pass

    return test


def unpinned():
    @given(st.integers())
    def test(x):
        pass

    return test


def test_a_pin_below_the_profile_is_reported_and_examples_never_is():
    floor = settings.default.max_examples
    items = [item(decorated(floor - 1), "low"), item(decorated(examples(floor - 1)), "via examples"),
             item(decorated(floor + 1), "high"), item(unpinned(), "unpinned"), item(len, "not hypothesis")]
    assert [name.split(" ")[0] for name in pinned_below_profile(items)] == ["low"]


def test_thorough_profile_raises_every_pin():
    early = unpinned()
    previous = settings.get_current_profile_name()
    settings.load_profile("thorough")
    try:
        thorough = settings.default.max_examples
        assert thorough > settings.get_profile("ci").max_examples
        assert examples(60) == thorough  # the pins tests use (60, 80, ...) are raised to the profile's count
        assert pinned_below_profile([item(decorated(examples(60)), "x"), item(unpinned(), "y")]) == []
        assert pinned_below_profile([item(decorated(60), "z")]) != []  # a bare pin would not follow
        # @given takes the profile loaded when it decorates: one decorated before thorough was loaded is caught.
        assert pinned_below_profile([item(early, "early")]) != []
    finally:
        settings.load_profile(previous)
