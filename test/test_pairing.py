"""Approximate-time pairing policy of ssvif_ros.pairing.ApproxTimePairer."""
import random
import threading

import pytest

from ssvif_ros.pairing import ApproxTimePairer

MS = 1_000_000  # ns


def _drops(p, key):
    return p.stats()['drops'].get(key, 0)


def test_equal_stamps_pair_immediately_and_in_order():
    p = ApproxTimePairer(slop=0.0, names=('rgb', 'thermal'))
    assert p.add(0, 100 * MS, 'r0') is None
    pair = p.add(1, 100 * MS, 't0')
    assert pair.items == ('r0', 't0') and pair.stamps == (100 * MS, 100 * MS)
    pair = p.add(1, 133 * MS, 't1')
    assert pair is None
    pair = p.add(0, 133 * MS, 'r1')
    assert pair.items == ('r1', 't1')  # items always in stream order
    assert p.stats()['pairs'] == 2 and p.stats()['drops'] == {}


def test_slop_boundary_is_inclusive():
    p = ApproxTimePairer(slop=0.010)
    p.add(0, 0, 'a')
    assert p.add(1, 10 * MS + 1, 'b-too-far') is None  # 1 ns over the slop
    pair = p.add(1, -10 * MS, 'b-at-slop')  # exactly the slop: pairs
    assert pair is not None and pair.items == ('a', 'b-at-slop')
    assert pair.stamps[1] - pair.stamps[0] == -10 * MS
    p0 = ApproxTimePairer(slop=0.0)
    p0.add(0, 5, 'a')
    assert p0.add(1, 6, 'b') is None  # slop 0: only equal stamps pair
    assert p0.add(1, 5, 'c').items == ('a', 'c')


def test_slop_boundary_first_frame_too_far_then_match():
    p = ApproxTimePairer(slop=0.010)
    p.add(0, 0, 'a')
    assert p.add(1, 11 * MS, 'b') is None
    pair = p.add(0, 5 * MS, 'a2')  # pairs with b (6 ms); 'a' is superseded
    assert pair.items == ('a2', 'b')
    assert _drops(p, 'a.superseded') == 1


def test_closest_partner_wins():
    p = ApproxTimePairer(slop=0.020)
    for t in (0, 10, 20, 30):
        assert p.add(0, t * MS, f'r{t}') is None or t == 0
    pair = p.add(1, 18 * MS, 't')
    assert pair.items == ('r20', 't')
    # r0 and r10 are older than the paired frame: dropped as superseded; r30 stays queued.
    assert _drops(p, 'a.superseded') == 2
    assert p.stats()['queued'] == {'a': 1, 'b': 0}


def test_out_of_order_arrival():
    p = ApproxTimePairer(slop=0.005, queue_size=10)
    # Stream a arrives shuffled, stream b then arrives in order.
    stamps = [0, 33, 66, 100, 133]
    for t in (66, 0, 133, 33, 100):
        p.add(0, t * MS, f'r{t}')
    pairs = [p.add(1, t * MS + 2 * MS, f't{t}') for t in stamps]
    assert [q.items for q in pairs] == [(f'r{t}', f't{t}') for t in stamps]
    assert p.stats()['drops'] == {}


def test_late_frame_after_newer_pair_is_dropped():
    p = ApproxTimePairer(slop=0.005)
    p.add(0, 100 * MS, 'r100')
    assert p.add(1, 100 * MS, 't100') is not None
    assert p.add(0, 66 * MS, 'r66-late') is None
    assert p.add(1, 66 * MS, 't66-late') is None
    assert _drops(p, 'a.late') == 1 and _drops(p, 'b.late') == 1
    assert p.stats()['pairs'] == 1


@pytest.mark.parametrize('rate_a,rate_b', [(30, 9), (9, 30), (60, 30), (30, 60), (60, 9)])
def test_different_rates(rate_a, rate_b):
    """Each frame of the slower camera pairs with the faster camera's nearest frame."""
    slop = 0.5 / max(rate_a, rate_b)
    p = ApproxTimePairer(slop=slop, queue_size=10)
    events = [(round(i * 1e9 / rate_a), 0) for i in range(rate_a * 3)]
    events += [(round(i * 1e9 / rate_b) + 2 * MS, 1) for i in range(rate_b * 3)]
    events.sort()
    pairs = []
    for t, s in events:
        pair = p.add(s, t, (s, t))
        if pair:
            pairs.append(pair)
    slow = min(rate_a, rate_b)
    assert len(pairs) >= 3 * slow - 1
    for pair in pairs:
        assert abs(pair.stamps[1] - pair.stamps[0]) <= slop * 1e9
    stamps = [pr.stamps[0] for pr in pairs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    st = p.stats()
    assert max(st['queued'].values()) <= 10
    # Every received frame is paired, dropped (counted) or still queued.
    n_drop = sum(st['drops'].values())
    assert 2 * st['pairs'] + n_drop + sum(st['queued'].values()) == len(events)


def test_one_stream_stops_and_resumes():
    p = ApproxTimePairer(slop=0.005, queue_size=4)
    t = 0
    for _ in range(10):
        p.add(0, t * MS, 'r')
        assert p.add(1, t * MS, 'th') is not None
        t += 33
    for _ in range(50):  # thermal stops (e.g. NUC shutter, cable): rgb keeps coming
        p.add(0, t * MS, 'r')
        t += 33
    st = p.stats()
    assert st['queued']['a'] == 4  # bounded, never more than queue_size
    assert _drops(p, 'a.queue_overflow') == 46
    for _ in range(10):  # thermal resumes
        p.add(0, t * MS, 'r')
        assert p.add(1, t * MS, 'th') is not None
        t += 33
    st = p.stats()
    assert st['pairs'] == 20
    # All 50 rgb frames of the outage were dropped and counted: overflow while waiting, the
    # stale rest flushed by the first new pair.
    assert _drops(p, 'a.queue_overflow') + _drops(p, 'a.superseded') == 50
    assert _drops(p, 'a.superseded') >= 1
    assert st['queued'] == {'a': 0, 'b': 0}


def test_stamps_jump_backwards_bag_loop_resets():
    p = ApproxTimePairer(slop=0.005, reset_after=1.0)
    base = 1_700_000_000 * 1_000_000_000
    for i in range(90):  # a 3 s bag
        p.add(0, base + i * 33 * MS, 'r')
        p.add(1, base + i * 33 * MS, 't')
    assert p.stats()['pairs'] == 90
    p.add(0, base + 5 * MS, 'r-loop')  # the bag starts again
    assert p.stats()['resets'] == 1
    assert p.add(1, base + 5 * MS, 't-loop').items == ('r-loop', 't-loop')
    for i in range(1, 30):
        assert p.add(0, base + 5 * MS + i * 33 * MS, 'r') is None
        assert p.add(1, base + 5 * MS + i * 33 * MS, 't') is not None
    assert _drops(p, 'a.late') == 0 and _drops(p, 'b.late') == 0


def test_small_backwards_step_is_late_not_reset():
    p = ApproxTimePairer(slop=0.005, reset_after=1.0)
    p.add(0, 500 * MS, 'r')
    p.add(1, 500 * MS, 't')
    assert p.add(0, 400 * MS, 'r-old') is None
    assert p.stats()['resets'] == 0 and _drops(p, 'a.late') == 1


def test_reset_counts_queued_frames():
    p = ApproxTimePairer(slop=0.001, queue_size=5, reset_after=0.5)
    for i in range(3):
        p.add(0, (10_000 + i * 33) * MS, 'r')
    p.add(0, 0, 'r-restart')
    assert _drops(p, 'a.time_reset') == 3
    assert p.stats()['queued']['a'] == 1


def test_duplicate_stamp_replaces():
    p = ApproxTimePairer(slop=0.001)
    p.add(0, 10 * MS, 'first')
    p.add(0, 10 * MS, 'second')
    assert _drops(p, 'a.duplicate') == 1
    assert p.add(1, 10 * MS, 't').items == ('second', 't')


def test_queue_bound_and_reconfigure():
    p = ApproxTimePairer(slop=0.001, queue_size=8)
    for i in range(20):
        p.add(1, i * 100 * MS, i)
    assert p.stats()['queued']['b'] == 8
    p.configure(queue_size=3)
    assert p.stats()['queued']['b'] == 3
    assert _drops(p, 'b.queue_overflow') == 17
    # The newest frames are kept.
    assert p.add(0, 19 * 100 * MS, 'r').items == ('r', 19)
    p.configure(slop=0.2)
    assert p.add(0, 2050 * MS, 'r2') is None  # nothing queued on b any more
    assert p.add(1, 2200 * MS, 't').items == ('r2', 't')


@pytest.mark.parametrize('kwargs,words', [
    ({'slop': -0.1}, 'slop'), ({'slop': 0.01, 'queue_size': 0}, 'queue_size'),
    ({'slop': 0.01, 'reset_after': 0.0}, 'reset_after'),
    ({'slop': float('nan')}, 'slop'),
])
def test_invalid_configuration(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ApproxTimePairer(**kwargs)


def test_bad_stream_index():
    with pytest.raises(ValueError, match='stream'):
        ApproxTimePairer(0.01).add(2, 0, None)


def test_thread_safety_under_concurrent_producers():
    p = ApproxTimePairer(slop=0.004, queue_size=5)
    n = 3000
    out = [[], []]
    rng = random.Random(3)
    jit = [rng.randint(-2, 2) * MS for _ in range(n)]

    def produce(stream):
        for i in range(n):
            t = i * 33 * MS + (jit[i] if stream else 0)
            pair = p.add(stream, t, (stream, i))
            if pair:
                out[stream].append(pair)

    threads = [threading.Thread(target=produce, args=(s,)) for s in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    pairs = out[0] + out[1]
    st = p.stats()
    assert st['pairs'] == len(pairs)
    assert 2 * st['pairs'] + sum(st['drops'].values()) + sum(st['queued'].values()) == 2 * n
    for pair in pairs:
        assert pair.items[0][1] == pair.items[1][1]  # only true partners (stamps 33 ms apart)
    assert max(st['queued'].values()) <= 5


def test_record_drops_names_every_dropped_frame():
    """take_dropped lists each dropped stamp once, and agrees with the counters."""
    ms = 1_000_000
    rng = random.Random(3)
    p = ApproxTimePairer(slop=0.004, queue_size=3, reset_after=0.5, names=('rgb', 'thermal'),
                         record_drops=True)
    paired, dropped = set(), []
    events = []
    for i in range(200):
        t = i * 33 * ms
        events.append((0, t))
        if rng.random() > 0.2:  # thermal frames go missing, jitter up to 6 ms
            events.append((1, t + rng.randint(-6, 6) * ms))
    events.append((0, 10 * ms))  # a jump back: resets pairing
    for stream, t in events:
        pair = p.add(stream, t, None)
        if pair is not None:
            paired.update({(0, pair.stamps[0]), (1, pair.stamps[1])})
        dropped += p.take_dropped()
    stats = p.stats()
    by_reason = {}
    for s, _, reason in dropped:
        key = f'{("rgb", "thermal")[s]}.{reason}'
        by_reason[key] = by_reason.get(key, 0) + 1
    assert by_reason == stats['drops']
    assert 'thermal.superseded' in by_reason or 'rgb.superseded' in by_reason
    assert not {(s, t) for s, t, _ in dropped} & paired
    assert p.take_dropped() == []
    assert ApproxTimePairer(0.01).take_dropped() == []
