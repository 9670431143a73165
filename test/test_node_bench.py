"""bench/node_latency.py runs end to end: publisher, node (or the relay floor), recorder.

Only that it measures is checked here (messages arrive, every field is filled); the numbers
themselves belong to the benchmark's report, never to a test.
"""
import json
import math
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]


def test_node_latency_bench_measures_identity_and_the_relay_floor(tmp_path):
    out = tmp_path / 'latency.json'
    res = subprocess.run([sys.executable, str(REPO / 'bench' / 'node_latency.py'),
                          '--backend', 'identity', '--backend', 'relay', '--synthetic',
                          '--size', '320x240', '--duration', '3', '--warmup', '1',
                          '--json', str(out)],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = {r['backend']: r for r in json.loads(out.read_text())['results']}
    assert set(results) == {'identity', 'relay'}
    for r in results.values():
        assert 'error' not in r, r.get('error')
        lat = r['latency_ms']
        assert lat['count'] > 10 and 0.0 < lat['median'] <= lat['p99']
        assert r['rss_mib']['samples'] >= 1
    ident = results['identity']
    # The node reports its own stages; the relay has no diagnostics.
    assert ident['processing_ms_p50'] >= ident['decode_ms_p50'] > 0.0
    assert math.isnan(results['relay']['processing_ms_p50'])
    assert 'transport floor (relay end-to-end median, same run)' in res.stdout
