import threading
import time

import pytest

from vbg.ringbuffer import Closed, Latest, RingBuffer


def test_drop_oldest_is_bounded_keeps_newest_and_counts_drops():
    ring = RingBuffer(3, "drop_oldest")
    for item in range(7):
        assert ring.put(item)
    assert len(ring) == 3
    assert ring.dropped == 4
    assert ring.put_count == 7
    assert [ring.get(), ring.get(), ring.get()] == [4, 5, 6]


def test_drop_oldest_never_blocks_the_producer():
    ring = RingBuffer(1, "drop_oldest")
    started = time.perf_counter()
    for item in range(1000):
        ring.put(item)
    assert time.perf_counter() - started < 1.0
    assert ring.get() == 999


def test_block_policy_waits_for_room_and_loses_nothing():
    ring = RingBuffer(2, "block")
    received = []

    def consume():
        while True:
            try:
                received.append(ring.get())
            except Closed:
                return
            time.sleep(0.001)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for item in range(50):
        ring.put(item)
        assert len(ring) <= 2
    ring.close()
    consumer.join(5)
    assert received == list(range(50))
    assert ring.dropped == 0


def test_blocked_producer_is_released_by_close():
    ring = RingBuffer(1, "block")
    ring.put("a")
    result = []
    producer = threading.Thread(target=lambda: result.append(ring.put("b")))
    producer.start()
    time.sleep(0.05)
    assert producer.is_alive()  # waiting for room
    ring.close()
    producer.join(2)
    assert result == [False]


def test_close_drains_then_reports_closed():
    ring = RingBuffer(4)
    ring.put(1)
    ring.put(2)
    ring.close()
    assert not ring.put(3)
    assert ring.get() == 1 and ring.get() == 2
    with pytest.raises(Closed):
        ring.get()


def test_get_times_out_with_none():
    assert RingBuffer(1).get(timeout=0.01) is None


def test_latest_keeps_only_the_newest_value():
    slot = Latest()
    assert slot.wait(timeout=0.01) is None
    slot.publish("old")
    slot.publish("new")
    assert slot.wait() == "new"
    assert slot.version == 2


def test_latest_waits_for_a_newer_value():
    slot = Latest()
    slot.publish("first")
    assert slot.wait_newer(1, timeout=0.01) == ("first", 1)  # nothing newer: times out with the old pair
    threading.Timer(0.05, slot.publish, ["second"]).start()
    assert slot.wait_newer(1, timeout=5) == ("second", 2)


def test_closing_latest_releases_a_waiter():
    slot = Latest()
    result = []
    waiter = threading.Thread(target=lambda: result.append(slot.wait()))
    waiter.start()
    time.sleep(0.05)
    slot.close()
    waiter.join(2)
    assert result == [None]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        RingBuffer(0)
    with pytest.raises(ValueError):
        RingBuffer(2, "sometimes")
