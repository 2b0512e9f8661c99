"""Launch keys -> shape buckets: batch and spatial sizes to powers of two, channels/dtype/flags exact."""

from types import SimpleNamespace

from sgtriton.autotune.buckets import bucket_dtype, bucket_key, bucket_label, next_power_of_two

SPEC = SimpleNamespace(name="k", extra={})


def key(batch, spatial=48 * 48, cin=3, dtype="fp16", up=True):
    return (("dtype", dtype), ("batch", batch), ("spatial", spatial), ("cin", cin), ("up", up))


def test_named_key_rounds_batch_and_spatial_keeps_channels_dtype_and_flags():
    bucket = bucket_key(SPEC, key(5))
    assert bucket == (("dtype", "fp16"), ("batch", 8), ("spatial", 4096), ("cin", 3), ("up", True))
    assert bucket_label(bucket) == "dtype=fp16,batch=8,spatial=4096,cin=3,up=1"


def test_one_bucket_covers_a_power_of_two_range_and_no_more():
    assert len({bucket_key(SPEC, key(b)) for b in (5, 6, 7, 8)}) == 1
    assert bucket_key(SPEC, key(8)) != bucket_key(SPEC, key(9))
    assert bucket_key(SPEC, key(1)) != bucket_key(SPEC, key(2))
    assert bucket_key(SPEC, key(4, cin=3)) != bucket_key(SPEC, key(4, cin=4))  # channels stay exact
    assert bucket_key(SPEC, key(4, dtype="fp32")) != bucket_key(SPEC, key(4))


def test_positional_key_rounds_integers_but_not_bools():
    assert bucket_key(SPEC, ("fp16", True, 3000)) == ("fp16", True, 4096)
    assert bucket_key(SPEC, ("fp32", False, 1)) == ("fp32", False, 1)
    assert bucket_label(bucket_key(SPEC, ("fp16", True, 3000))) == "fp16,1,4096"
    assert bucket_key(SPEC, 7) == (8,)


def test_a_kernel_can_bring_its_own_bucketing():
    spec = SimpleNamespace(name="k", extra={"bucket_key": lambda k: ("all",)})
    assert bucket_key(spec, key(3)) == bucket_key(spec, key(300)) == ("all",)


def test_bucket_dtype_and_powers_of_two():
    assert bucket_dtype(bucket_key(SPEC, key(2))) == "fp16"
    assert bucket_dtype(("fp32", 4)) == "fp32"
    assert bucket_dtype((("batch", 4),)) is None
    assert [next_power_of_two(n) for n in (0, 1, 2, 3, 1024, 1025)] == [1, 1, 2, 4, 1024, 2048]
